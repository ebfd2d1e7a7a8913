#!/usr/bin/env python3
"""Benchmarks of the reconciler against the tools it replaces (issue 6).

    python bench/run.py --n 2000 --n 20000 --runs 3 [--json out.json] [--profile DIR]

For each N, on the same machine and the same generated data (bench/generate.py:
filler files, NOT real RPMs, with consistent createrepo_c metadata), and
``--runs`` times each (medians are reported), every step is a subprocess
timed with ``time.perf_counter`` (peak RSS from ``wait4``):

* cold compose (``reconciler compose``) vs ``dnf reposync`` per repo and arch
  against the same 127.0.0.1 HTTP server, and vs ``cp -a`` of the upstream;
* compose after 1% of the packages got new versions vs reposync into a fresh
  directory and vs reposync ``--delete`` into the previous tree, plus the bytes
  the reconciler downloaded vs the changed packages + metadata;
* first publish compose -> staging, staging -> production (``reconciler apply``)
  vs ``rsync -rlptDSH --delete``, same filesystem and (tmpfs) across filesystems;
* publish after 1% and a pass where nothing changed vs the same rsync, in time
  and in filesystem metadata syscalls (``strace -f -c``, an extra run);
* ``reconciler filelist --root`` over the production tree (output parsed);
* peak RSS of every reconciler step.

Caches are warm (everything was just written); the machine is described in the
output. Temporary trees are removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from reconciler.filelists import parse_timelist  # noqa: E402
from reconciler.testing import UpstreamServer  # noqa: E402

import generate as gen  # noqa: E402

SIG, REL = "bench", "9"
CATEGORY = "mirror/pub/sig"
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


# -- the machine ---------------------------------------------------------------------


def tool_status() -> dict[str, str | None]:
    """Each baseline tool: None when usable, else why not."""
    status: dict[str, str | None] = {}
    for tool in ("rsync", "strace", "cp", "openssl"):
        status[tool] = None if shutil.which(tool) else f"{tool} not found on PATH"
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


def machine(workdir: Path) -> dict[str, Any]:
    mem = 0
    with Path("/proc/meminfo").open() as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    fstype, _, source = (
        subprocess.run(
            ["findmnt", "-n", "-o", "FSTYPE,SOURCE", "--target", str(workdir)],
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


# -- one world (a host, a desired state, the upstream) ---------------------------------------


def write_config(
    root: Path, base_url: str, *, compose: Path, staging: Path, production: Path
) -> Path:
    conf = {
        "roots": {"compose": str(compose), "staging": str(staging), "production": str(production)},
        "state_dir": str(root / "state"),
        "upstream_base_url": base_url,
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def write_desired_state(
    path: Path,
    repos: dict[str, list[str]],
    keep_versions: int,
    staging: str | None,
    production: str | None,
) -> None:
    (path / "sigs").mkdir(parents=True, exist_ok=True)
    (path / "keys").mkdir(exist_ok=True)
    arches = sorted({a for v in repos.values() for a in v})
    defaults = {
        "upstream": {
            "base_url": "https://build.invalid/v1/projects",
            "url_template": "{base_url}/{project_id}/repo/{repo}/{arch}",
        },
        "publish": {"category": CATEGORY, "delete_grace": "24h"},
        "compose": {"keep_composes": 5},
        "promotion": {"require_staged": True, "min_soak": "0h"},
        "releases": {REL: {"arches": arches}},
    }
    rel = {
        "project_id": gen.PROJECT_ID,
        "gpg_keys": [],
        "repos": {r: {"arches": a} for r, a in repos.items()},
        "compose": {
            "hashed": True,
            "keep_versions": keep_versions,
            "debug": True,
            "source": True,
            "trigger": "upstream",
            "check_signatures": False,
        },
        "staging": staging,
        "production": production,
    }
    (path / "defaults.yaml").write_text(yaml.safe_dump(defaults, sort_keys=False))
    doc = {"sig": SIG, "releases": {REL: rel}}
    (path / "sigs" / f"{SIG}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


@dataclass
class Env:
    """What one N's runs share."""

    n: int
    scale: float
    base: Path
    pristine: Path  # generated data (upstream/ + manifest.json), never modified
    repos: dict[str, list[str]]
    keep_versions: int
    tools: dict[str, str | None]
    tmpfs: Path | None
    tmpfs_note: str
    fraction: float
    seed: int
    profiler: str = "cprofile"


