"""The machine and its tools, as the output describes them; profiles; start-up cost."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from procs import ROOT, run
from servers import nginx_status


def tool_status() -> dict[str, str | None]:
    """Each baseline tool: None when usable, else why not."""
    status: dict[str, str | None] = {}
    for tool in ("rsync", "strace", "cp", "openssl"):
        status[tool] = None if shutil.which(tool) else f"{tool} not found on PATH"
    status["nginx"] = nginx_status()
    if not shutil.which("dnf"):
        status["reposync"] = "dnf not found (apt-get install dnf dnf-plugins-core)"
    else:
        probe = subprocess.run(
            ["dnf", "reposync", "--help"], capture_output=True, text=True, check=False
        )
        status["reposync"] = (
            None
            if probe.returncode == 0
            else "`dnf reposync` unavailable (apt-get install dnf-plugins-core)"
        )
    return status


def fs_type(path: Path) -> str:
    """The file system under ``path`` (ext4 says whether it has a journal)."""
    fstype, _, source = (
        subprocess.run(
            ["findmnt", "-n", "-o", "FSTYPE,SOURCE", "--target", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        .stdout.strip()
        .partition(" ")
    )
    if fstype == "ext4" and Path("/proc/fs/jbd2").is_dir():
        # Without a journal, ext4 checks every free inode it considers against its
        # deletion time: creating files soon after deleting many costs far more.
        device = Path(source.strip()).name
        if not any(Path("/proc/fs/jbd2").glob(f"{device}-*")):
            fstype += " without a journal"
    return fstype or "unknown"


def machine(workdir: Path) -> dict[str, Any]:
    mem = 0
    with Path("/proc/meminfo").open() as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    fstype = fs_type(workdir)
    cpu = ""
    with Path("/proc/cpuinfo").open() as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def version(cmd: list[str]) -> str:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return "missing"
        return (p.stdout or p.stderr).strip().splitlines()[0] if p.returncode == 0 else "missing"

    import createrepo_c as cr

    rev = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty=+dirty-tree", "--abbrev=12"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "reconciler"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "revision": f"{rev or 'unknown'}"
        + (" (reconciler/ has uncommitted changes)" if dirty else ""),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_mb": mem,
        "workdir": str(workdir),
        "fstype": fstype or "unknown",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "createrepo_c": cr.VERSION,
        "rsync": version(["rsync", "--version"]),
        "dnf": version(["dnf", "--version"]),
    }


def import_calls() -> dict[str, Any]:
    """Metadata syscalls of just starting Python and importing what a pass imports (on
    input the record cache holds: neither PyYAML nor pydantic)."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "s.txt"
        code = (
            "import os; os.environ['PYDANTIC_DISABLE_PLUGINS'] = '__all__'; "
            "import reconciler.cli, reconciler.reconciling, reconciler.specfile"
        )
        r = run([sys.executable, "-c", code], strace=out)
    return {"calls": r.calls, "breakdown": r.breakdown}


def summarize_profile(path: Path, top: int = 18) -> str:
    """The top functions of a cProfile (.prof, by cumulative time) or py-spy raw file
    (.pyspy: inclusive and self share of the samples of all threads)."""
    lines = [f"--- {path.name}"]
    if path.suffix == ".prof":
        import io
        import pstats

        buf = io.StringIO()
        pstats.Stats(str(path), stream=buf).sort_stats("cumulative").print_stats(top)
        body = buf.getvalue()
        start = body.find("   ncalls")
        lines.append(body[start:].rstrip() if start >= 0 else body.rstrip())
        return "\n".join(lines)
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [
            f
            for f in stack.split(";")
            if f and not f.startswith("process ") and not f.startswith("thread ")
        ]
        frames = [re.sub(r":\d+\)$", ")", f) for f in frames]  # per function, not per line
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + n
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + n
    lines.append(f"{total} samples (all threads, idle excluded)")
    lines.append("inclusive:")
    for f, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * n / max(total, 1):5.1f}%  {f}")
    lines.append("self:")
    for f, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * n / max(total, 1):5.1f}%  {f}")
    return "\n".join(lines)
