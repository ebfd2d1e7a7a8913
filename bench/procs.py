"""Running one timed command: wall time, peak RSS, output, syscall counts."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RECONCILER = [sys.executable, "-m", "reconciler.cli"]
RSYNC = ["rsync", "-rlptDSH", "--delete"]
TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
#: Filesystem metadata syscalls counted from ``strace -f -c``.
META_SYSCALLS = frozenset(
    [
        "stat",
        "lstat",
        "fstat",
        "newfstatat",
        "fstatat64",
        "statx",
        "statfs",
        "fstatfs",
        "open",
        "openat",
        "openat2",
        "creat",
        "getdents",
        "getdents64",
        "readlink",
        "readlinkat",
        "access",
        "faccessat",
        "faccessat2",
        "utime",
        "utimes",
        "utimensat",
        "futimesat",
        "chmod",
        "fchmod",
        "fchmodat",
        "chown",
        "fchown",
        "lchown",
        "fchownat",
        "link",
        "linkat",
        "symlink",
        "symlinkat",
        "rename",
        "renameat",
        "renameat2",
        "unlink",
        "unlinkat",
        "mkdir",
        "mkdirat",
        "rmdir",
        "truncate",
        "ftruncate",
        "getxattr",
        "lgetxattr",
        "fgetxattr",
        "setxattr",
        "lsetxattr",
        "fsetxattr",
        "listxattr",
        "llistxattr",
        "flistxattr",
        "chdir",
        "fchdir",
    ]
)


# -- running commands ----------------------------------------------------------------------


@dataclass
class Run:
    cmd: list[str]
    seconds: float
    rss_kb: int
    rc: int
    out: str
    err: str
    calls: int | None = None
    breakdown: dict[str, int] = field(default_factory=dict)
    #: CPU seconds the bench process spent meanwhile: the upstream server's threads.
    server_cpu: float = 0.0


class CommandFailed(RuntimeError):
    pass


def run(
    cmd: list[str],
    *,
    check: bool = True,
    strace: Path | None = None,
    profile: Path | None = None,
    env: dict[str, str] | None = None,
) -> Run:
    """Run ``cmd`` as a subprocess; wall time (perf_counter), peak RSS (wait4), output."""
    full = list(cmd)
    if profile is not None and full[: len(RECONCILER)] == RECONCILER:
        if profile.suffix == ".pyspy":  # sampled, every thread (the downloads run in threads)
            full = [
                "py-spy",
                "record",
                "--format",
                "raw",
                "--rate",
                "250",
                "-o",
                str(profile),
                "--",
                *full,
            ]
        else:  # cProfile sees the main thread only
            full = [sys.executable, "-m", "cProfile", "-o", str(profile), *full[1:]]
    if strace is not None:
        full = ["strace", "-f", "-c", "-o", str(strace), "--", *full]
    with (
        tempfile.TemporaryFile() as fo,
        tempfile.TemporaryFile() as fe,
        tempfile.NamedTemporaryFile(suffix=".rss") as frss,
    ):
        # Peak RSS: /usr/bin/time -f %M. Not wait4 on our own child: a child forked
        # from this (large) process inherits its RSS high-water mark through exec.
        timed = [TIME, "-f", "%M", "-o", frss.name, *full] if TIME else full
        os.sync()  # what earlier steps wrote is flushed now, not during this step (both sides)
        started = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_SELF)
        proc = subprocess.Popen(
            timed, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, env=env, cwd=ROOT
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        proc.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read().decode(errors="replace"), fe.read().decode(errors="replace")
        rss = usage.ru_maxrss
        if TIME:
            text = Path(frss.name).read_text().split()
            rss = int(text[-1]) if text and text[-1].isdigit() else -1
    server_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result = Run(full, seconds, rss, proc.returncode, out, err, server_cpu=server_cpu)
    if strace is not None:
        result.breakdown = parse_strace(strace.read_text())
        result.calls = sum(v for k, v in result.breakdown.items() if k in META_SYSCALLS)
    if check and result.rc != 0:
        raise CommandFailed(
            f"{' '.join(full)} exited {result.rc}\n--- stdout\n{out[-3000:]}\n--- stderr\n"
            f"{err[-3000:]}"
        )
    return result


def parse_strace(text: str) -> dict[str, int]:
    """``syscall -> calls`` from the summary table of ``strace -c``."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 5 or parts[-1] == "total" or not parts[0].replace(".", "").isdigit():
            continue
        name = parts[-1]
        nums = parts[:-1]
        # % time, seconds, usecs/call, calls[, errors]
        try:
            calls = int(nums[3])
        except (IndexError, ValueError):
            continue
        counts[name] = counts.get(name, 0) + calls
    return counts


def plus(first: Run, then: Run) -> Run:
    """Two commands run one after the other, as one baseline: times add, RSS is the peak."""
    return Run(
        [*first.cmd, "&&", *then.cmd],
        first.seconds + then.seconds,
        max(first.rss_kb, then.rss_kb),
        first.rc or then.rc,
        "",
        first.err or then.err,
        server_cpu=first.server_cpu + then.server_cpu,
    )


def rsync(src: Path, dst: Path, strace: Path | None = None) -> Run:
    """``rsync -rlptDSH --delete src/ dst/``, the scripts' publish."""
    dst.mkdir(parents=True, exist_ok=True)
    return run([*RSYNC, f"{src}/", f"{dst}/"], strace=strace)