class World:
    """One run: a copy (hardlinks) of the upstream, a server, a host, a desired state."""

    def __init__(self, env: Env, name: str) -> None:
        self.env = env
        self.dir = env.base / name
        self.data = self.dir / "data"
        self.dir.mkdir(parents=True)
        subprocess.run(["cp", "-al", str(env.pristine), str(self.data)], check=True)
        self.server = UpstreamServer(self.data / "upstream").start()
        self.ds = self.dir / "desired-state"
        self.host = self.dir / "host"
        self.compose_root = self.host / "compose"
        self.staging = self.host / "staging"
        self.production = self.host / "production"
        self.config = write_config(
            self.host,
            self.server.base_url,
            compose=self.compose_root,
            staging=self.staging,
            production=self.production,
        )
        self.rsync = self.dir / "rsync"
        self.rs_staging = self.rsync / "staging" / CATEGORY / REL / SIG
        self.rs_production = self.rsync / "production" / CATEGORY / REL / SIG
        self.pin(staging=None, production=None)

    def close(self) -> None:
        self.server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # desired state and commands

    def pin(self, staging: str | None, production: str | None) -> None:
        write_desired_state(self.ds, self.env.repos, self.env.keep_versions, staging, production)

    def reconciler(self, *args: str, config: Path | None = None, **kw: Any) -> Run:
        cmd = [
            *RECONCILER,
            *args,
            "--config",
            str(config or self.config),
            "--desired-state",
            str(self.ds),
        ]
        # Each world starts with an empty record cache (README: "Start-up in proportion
        # to the change"): a desired state written by a step is validated by that step,
        # as on a host that never saw it; what an earlier step validated is reused.
        env = dict(os.environ, RECONCILER_CACHE_DIR=str(self.dir / "record-cache"))
        return run(cmd, env=env, **kw)

    def latest(self) -> str:
        return (self.compose_root / REL / f"latest-SIG-{SIG}-{REL}").readlink().name

    def sig_dir(self, cid: str) -> Path:
        return self.compose_root / REL / cid / "compose" / REL / SIG

    # bytes served

    def served_bytes(self) -> tuple[int, int]:
        """(bytes, GET requests) of what the server answered since the last reset."""
        total = gets = 0
        for path, method in zip(self.server.requests, self.server.methods, strict=True):
            if method != "GET":
                continue
            gets += 1
            f = self.server.root / path.lstrip("/")
            if f.is_file():
                total += f.stat().st_size
        return total, gets

    # baselines

    def reposync(self, dest: Path, *, delete: bool = False) -> tuple[Run, int]:
        """``dnf reposync`` of every repo and arch (sequentially); (total, bytes served)."""
        self.server.reset_counts()
        started = time.perf_counter()
        rss = 0
        server_cpu = 0.0
        failed: list[str] = []
        for repo, arches in self.env.repos.items():
            for variant in [a for arch in arches for a in (arch, f"{arch}-debug")] + ["src"]:
                url = f"{self.server.base_url}/{gen.PROJECT_ID}/repo/{repo}/{variant}"
                repoid = f"{repo}-{variant}"
                cache = Path(tempfile.mkdtemp(prefix="dnfcache-", dir=self.dir))
                cmd = [
                    "dnf",
                    "reposync",
                    "--download-metadata",
                    "--norepopath",
                    "--remote-time",
                    f"--repofrompath={repoid},{url}",
                    f"--repoid={repoid}",
                    "-p",
                    str(dest / repo / variant),
                    "--setopt=reposdir=/dev/null",
                    f"--setopt=cachedir={cache}",
                    f"--releasever={REL}",
                ]
                if delete:
                    cmd.append("--delete")
                r = run(cmd, check=False)
                rss = max(rss, r.rss_kb)
                server_cpu += r.server_cpu
                shutil.rmtree(cache, ignore_errors=True)
                if r.rc != 0:
                    lines = r.err.replace("\r", "\n").splitlines()
                    failed.append(
                        f"{repoid} exit {r.rc}: "
                        + " | ".join(ln for ln in lines if "FAILED" in ln or "Error" in ln)[-600:]
                    )
        seconds = time.perf_counter() - started
        nbytes, _ = self.served_bytes()
        return Run(
            ["dnf", "reposync", "..."],
            seconds,
            rss,
            1 if failed else 0,
            "",
            "; ".join(failed),
            server_cpu=server_cpu,
        ), nbytes


def _plus(first: Run, then: Run) -> Run:
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


def _rsync(src: Path, dst: Path, strace: Path | None = None) -> Run:
    dst.mkdir(parents=True, exist_ok=True)
    return run([*RSYNC, f"{src}/", f"{dst}/"], strace=strace)


# -- one run -----------------------------------------------------------------------------------


def one_run(env: Env, index: int, mode: str, profile_dir: Path | None = None) -> dict[str, Any]:
    """One full sequence. ``mode``: ``time`` (timings, baselines), ``strace`` (syscall
    counts of the publish steps, both sides), ``profile`` (reconciler steps under cProfile)."""
    w = World(env, f"run-{mode}-{index}")
    res: dict[str, Any] = {}
    timing = mode == "time"
    tracing = mode == "strace"
    tdir = w.dir / "strace"
    tdir.mkdir(parents=True, exist_ok=True)
    has_rsync = env.tools["rsync"] is None

    def note(key: str, r: Run, **extra: Any) -> None:
        if r.rc != 0:  # a failed baseline is reported, never used as a time
            res[key] = {"failed": r.err or f"exit {r.rc}", **extra}
            print(f"    {key:34s} FAILED: {res[key]['failed']}", flush=True)
            return
        if r.server_cpu >= 0.05:  # steps that download: what serving them cost
            extra = {"server_cpu": round(r.server_cpu, 2), **extra}
        res[key] = {"s": r.seconds, "rss_kb": r.rss_kb, **extra}
        if r.calls is not None:
            res[key]["calls"] = r.calls
            res[key]["breakdown"] = r.breakdown
        print(
            f"    {key:34s} {r.seconds:8.2f}s  rss {r.rss_kb / 1024:7.1f} MB"
            + (f"  meta-calls {r.calls}" if r.calls is not None else "")
            + "".join(f"  {k}={v}" for k, v in extra.items()),
            flush=True,
        )

    def traced(name: str) -> Path | None:
        return tdir / f"{name}.txt" if tracing else None

    def prof(name: str) -> Path | None:
        if profile_dir is None:
            return None
        return profile_dir / f"n{env.n}-{name}.{'pyspy' if env.profiler == 'py-spy' else 'prof'}"

    def publish(step: str, baseline: str, src: Path, dst: Path) -> None:
        """``reconciler apply`` of the pinned desired state, then rsync of the same copy."""
        r = w.reconciler("apply", "--yes", strace=traced(f"r.{step}"), profile=prof(step))
        note(f"r.{step}", r)
        if has_rsync and mode != "profile":
            note(baseline, _rsync(src, dst, traced(baseline)))

    try:
        # 1. cold compose, and the baselines of the same download. Each writes the whole
        # tree anew, and how fast this machine writes fresh pages depends on what ran
        # just before: the order rotates from run to run, so that each goes first once
        # in three runs.
        def cold_compose() -> None:
            w.server.reset_counts()
            r = w.reconciler("compose", SIG, REL, profile=prof("cold_compose"))
            nbytes, gets = w.served_bytes()
            note("r.cold_compose", r, bytes=nbytes, gets=gets)

        def reposync_cold() -> None:
            rr, b = w.reposync(w.dir / "reposync-cold")
            note("b.reposync_cold", rr, bytes=b)

        copy = w.dir / "cp-a"

        def cp_a() -> None:
            cp = run(["cp", "-a", str(w.data / "upstream"), str(copy)])
            note("b.cp_a", cp)
            if env.tools["openssl"] is None and cp.rc == 0:
                # A local copy that also reads every package through sha256, as the
                # compose does (information only: one openssl process, no target).
                digest = run(
                    ["find", str(copy), "-name", "*.rpm", "-type", "f",
                     "-exec", "openssl", "dgst", "-sha256", "{}", "+"]
                )  # fmt: skip
                note("b.cp_a_sha256", _plus(cp, digest))

        cold = [cold_compose]
        if timing:
            if env.tools["reposync"] is None:
                cold.append(reposync_cold)
            if env.tools["cp"] is None:
                cold.append(cp_a)
            turn = index % len(cold)
            cold = cold[turn:] + cold[:turn]
        for step in cold:
            step()
        shutil.rmtree(copy, ignore_errors=True)
        cid1 = w.latest()

        # 2. first publish compose -> staging (same filesystem)
        w.pin(staging="latest", production=None)
        publish("publish1_staging", "b.rsync_publish1_staging", w.sig_dir(cid1), w.rs_staging)

        # 3. first publish across filesystems (compose on disk, staging on tmpfs)
        if env.tmpfs is not None and timing:
            xroot = env.tmpfs / f"x{index}"
            cfg = write_config(
                w.dir / "hostx",
                w.server.base_url,
                compose=w.compose_root,
                staging=xroot / "staging",
                production=xroot / "production",
            )
            # a second host sharing this host's composes: its state starts empty on
            # purpose (else the reconciler refuses: composes show it ran here before)
            from reconciler.state import StateDB

            StateDB.open(w.dir / "hostx" / "state").close()
            note("r.publish1_xfs", w.reconciler("apply", "--yes", config=cfg))
            if has_rsync:
                note(
                    "b.rsync_publish1_xfs",
                    _rsync(w.sig_dir(cid1), xroot / "rsync" / CATEGORY / REL / SIG),
                )
            shutil.rmtree(xroot, ignore_errors=True)

        # 4. first publish staging -> production
        w.pin(staging="latest", production=cid1)
        publish("publish1_production", "b.rsync_publish1_production", w.rs_staging, w.rs_production)

        # 5. the 1% change upstream, then a new compose
        change = gen.update(w.data, env.fraction, env.seed + 1)
        expected = change["changed_bytes"] + change["metadata_bytes"]
        w.server.reset_counts()
        r = w.reconciler("compose", SIG, REL, profile=prof("compose_1pct"))
        nbytes, gets = w.served_bytes()
        note(
            "r.compose_1pct",
            r,
            bytes=nbytes,
            gets=gets,
            expected_bytes=expected,
            changed_files=change["changed_files"],
            changed_entries=change["changed_entries"],
        )
        cid2 = w.latest()
        if timing and env.tools["reposync"] is None:
            rr, b = w.reposync(w.dir / "reposync-fresh")
            note("b.reposync_fresh_1pct", rr, bytes=b)
            shutil.rmtree(w.dir / "reposync-fresh")
            rr, b = w.reposync(w.dir / "reposync-cold", delete=True)
            note("b.reposync_delete_1pct", rr, bytes=b)
        shutil.rmtree(w.dir / "reposync-cold", ignore_errors=True)

        # 6. publish after 1%: stage, then promote
        w.pin(staging="latest", production=cid1)
        publish("publish_1pct_staging", "b.rsync_1pct_staging", w.sig_dir(cid2), w.rs_staging)
        w.pin(staging="latest", production=cid2)
        publish("publish_1pct_production", "b.rsync_1pct_production", w.rs_staging, w.rs_production)

        # 7. a pass where nothing changed
        r = w.reconciler(
            "apply", "--yes", strace=traced("r.nothing_changed"), profile=prof("nothing_changed")
        )
        note("r.nothing_changed", r)
        if has_rsync and mode != "profile":
            a = _rsync(w.sig_dir(cid2), w.rs_staging, traced("b.rsync_nothing_staging"))
            b = _rsync(w.rs_staging, w.rs_production, traced("b.rsync_nothing_production"))
            both = Run(["rsync x2"], a.seconds + b.seconds, max(a.rss_kb, b.rss_kb), 0, "", "")
            if tracing:
                both.breakdown = {
                    k: a.breakdown.get(k, 0) + b.breakdown.get(k, 0)
                    for k in {*a.breakdown, *b.breakdown}
                }
                both.calls = (a.calls or 0) + (b.calls or 0)
            note("b.rsync_nothing_changed", both)

        # 8. file lists of the production tree
        top = w.production / CATEGORY
        r = w.reconciler("filelist", "--root", str(top), profile=prof("filelist"))
        entries, sums = parse_timelist((top / "fullfiletimelist-sig").read_text())
        note("r.filelist", r, entries=len(entries), repomd_checksums=len(sums))
        if timing:
            r = run(
                [
                    "sh",
                    "-c",
                    f"cd {top} && find . -printf '%T@\\t%y\\t%s\\t%P\\n' "
                    f"> {w.dir / 'find-list.txt'}",
                ]
            )
            note("b.find_filelist", r)
    finally:
        w.close()
    return res


# -- a whole N ----------------------------------------------------------------------------------


def auto_scale(n: int) -> float:
    return max(1.0, n / 4000)


def mount_tmpfs(base: Path, nbytes: int) -> tuple[Path | None, str]:
    """A tmpfs for the across-filesystems publish, or None and why not."""
    if os.geteuid() != 0:
        return None, "across-FS publish skipped: not root, cannot mount a tmpfs"
    avail = 0
    with Path("/proc/meminfo").open() as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    size = int(nbytes * 2.3) + (256 << 20)
    if size > avail * 0.7:
        return None, (
            f"across-FS publish skipped: a {size >> 20} MB tmpfs does not fit in "
            f"{avail >> 20} MB of available memory (raise --scale)"
        )
    mnt = base / "tmpfs"
    mnt.mkdir()
    p = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "bench-tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if p.returncode != 0:
        return None, f"across-FS publish skipped: mount -t tmpfs failed: {p.stderr.strip()}"
    return mnt, f"across-FS: staging on a {size >> 20} MB tmpfs at {mnt}"


def bench_n(args: argparse.Namespace, n: int, tools: dict[str, str | None]) -> dict[str, Any]:
    scale = args.scale if args.scale else auto_scale(n)
    base = Path(tempfile.mkdtemp(prefix=f"reconciler-bench-{n}-", dir=args.workdir))
    print(
        f"\n=== N={n} (package entries per repo), generator scale {scale:g} "
        f"(package sizes divided by {scale:g}; filler files, not real RPMs), "
        f"work dir {base}",
        flush=True,
    )
    tmpfs: Path | None = None
    try:
        started = time.perf_counter()
        pristine = base / "pristine"
        summary = gen.generate(
            pristine, n, args.seed, scale, {r: tuple(args.arches) for r in args.repo}
        )
        print(
            f"  generated in {time.perf_counter() - started:.1f}s: {summary['entries']} "
            f"package entries, {summary['files']} distinct files, "
            f"{summary['bytes'] / 1e6:.1f} MB, {summary['variants']} repos (variants), "
            f"{summary['metadata_bytes'] / 1e3:.0f} KB metadata",
            flush=True,
        )
        tmpfs, tmpfs_note = (None, "across-FS publish skipped (--no-tmpfs)")
        if not args.no_tmpfs:
            tmpfs, tmpfs_note = mount_tmpfs(base, summary["bytes"])
        print(f"  {tmpfs_note}")
        env = Env(
            n,
            scale,
            base,
            pristine,
            {r: list(args.arches) for r in args.repo},
            args.keep_versions,
            tools,
            tmpfs,
            tmpfs_note,
            args.fraction,
            args.seed,
            args.profiler,
        )
        runs = []
        for i in range(args.runs):
            print(f"  run {i + 1}/{args.runs}", flush=True)
            runs.append(one_run(env, i, "time"))
        traced: dict[str, Any] = {}
        if tools["strace"] is None and not args.no_strace:
            print("  strace run (syscall counts of publish steps; times not used)", flush=True)
            traced = one_run(env, 0, "strace")
            traced["python_imports"] = import_calls()
        elif tools["strace"] is not None:
            print(f"  syscall counts skipped: {tools['strace']}")
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            print(f"  profile run ({args.profiler} of every reconciler step into {args.profile})")
            one_run(env, 0, "profile", args.profile)
            for f in sorted(args.profile.glob(f"n{n}-*")):
                print(summarize_profile(f))
        return {
            "n": n,
            "scale": scale,
            "summary": summary,
            "runs": runs,
            "strace": traced,
            "tmpfs": tmpfs_note,
            "keep_versions": args.keep_versions,
        }
    finally:
        if tmpfs is not None:
            subprocess.run(["umount", str(tmpfs)], check=False)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


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


# -- the report ---------------------------------------------------------------------------------


def med(runs: list[dict[str, Any]], key: str, field_: str = "s") -> float | None:
    vals = [r[key][field_] for r in runs if key in r and field_ in r[key]]
    return statistics.median(vals) if vals else None


@dataclass
class Row:
    scenario: str
    ours: str
    base: str
    ratio: float | None
    target: str
    verdict: str
    per_run: list[float] = field(default_factory=list)  # each run's own ratio


def rows_for(res: dict[str, Any], tools: dict[str, str | None]) -> list[Row]:
    runs, st, n = res["runs"], res["strace"], res["n"]
    rows: list[Row] = []

    def pair(
        name: str,
        rk: str,
        bk: str,
        limit: float | None,
        missing: str | None = None,
        only_at: int | None = None,
        unit: str = "s",
    ) -> None:
        a, b = med(runs, rk), med(runs, bk)
        target = f"<= {limit:g}" if limit is not None else "-"
        if only_at is not None and limit is not None:
            target += f" (at N={only_at})"
        if a is None:
            rows.append(Row(name, "n/a", "n/a", None, target, "not measured"))
            return
        if b is None:
            fails = [r[bk]["failed"] for r in runs if "failed" in r.get(bk, {})]
            why = missing or (f"FAILED: {fails[0][:60]}" if fails else "not measured")
            rows.append(Row(name, _fmt(a), why, None, target, "no baseline"))
            return
        ratio = a / b if b else None
        if limit is None or ratio is None:
            verdict = "-"
        elif only_at is not None and n != only_at:
            verdict = ("pass" if ratio <= limit else "miss") + " (info)"
        else:
            verdict = "pass" if ratio <= limit else "MISS"
        per_run = [
            r[rk]["s"] / r[bk]["s"] for r in runs if "s" in r.get(rk, {}) and r.get(bk, {}).get("s")
        ]
        rows.append(Row(name, _fmt(a), _fmt(b), ratio, target, verdict, per_run))

    rs, rsync = tools["reposync"], tools["rsync"]
    pair("cold compose vs reposync", "r.cold_compose", "b.reposync_cold", 0.6, rs)
    pair("cold compose vs cp -a", "r.cold_compose", "b.cp_a", 1.5, tools["cp"])
    if any("b.cp_a_sha256" in r for r in runs):
        pair("cold compose vs cp -a + sha256 (info)", "r.cold_compose", "b.cp_a_sha256", None)
    pair("compose after 1% vs reposync fresh", "r.compose_1pct", "b.reposync_fresh_1pct", 0.15, rs)
    pair(
        "compose after 1% vs reposync --delete", "r.compose_1pct", "b.reposync_delete_1pct", 1.0, rs
    )
    got = med(runs, "r.compose_1pct", "bytes")
    want = med(runs, "r.compose_1pct", "expected_bytes")
    rsd = med(runs, "b.reposync_delete_1pct", "bytes")
    if got is not None and want:
        rows.append(
            Row(
                "bytes downloaded after 1% (MB)",
                f"{got / 1e6:.2f}",
                f"{want / 1e6:.2f} changed+md"
                + (f"; reposync --delete {rsd / 1e6:.2f}" if rsd is not None else ""),
                got / want,
                "= 1.0",
                "pass" if got <= want else "MISS",
            )
        )
    pair(
        "first publish compose->staging (same FS)",
        "r.publish1_staging",
        "b.rsync_publish1_staging",
        0.5,
        rsync,
    )
    pair(
        "first publish staging->production (same FS)",
        "r.publish1_production",
        "b.rsync_publish1_production",
        0.5,
        rsync,
    )
    if med(runs, "r.publish1_xfs") is not None:
        pair(
            "first publish compose->staging (across FS)",
            "r.publish1_xfs",
            "b.rsync_publish1_xfs",
            1.2,
            rsync,
        )
    else:
        rows.append(Row("first publish (across FS)", "n/a", "n/a", None, "<= 1.2", res["tmpfs"]))
    pair(
        "publish after 1% ->staging",
        "r.publish_1pct_staging",
        "b.rsync_1pct_staging",
        1.0,
        rsync,
        only_at=20000,
    )
    pair(
        "publish after 1% ->production",
        "r.publish_1pct_production",
        "b.rsync_1pct_production",
        1.0,
        rsync,
        only_at=20000,
    )
    pair(
        "nothing changed (apply vs rsync x2)",
        "r.nothing_changed",
        "b.rsync_nothing_changed",
        1.0,
        rsync,
        only_at=20000,
    )
    for label, rk, bk in (
        ("first publish ->staging", "r.publish1_staging", "b.rsync_publish1_staging"),
        ("first publish ->production", "r.publish1_production", "b.rsync_publish1_production"),
        ("publish after 1% ->staging", "r.publish_1pct_staging", "b.rsync_1pct_staging"),
        ("publish after 1% ->production", "r.publish_1pct_production", "b.rsync_1pct_production"),
        ("nothing changed", "r.nothing_changed", "b.rsync_nothing_changed"),
    ):
        a = st.get(rk, {}).get("calls")
        b = st.get(bk, {}).get("calls")
        limit = None if label.startswith("first") else 0.05
        target = "-" if limit is None else f"<= {limit:g} (at N=20000)"
        if a is None or b is None:
            rows.append(
                Row(f"{label}: metadata syscalls", "n/a", "n/a", None, target, "not measured")
            )
            continue
        ratio = a / b if b else None
        if limit is None or ratio is None:
            verdict = "-"
        else:
            verdict = "pass" if ratio <= limit else "MISS"
            if n != 20000:
                verdict = verdict.lower() + " (info)"
        rows.append(Row(f"{label}: metadata syscalls", str(a), str(b), ratio, target, verdict))
    pair("filelist --root production (vs find walk)", "r.filelist", "b.find_filelist", None)
    for key, label in (("r.cold_compose", "cold compose"), ("r.compose_1pct", "compose after 1%")):
        rss = med(runs, key, "rss_kb")
        if rss is not None:
            mb = rss / 1024
            verdict = "pass" if mb < 300 else "MISS"
            if n != 20000:
                verdict = verdict.lower() + " (info)"
            rows.append(
                Row(f"{label} peak RSS (MB)", f"{mb:.0f}", "-", None, "< 300 (at N=20000)", verdict)
            )
    return rows


def _fmt(seconds: float) -> str:
    return f"{seconds:.3f}" if seconds < 1 else f"{seconds:.2f}"


def print_table(rows: list[Row]) -> str:
    header = (
        "scenario",
        "reconciler (median)",
        "baseline (median)",
        "ratio",
        "target",
        "pass/miss",
    )
    body = [
        (
            r.scenario,
            r.ours,
            r.base,
            f"{r.ratio:.3f}" if r.ratio is not None else "-",
            r.target,
            r.verdict,
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) + " |" for b in body
    ]
    return "\n".join(lines)


def per_run_table(rows: list[Row]) -> str:
    """Each run's own ratio: how much of a median's margin is noise."""
    lines = ["ratio of each run (reconciler / baseline, same run):"]
    lines += [
        f"  {r.scenario}: " + ", ".join(f"{x:.3f}" for x in r.per_run)
        for r in rows
        if len(r.per_run) > 1
    ]
    return "\n".join(lines)


def rss_table(res: dict[str, Any]) -> str:
    keys = sorted({k for r in res["runs"] for k in r if k.startswith("r.")})
    parts = []
    for k in keys:
        rss = med(res["runs"], k, "rss_kb")
        parts.append(f"{k[2:]} {rss / 1024:.0f} MB" if rss is not None else f"{k[2:]} n/a")
    return "peak RSS of each reconciler step (median): " + ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Package files are generated filler, not real RPMs (see bench/generate.py --help).",
    )
    p.add_argument("--n", type=int, action="append", help="package entries per repo (repeatable)")
    p.add_argument("--runs", type=int, default=3, help="timed runs per N (medians reported)")
    p.add_argument(
        "--scale",
        type=float,
        default=None,
        help="divide package sizes by this (default: max(1, N/4000))",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fraction", type=float, default=0.01, help="the change (default 1%%)")
    p.add_argument(
        "--repo", action="append", default=None, help="repo names (default bench-common)"
    )
    p.add_argument("--arches", default="x86_64,aarch64")
    p.add_argument(
        "--keep-versions",
        type=int,
        default=0,
        help="compose.keep_versions (default 0: all, the same set reposync fetches)",
    )
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--json", type=Path, help="save the raw numbers here")
    p.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="also run every reconciler step under a profiler, saving into DIR",
    )
    p.add_argument(
        "--profiler",
        choices=["cprofile", "py-spy"],
        default="cprofile",
        help="cProfile (main thread, deterministic) or py-spy (sampled, all threads)",
    )
    p.add_argument("--no-tmpfs", action="store_true", help="skip the across-filesystems publish")
    p.add_argument("--no-strace", action="store_true", help="skip the syscall-count run")
    p.add_argument("--keep", action="store_true", help="keep the temporary trees")
    args = p.parse_args(argv)
    args.n = args.n or [2000]
    args.repo = args.repo or list(gen.DEFAULT_REPOS)
    args.arches = [a for a in args.arches.split(",") if a]
    args.workdir.mkdir(parents=True, exist_ok=True)

    # An installed package comes with its bytecode (pip compiles it); a source tree run with
    # PYTHONDONTWRITEBYTECODE=1 would recompile every module at every start instead.
    bytecode = compileall.compile_dir(str(ROOT / "reconciler"), quiet=1, force=False)
    info = machine(args.workdir)
    tools = tool_status()
    print("reconciler benchmarks (issue 6)")
    print(f"command: {' '.join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])}")
    print(
        f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram_mb']} MB RAM, "
        f"kernel {info['kernel']}, work dir {info['workdir']} on {info['fstype']}, "
        f"Python {info['python']}, createrepo_c {info['createrepo_c']}"
    )
    print(f"tools: {info['rsync']}; dnf {info['dnf']}")
    print(f"reconciler revision: {info['revision']}")
    print(
        "bytecode: reconciler/ compiled ahead, as an install does"
        + ("" if bytecode else " (FAILED: modules compile at each start)")
    )
    for tool, why in tools.items():
        if why:
            print(f"MISSING BASELINE: {tool}: {why}")
    if TIME is None:
        print(
            "NOTE: /usr/bin/time missing (apt-get install time): peak RSS comes from wait4 "
            "and includes this process's own RSS at fork"
        )
    print(
        f"setup: {len(args.repo)} repo(s) x {len(args.arches)} arches x {{binary, -debug}} "
        f"+ src; compose.keep_versions={args.keep_versions}; caches warm; "
        f"medians of {args.runs} run(s); the 1% change replaces whole builds "
        f"(about {args.fraction:.0%} of the package entries); the cold compose, reposync "
        f"and cp -a take turns going first"
    )

    results = []
    started = time.perf_counter()
    for n in args.n:
        t0 = time.perf_counter()
        res = bench_n(args, n, tools)
        res["seconds"] = time.perf_counter() - t0
        rows = rows_for(res, tools)
        res["rows"] = [r.__dict__ for r in rows]
        results.append(res)
        print(
            f"\nN={n} ({res['summary']['entries']} entries, "
            f"{res['summary']['bytes'] / 1e6:.0f} MB, scale {res['scale']:g}), "
            f"medians of {len(res['runs'])} run(s), bench time {res['seconds']:.0f}s"
        )
        print(print_table(rows))
        print(per_run_table(rows))
        print(rss_table(res))
        if res["strace"].get("python_imports"):
            print(
                f"(metadata syscalls of just starting Python and importing the reconciler: "
                f"{res['strace']['python_imports']['calls']})"
            )

    by_n = {r["n"]: r for r in results}
    cross = None
    if 2000 in by_n and 20000 in by_n:
        a, b = (
            med(by_n[2000]["runs"], "r.nothing_changed"),
            med(by_n[20000]["runs"], "r.nothing_changed"),
        )
        if a and b:
            cross = {"n2000": a, "n20000": b, "ratio": b / a, "target": 1.5, "pass": b / a <= 1.5}
            print(
                f"\nnothing-changed pass, N=20000 vs N=2000: {b:.2f}s / {a:.2f}s = "
                f"{b / a:.2f} (target <= 1.5): {'pass' if b / a <= 1.5 else 'MISS'}"
            )
    print(f"\ntotal bench time {time.perf_counter() - started:.0f}s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "tools": tools,
                    "results": results,
                    "cross_n": cross,
                    "argv": argv or sys.argv[1:],
                },
                indent=1,
                default=str,
            )
        )
        print(f"raw numbers: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
