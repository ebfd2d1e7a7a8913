#!/usr/bin/env python3
"""Network storage and what the mirrors pay (issue 16).

    python bench/network.py [--n 2000] [--runs 3] [--mirror-n 1000] [--workdir DIR]
                            [--part storage|mirrors|both] [--json out.json] [--profile DIR]

**Network storage.** The bench starts its own ``sshd`` on 127.0.0.1 (a config file,
a host key and a client key generated in the bench dir, a free port, root login with
that one key only) and mounts a directory of this machine over it with ``sshfs``,
with every kernel and sshfs cache of names and attributes turned off
(``dir_cache=no,attr_timeout=0,entry_timeout=0,negative_timeout=0``): every ``stat``
and every lookup is an SFTP round trip, as on NFS or EFS without attribute caching.
That mount is the PRODUCTION root; compose and staging stay local. Each run: a cold
compose, stage, promote (the first publish onto the mount, information); then the 1%
change (bench/generate.py update), compose, stage, and the promotion is timed against
``rsync -rlptDSH --delete`` from an rsync staging copy to a separate directory on the
same mount holding the same previous tree (target <= 0.1); then a pass with nothing
changed against rsync's no-op onto the mount (target <= 0.05). Every timed step is a
subprocess (``python -m reconciler.cli apply --yes``); medians of ``--runs`` and each
run's own ratio. An extra run counts, under ``strace -f -y``, the syscalls that touched
the mount on each side (times not used).

**What the mirrors pay.** A world of 2 repos x ({x86_64, aarch64} x {binary, -debug} +
src) = 10 yum repos, composed, staged and promoted to a local production. Production's
``<category>/`` is served by ``rsync --daemon`` on 127.0.0.1 (module "sig"), and a
mirror copies it with ``rsync -rlptDSH --delete``. Then ONE package is rebuilt in ONE
repo (x86_64 of the first repo: that package and that repo's metadata change
upstream), composed, staged and promoted, and the mirror runs the same rsync with
``--stats`` and ``--out-format='%i %n'``. Target: it transfers at most that package,
that repo's metadata and the file lists. The same is measured for today's scripts:
``dnf reposync --download-metadata --norepopath --remote-time`` of every repo into one
tree (as the toolkit's sync does), ``rsync -rlptDSH --delete`` of it to a production
copy (module "scripts"), the same one-package change, the same mirror rsync. Both are
printed side by side with the transferred files.

Package files are generated filler (bench/generate.py), not real RPMs. Needs root
(sshd, FUSE), ``openssh-server``, ``sshfs``, ``rsync``, ``dnf`` with ``dnf-plugins-core``.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from reconciler.testing import UpstreamServer  # noqa: E402

import generate as gen  # noqa: E402
from daemon import Daemon, DaemonFailed  # noqa: E402
from world import CATEGORY, REL, SIG, write_config, write_desired_state  # noqa: E402

RECONCILER = [sys.executable, "-m", "reconciler.cli"]
RSYNC = ["rsync", "-rlptDSH", "--delete"]
#: Every cache of names and attributes off: each stat and lookup is a round trip.
SSHFS_CACHE = "dir_cache=no,attr_timeout=0,entry_timeout=0,negative_timeout=0"
#: What a mirror may fetch besides the changed package and its repo's metadata.
FILELISTS = re.compile(r"(fullfilelist|fullfiletimelist[-\w]*|imagelist-\w+)")
STATS = (
    "Number of files",
    "Number of regular files transferred",
    "Number of deleted files",
    "Total file size",
    "Total transferred file size",
    "Literal data",
    "Matched data",
    "Total bytes received",
)


# -- commands ------------------------------------------------------------------------------


class CommandFailed(RuntimeError):
    pass


@dataclass
class Timed:
    seconds: float
    out: str
    err: str


def run(cmd: list[str], *, env: dict[str, str] | None = None, check: bool = True) -> Timed:
    """``cmd`` as a subprocess, timed from just before the fork to its exit."""
    os.sync()  # what earlier steps wrote is flushed now, not during this step
    started = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    seconds = time.perf_counter() - started
    if check and p.returncode != 0:
        raise CommandFailed(
            f"{' '.join(cmd)} exited {p.returncode}\n--- stdout\n{p.stdout[-3000:]}\n"
            f"--- stderr\n{p.stderr[-3000:]}"
        )
    return Timed(seconds, p.stdout, p.stderr)


def rsync(src: Path, dst: Path, *extra: str) -> Timed:
    dst.mkdir(parents=True, exist_ok=True)
    return run([*RSYNC, *extra, f"{src}/", f"{dst}/"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            raise CommandFailed(f"{what} exited {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise CommandFailed(f"{what} did not listen on 127.0.0.1:{port}") from None
            time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- sshd + sshfs ----------------------------------------------------------------------------


@dataclass
class Mount:
    backing: Path  # the directory sshd serves (local; used to clean up quickly)
    point: Path  # where sshfs mounts it
    options: str


@contextmanager
def network_mount(work: Path, cache: bool = False) -> Iterator[Mount]:
    """An ``sshd`` on 127.0.0.1 and ``sshfs`` of ``work/remote`` at ``work/mnt``; both are
    stopped and unmounted on the way out, whatever happened."""
    work.mkdir(parents=True, exist_ok=True)
    for key in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / key)], check=True
        )
    (work / "authorized_keys").write_text((work / "client_key.pub").read_text())
    port = free_port()
    cfg = work / "sshd_config"
    cfg.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {work / 'host_key'}\nPidFile none\n"
        f"AuthorizedKeysFile {work / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "AuthenticationMethods publickey\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "Subsystem sftp internal-sftp\n"
    )
    # sshd refuses to start without its privilege separation directory (Debian's
    # service creates it at boot; a container has none).
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = (work / "sshd.log").open("wb")
    sshd = subprocess.Popen(
        [shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    backing, point = work / "remote", work / "mnt"
    backing.mkdir(exist_ok=True)
    point.mkdir(exist_ok=True)
    options = (
        f"IdentityFile={work / 'client_key'},StrictHostKeyChecking=no,"
        "UserKnownHostsFile=/dev/null,LogLevel=ERROR" + ("" if cache else f",{SSHFS_CACHE}")
    )
    mounted = False
    try:
        wait_listening(port, sshd, "sshd")
        subprocess.run(
            ["sshfs", "-p", str(port), "-o", options, f"root@127.0.0.1:{backing}", str(point)],
            check=True,
            timeout=60,
        )
        mounted = True
        yield Mount(backing, point, f"sshfs -p {port} -o {options}")
    finally:
        unmount = ["fusermount", "-u", str(point)]
        if mounted and subprocess.run(unmount, check=False).returncode:
            subprocess.run(["fusermount", "-u", "-z", str(point)], check=False)  # busy: detach
        stop(sshd)
        log.close()


def probe(mount: Mount, depth: int = 11, repeat: int = 50) -> dict[str, float]:
    """Milliseconds of one ``lstat`` on the mount, by path depth (a package under a
    production root one level down is 11 components deep), and of an
    ``fstatat`` relative to an open directory: what one round trip costs here."""
    parts = [f"d{i}" for i in range(depth - 1)]
    (mount.backing.joinpath("probe", *parts)).mkdir(parents=True)
    (mount.backing.joinpath("probe", *parts, "f")).write_text("probe\n")
    out: dict[str, float] = {}
    try:
        for k in (1, depth):
            path = mount.point.joinpath("probe", *[*parts, "f"][: k - 1]) if k > 1 else None
            target = path or mount.point / "probe"
            started = time.perf_counter()
            for _ in range(repeat):
                os.lstat(target)
            out[f"lstat, {k} component(s)"] = (time.perf_counter() - started) / repeat * 1e3
        fd = os.open(mount.point.joinpath("probe", *parts), os.O_RDONLY | os.O_DIRECTORY)
        try:
            started = time.perf_counter()
            for _ in range(repeat):
                os.stat("f", dir_fd=fd, follow_symlinks=False)
            out["fstatat in an open directory"] = (time.perf_counter() - started) / repeat * 1e3
        finally:
            os.close(fd)
    finally:
        shutil.rmtree(mount.backing / "probe", ignore_errors=True)
    return out


# -- a world: upstream, host, desired state --------------------------------------------------


class World:
    """A copy (hardlinks) of the generated upstream, its server, a host, a desired state."""

    def __init__(
        self, directory: Path, pristine: Path, repos: dict[str, list[str]], production: Path
    ) -> None:
        self.dir = directory
        self.repos = repos
        self.data = directory / "data"
        directory.mkdir(parents=True)
        subprocess.run(["cp", "-al", str(pristine), str(self.data)], check=True)
        self.server = UpstreamServer(self.data / "upstream").start()
        self.ds = directory / "desired-state"
        self.host = directory / "host"
        self.compose_root = self.host / "compose"
        self.production = production
        self.config = write_config(
            self.host,
            self.server.base_url,
            compose=self.compose_root,
            staging=self.host / "staging",
            production=production,
        )
        self.pin(None, None)

    def close(self) -> None:
        self.server.stop()

    def pin(self, staging: str | None, production: str | None) -> None:
        # every version kept (as reposync), filler files: no signatures
        write_desired_state(self.ds, self.repos, 0, staging, production)

    def cmd(self, *args: str) -> list[str]:
        return [*RECONCILER, *args, "--config", str(self.config), "--desired-state", str(self.ds)]

    def env(self) -> dict[str, str]:
        return dict(
            os.environ,
            PYTHONPATH=str(ROOT),
            RECONCILER_CACHE_DIR=str(self.dir / "record-cache"),
        )

    def reconciler(self, *args: str) -> Timed:
        return run(self.cmd(*args), env=self.env())

    def latest(self) -> str:
        return (self.compose_root / REL / f"latest-SIG-{SIG}-{REL}").readlink().name

    def sig_dir(self, cid: str) -> Path:
        return self.compose_root / REL / cid / "compose" / REL / SIG

    def compose(self) -> str:
        self.reconciler("compose", SIG, REL)
        return self.latest()

    def promote(self, cid: str, previous: str | None) -> tuple[Timed, Timed]:
        """Stage the newest compose, then promote ``cid``: the two ``apply`` runs."""
        self.pin("latest", previous)
        staged = self.reconciler("apply", "--yes")
        self.pin("latest", cid)
        return staged, self.reconciler("apply", "--yes")


# -- part 1: network storage ---------------------------------------------------------------


def storage_run(
    base: Path, pristine: Path, mount: Mount, index: int, args: argparse.Namespace, mode: str
) -> dict[str, Any]:
    """One sequence. ``mode``: ``time`` (the timed figures, seconds), ``strace`` (the 1%
    promotion and the no-op pass under ``strace``, both sides: syscalls on the mount) or
    ``profile`` (those two reconciler steps under cProfile, into ``args.profile``)."""
    name = f"{mode}-{index}"
    # The production root one level under the mount point (a host mounts it there), and
    # rsync's copy at the same depth as the reconciler's SIG directory: on this mount every
    # path component of every call is a round trip, so both pay for the same depth.
    w = World(base / name, pristine, repos_of(args, 1), mount.point / f"production-{name}")
    rs_staging = w.dir / "rsync-staging"  # rsync's own staging copy (local, not timed)
    rs_production = mount.point / f"rsync-{name}" / CATEGORY / REL / SIG
    to_mount = [*RSYNC, f"{rs_staging}/", f"{rs_production}/"]
    res: dict[str, Any] = {}

    def step(key: str, ours: list[str], theirs: list[str] | None) -> None:
        if mode == "time":
            res[f"r.{key}"] = run(ours, env=w.env()).seconds
            if theirs is not None:
                res[f"b.{key}"] = run(theirs).seconds
        elif mode == "strace":
            res[f"r.{key}"] = on_mount(w, ours, mount)
            if theirs is not None:
                res[f"b.{key}"] = on_mount(w, theirs, mount)
        else:
            prof = args.profile / f"network-n{args.n}-{key}.prof"
            run([sys.executable, "-m", "cProfile", "-o", str(prof), *ours[1:]], env=w.env())
            res[f"r.{key}"] = str(prof)

    try:
        cid1 = w.compose()
        _, first = w.promote(cid1, None)
        res["r.publish1"] = first.seconds
        rsync(w.sig_dir(cid1), rs_staging)
        res["b.publish1"] = rsync(rs_staging, rs_production).seconds
        change = gen.update(w.data, args.fraction, args.seed + 1)
        res["changed_entries"] = change["changed_entries"]
        cid2 = w.compose()
        w.pin("latest", cid1)
        res["r.staging_1pct"] = w.reconciler("apply", "--yes").seconds
        w.pin("latest", cid2)
        rsync(w.sig_dir(cid2), rs_staging)
        step("publish_1pct", w.cmd("apply", "--yes"), to_mount)
        step("nothing", w.cmd("apply", "--yes"), to_mount)
        if mode == "time" and not args.no_daemon:
            res.update(daemon_rows(w, args, cid2, rs_staging, to_mount))
    finally:
        w.close()
        # through the backing directory: deleting over the mount would take minutes
        for top in (f"production-{name}", f"rsync-{name}"):
            shutil.rmtree(mount.backing / top, ignore_errors=True)
        shutil.rmtree(w.dir, ignore_errors=True)
    for key in ("publish1", "publish_1pct", "nothing", *DAEMON_ROWS):
        ours, theirs = res.get(f"r.{key}"), res.get(f"b.{key}")
        if isinstance(ours, float) and isinstance(theirs, float):
            print(f"    {key:14s} reconciler {ours:7.3f}s  rsync {theirs:7.3f}s", flush=True)
    return res


#: The rows measured inside a running ``reconciler run`` (the daemon's pass, from its
#: /metrics), each beside rsync run right after it onto the same mount.
DAEMON_ROWS = ("daemon_1pct", "daemon_1pct_again", "daemon_nothing")


def daemon_rows(
    w: World, args: argparse.Namespace, cid: str, rs_staging: Path, to_mount: list[str]
) -> dict[str, float]:
    """The issue's no-op pass is the daemon's main mode: ``reconciler run`` on the world
    (bench/daemon.py: POST /trigger, the pass's time from /metrics, no interpreter
    start-up). Its first pass converges (nothing to do); then a pass with nothing to do;
    then another 1% change, composed and staged by the CLI, and the pass that promotes
    it to production on the mount; rsync right after each onto its copy on the mount.
    The first desired-state change a process sees builds its validators (pydantic, once
    per process, ~0.15 s), so the same is done once more: ``daemon_1pct_again`` is the
    steady state of a daemon that has run for a while."""
    out: dict[str, float] = {}
    d = Daemon(w.config, w.ds, w.dir / "daemon", w.env())
    try:
        d.start()
        out["r.daemon_nothing"] = d.trigger().seconds
        out["b.daemon_nothing"] = run(to_mount).seconds
        for key, seed in (("daemon_1pct", args.seed + 2), ("daemon_1pct_again", args.seed + 3)):
            gen.update(w.data, args.fraction, seed)
            new = w.compose()
            w.pin("latest", cid)
            w.reconciler("apply", "--yes")  # staged (local, not timed)
            rsync(w.sig_dir(new), rs_staging)
            w.pin("latest", new)
            t = d.trigger()
            if not t.ok:
                raise DaemonFailed(f"the promotion pass failed; see {d.log}")
            out[f"r.{key}"] = t.seconds
            out[f"b.{key}"] = run(to_mount).seconds
            cid = new
    except DaemonFailed as exc:
        print(f"    daemon FAILED: {exc}", flush=True)
    finally:
        d.stop()
    return out


def on_mount(w: World, cmd: list[str], mount: Mount) -> dict[str, int]:
    """``cmd`` under ``strace -f -y`` (fds named by their path): its syscalls that touched
    the mount, by name, most frequent first."""
    out = w.dir / "strace.txt"
    run(
        ["strace", "-f", "-y", "-qq", "-e", "trace=%file,%desc", "-o", str(out), *cmd],
        env=w.env(),
    )
    calls: Counter[str] = Counter()
    prefix = str(mount.point)
    with out.open(errors="replace") as fh:
        for line in fh:
            if prefix in line:
                m = re.match(r"\s*\d+\s+(\w+)\(", line)
                if m:
                    calls[m.group(1)] += 1
    out.unlink()
    return dict(calls.most_common())


def storage(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    scale = args.scale or max(1.0, args.n / 4000)
    pristine = base / "pristine-storage"
    summary = gen.generate(pristine, args.n, args.seed, scale, repos_of(args, 1))
    print(
        f"\n=== network storage: N={args.n} ({summary['entries']} entries, "
        f"{summary['bytes'] / 1e6:.0f} MB, scale {scale:g}, {summary['variants']} yum repos)",
        flush=True,
    )
    runs: list[dict[str, Any]] = []
    trace: dict[str, Any] = {}
    summaries: list[str] = []
    with network_mount(base / "sshfs", args.sshfs_cache) as mount:
        print(f"  production root on: {mount.options} (local backing dir {mount.backing})")
        probed = probe(mount)
        print("  " + ", ".join(f"{k} {v:.2f} ms" for k, v in probed.items()), flush=True)
        for i in range(args.runs):
            print(f"  run {i + 1}/{args.runs}", flush=True)
            runs.append(storage_run(base, pristine, mount, i, args, "time"))
        if not args.no_strace and shutil.which("strace"):
            print("  strace run (syscalls on the mount; times not used)", flush=True)
            trace = storage_run(base, pristine, mount, 0, args, "strace")
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            print(f"  profile run (cProfile into {args.profile}; times not used)", flush=True)
            profiles = storage_run(base, pristine, mount, 0, args, "profile")
            for key in ("publish_1pct", "nothing"):
                summaries.append(summarize_profile(Path(profiles[f"r.{key}"])))
    shutil.rmtree(pristine, ignore_errors=True)
    return {
        "n": args.n,
        "scale": scale,
        "summary": summary,
        "runs": runs,
        "trace": trace,
        "mount": mount.options,
        "probe": probed,
        "profiles": summaries,
    }


def storage_report(res: dict[str, Any]) -> list[str]:
    runs = res["runs"]
    lines = [
        f"network storage: production on sshfs, N={res['n']} "
        f"({res['summary']['entries']} entries, {res['summary']['bytes'] / 1e6:.0f} MB, "
        f"scale {res['scale']:g}), medians of {len(runs)} run(s)",
        f"mount: {res['mount']}",
        "one round trip on it: " + ", ".join(f"{k} {v:.2f} ms" for k, v in res["probe"].items()),
    ]
    if runs:
        lines += [
            "| scenario | reconciler (median) | rsync onto the mount (median) | ratio | target "
            "| verdict |",
            "|---|---|---|---|---|---|",
        ]
        per_run = ["ratio of each run (reconciler / rsync, same run):"]
        for key, label, limit in (
            ("publish1", "first publish ->production", None),
            ("publish_1pct", "publish after 1% ->production", 0.1),
            ("nothing", "nothing changed (apply vs rsync no-op)", 0.05),
            ("daemon_1pct", "reconciler run: pass after 1% ->production", 0.1),
            ("daemon_1pct_again", "reconciler run: the same, a second change", 0.1),
            ("daemon_nothing", "reconciler run: pass with nothing changed", 0.05),
        ):
            if any(f"r.{key}" not in r for r in runs):
                continue  # --no-daemon, or the daemon failed
            ours = statistics.median(r[f"r.{key}"] for r in runs)
            theirs = statistics.median(r[f"b.{key}"] for r in runs)
            ratio = ours / theirs
            verdict = "-" if limit is None else ("MET" if ratio <= limit else "MISSED")
            target = "-" if limit is None else f"<= {limit:g}"
            lines.append(
                f"| {label} | {ours:.3f} | {theirs:.3f} | {ratio:.3f} | {target} | {verdict} |"
            )
            ratios = ", ".join(f"{r[f'r.{key}'] / r[f'b.{key}']:.3f}" for r in runs)
            per_run.append(f"  {label}: {ratios}")
        staging = statistics.median(r["r.staging_1pct"] for r in runs)
        lines += per_run
        lines.append(f"(publish after 1% ->staging, local, for comparison: {staging:.3f}s)")
    trace = res["trace"]
    for key, label in (("publish_1pct", "publish after 1%"), ("nothing", "nothing changed")):
        for side, who in (("r", "reconciler"), ("b", "rsync")):
            calls = trace.get(f"{side}.{key}")
            if calls is None:
                continue
            top = ", ".join(f"{k} {v}" for k, v in list(calls.items())[:8])
            lines.append(f"syscalls on the mount, {label}, {who}: {sum(calls.values())} ({top})")
    return lines + res["profiles"]


def summarize_profile(path: Path, top: int = 25) -> str:
    """The top functions of a cProfile by cumulative time."""
    import io
    import pstats

    buf = io.StringIO()
    pstats.Stats(str(path), stream=buf).sort_stats("cumulative").print_stats(top)
    body = buf.getvalue()
    return f"--- {path.name}\n" + body[max(body.find("   ncalls"), 0) :].rstrip()


# -- part 2: what the mirrors pay -------------------------------------------------------------


def repos_of(args: argparse.Namespace, count: int) -> dict[str, list[str]]:
    names = ["bench-common", "bench-extras", "bench-tools", "bench-infra"][:count]
    return {name: list(args.arches) for name in names}


def rebuild_one(out: Path, repo: str, variant: str, seed: int) -> tuple[str, str]:
    """One package of one yum repo rebuilt upstream (its next release, new bytes), and
    that repo's metadata rewritten; every other repo untouched. (old file, new file)."""
    meta, pkgs = gen.load_manifest(out)
    meta["updates"] += 1
    files_elsewhere = Counter(p.file for p in pkgs)
    candidates = [
        p
        for p in pkgs
        if p.repo == repo and p.variant == variant and p.kind == "bin" and p.arch != "noarch"
        and files_elsewhere[p.file] == 1
    ]  # fmt: skip
    old = random.Random(f"one-{seed}").choice(sorted(candidates, key=lambda p: p.file))
    entry = asdict(old)
    del entry["sha256"]
    release = gen._release(int(old.release.split(".")[0]) + 1)
    entry.update(
        file=old.file.replace(f"-{old.release}.", f"-{release}."),
        release=release,
        time=gen.BASE_TIME + 500 * 86400,
    )
    new = gen._write_files(out, [entry], gen.Filler(seed))
    (gen.repo_dir(out, repo, variant) / "Packages" / old.file).unlink()
    rest = [p for p in pkgs if p is not old] + new
    gen.write_metadata(
        gen.repo_dir(out, repo, variant),
        [p for p in rest if (p.repo, p.variant) == (repo, variant)],
        entry["time"],
    )
    gen._save(out, meta, rest)
    return old.file, new[0].file


def variant_path(repo: str, variant: str) -> str:
    """Where a yum repo sits under ``<release>/<sig>/``, as in the compose's layout."""
    if variant == "src":
        return f"source/{repo}"
    arch, _, debug = variant.partition("-")
    return f"{arch}/{repo}" + (f"-{debug}" if debug else "")


def scripts_round(w: World, compose: Path, production: Path) -> None:
    """Today's scripts, untimed: ``dnf reposync`` of every repo into the same compose tree
    (a fresh cache each, as the toolkit's sync does), ``rsync -rlptDSH --delete`` of it to
    production, then the file lists as ``sync-sig-file-list.sh`` writes them (``find .``;
    the time list by ``find -printf``, standing in for quick-fedora-mirror's
    ``create-filelist``, with the same rewrite of ``-old`` and ``fullfiletimelist``)."""
    top = compose / REL / SIG
    for repo, arches in w.repos.items():
        for variant in [a for arch in arches for a in (arch, f"{arch}-debug")] + ["src"]:
            repoid = f"{repo}-{variant}"
            cache = Path(tempfile.mkdtemp(prefix="dnfcache-", dir=w.dir))
            try:
                run(
                    ["dnf", "reposync", "--download-metadata", "--norepopath", "--remote-time",
                     f"--repofrompath={repoid},{w.server.base_url}/{gen.PROJECT_ID}/repo/"
                     f"{repo}/{variant}",
                     f"--repoid={repoid}", "-p", str(top / variant_path(repo, variant)),
                     "--setopt=reposdir=/dev/null", f"--setopt=cachedir={cache}",
                     f"--releasever={REL}"]
                )  # fmt: skip
            finally:
                shutil.rmtree(cache, ignore_errors=True)
    rsync(compose, production, "--exclude=/full*", "--exclude=/imagelist*")
    with (production / "fullfilelist").open("w") as fh:
        subprocess.run(["find", "."], cwd=production, stdout=fh, check=True)
    timelist = production / "fullfiletimelist-sig"
    if timelist.exists():
        shutil.copy(timelist, production / "fullfiletimelist-sig-old")
    with timelist.open("w") as fh:
        subprocess.run(
            ["find", ".", "-printf", "%T@\\t%y\\t%s\\t%P\\n"], cwd=production, stdout=fh, check=True
        )
    shutil.copy(timelist, production / "fullfiletimelist")


@contextmanager
def rsync_daemon(work: Path, modules: dict[str, Path]) -> Iterator[str]:
    """``rsync --daemon`` on 127.0.0.1 serving ``modules`` read-only; yields its URL."""
    work.mkdir(parents=True, exist_ok=True)
    conf = work / "rsyncd.conf"
    conf.write_text(
        f"use chroot = yes\nuid = 0\ngid = 0\nlog file = {work / 'rsyncd.log'}\n"
        + "".join(f"[{m}]\n    path = {p}\n    read only = yes\n" for m, p in modules.items())
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RSYNC_")}
    proc = subprocess.Popen(
        ["rsync", "--daemon", "--no-detach", "--config", str(conf), "--port", str(port),
         "--address", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        wait_listening(port, proc, "rsync --daemon")
        yield f"rsync://127.0.0.1:{port}"
    finally:
        stop(proc)


@dataclass
class Pull:
    stats: dict[str, int]
    files: list[str] = field(default_factory=list)  # regular files received
    deleted: list[str] = field(default_factory=list)


def mirror_pull(url: str, dest: Path) -> Pull:
    dest.mkdir(parents=True, exist_ok=True)
    out = run([*RSYNC, "--stats", "--out-format=%i %n", f"{url}/", f"{dest}/"]).out
    stats: dict[str, int] = {}
    for label in STATS:
        m = re.search(rf"^{re.escape(label)}: ([\d,]+)", out, re.MULTILINE)
        if m:
            stats[label] = int(m.group(1).replace(",", ""))
    pull = Pull(stats)
    for line in out.splitlines():
        flags, _, name = line.partition(" ")
        if flags.startswith(">f"):
            pull.files.append(name)
        elif flags == "*deleting":
            pull.deleted.append(name.strip())
    return pull


def mirrors(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    repos = repos_of(args, 2)
    scale = args.scale or max(1.0, args.mirror_n * len(repos) / 4000)
    pristine = base / "pristine-mirrors"
    summary = gen.generate(pristine, args.mirror_n, args.seed, scale, repos)
    print(
        f"\n=== what the mirrors pay: {summary['variants']} yum repos, "
        f"{summary['entries']} entries, {summary['bytes'] / 1e6:.0f} MB, scale {scale:g}",
        flush=True,
    )
    w = World(base / "mirrors", pristine, repos, base / "mirrors-production")
    scripts_compose, scripts_prod = w.dir / "scripts-compose", w.dir / "scripts-production"
    repo, variant = next(iter(repos)), args.arches[0]
    rounds: dict[str, Any] = {}
    try:
        cid = w.compose()
        w.promote(cid, None)
        scripts_round(w, scripts_compose, scripts_prod)
        modules = {"sig": w.production / CATEGORY, "scripts": scripts_prod}
        with rsync_daemon(w.dir / "rsyncd", modules) as url:

            def both_pull(label: str) -> None:
                nonlocal cid
                previous, cid = cid, w.compose()
                if cid != previous:
                    w.promote(cid, previous)
                scripts_round(w, scripts_compose, scripts_prod)
                rounds[label] = {
                    "reconciler": asdict(mirror_pull(f"{url}/sig", w.dir / "mirror-sig")),
                    "scripts": asdict(mirror_pull(f"{url}/scripts", w.dir / "mirror-scripts")),
                    "new_compose": cid != previous,
                }

            mirror_pull(f"{url}/sig", w.dir / "mirror-sig")
            mirror_pull(f"{url}/scripts", w.dir / "mirror-scripts")
            time.sleep(1.1)  # a later second: rsync's quick check compares whole seconds
            old, new = rebuild_one(w.data, repo, variant, args.seed)
            print(f"  rebuilt upstream: {repo}/{variant}: {old} -> {new}", flush=True)
            both_pull("one package rebuilt in one repo")
            time.sleep(1.1)
            # A build system that regenerates every repo of the project after a build:
            # the same packages, every repo's metadata written anew (a new revision).
            _, pkgs = gen.load_manifest(w.data)
            gen._write_all_metadata(w.data, pkgs, gen.BASE_TIME + 600 * 86400)
            both_pull("upstream rewrote every repo's metadata, no package changed")
    finally:
        w.close()
        shutil.rmtree(w.dir, ignore_errors=True)
        shutil.rmtree(w.production, ignore_errors=True)
        shutil.rmtree(pristine, ignore_errors=True)
    # within <category>: <release>/<sig>/<arch>/<repo>/...
    repo_top = f"{REL}/{SIG}/{variant_path(repo, variant)}/"
    first = rounds["one package rebuilt in one repo"]
    files = first["reconciler"]["files"]
    within = [
        f
        for f in files
        if (f.startswith(repo_top + "Packages/") and f.endswith("/" + new))
        or f.startswith(repo_top + "repodata/")
        or FILELISTS.fullmatch(f)
    ]
    extra = sorted(set(files) - set(within))
    return {
        "summary": summary,
        "scale": scale,
        "changed": {"repo": repo, "variant": variant, "old": old, "new": new},
        "rounds": rounds,
        "beyond_target": extra,
        "met": not extra and any(f.endswith("/" + new) for f in files),
    }


def mirrors_report(res: dict[str, Any]) -> list[str]:
    ch = res["changed"]
    lines = [
        f"what the mirrors pay: {res['summary']['variants']} yum repos, "
        f"{res['summary']['entries']} entries, {res['summary']['bytes'] / 1e6:.0f} MB "
        f"(scale {res['scale']:g}); the mirror runs `rsync -rlptDSH --delete --stats` from "
        "`rsync --daemon` after each change; today's scripts: reposync into the same tree, "
        "rsync to production, file lists as sync-sig-file-list.sh writes them",
    ]
    for label, got in res["rounds"].items():
        ours, theirs = got["reconciler"], got["scripts"]
        what = label
        if label.startswith("one package"):
            what += f" ({ch['repo']}/{ch['variant']}: {ch['old']} -> {ch['new']})"
        lines += [
            "",
            what + ("" if got["new_compose"] else " (the reconciler made no new compose)"),
            "| --stats | reconciler | today's scripts |",
            "|---|---|---|",
        ]
        lines += [
            f"| {s} | {ours['stats'].get(s, '?')} | {theirs['stats'].get(s, '?')} |" for s in STATS
        ]
        for who, pull in (("reconciler", ours), ("today's scripts", theirs)):
            lines.append(f"files transferred, {who} ({len(pull['files'])}):")
            lines += [f"  {f}" for f in pull["files"]]
            if pull["deleted"]:
                lines.append(f"deleted on the mirror, {who}: {', '.join(pull['deleted'])}")
    verdict = "MET" if res["met"] else "MISSED"
    lines.append(
        "\ntarget (one package rebuilt: the mirror transfers at most that package, that "
        f"repo's metadata and the file lists): {verdict}"
        + (f"; beyond it: {', '.join(res['beyond_target'])}" if res["beyond_target"] else "")
    )
    return lines


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Package files are generated filler, not real RPMs (bench/generate.py --help).",
    )
    p.add_argument("--n", type=int, default=2000, help="network storage: package entries")
    p.add_argument("--runs", type=int, default=3, help="network storage: timed runs (medians)")
    p.add_argument(
        "--mirror-n", type=int, default=1000, help="what the mirrors pay: entries per repo name"
    )
    p.add_argument("--scale", type=float, default=None, help="divide package sizes by this")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fraction", type=float, default=0.01, help="the change (default 1%%)")
    p.add_argument("--arches", default="x86_64,aarch64")
    p.add_argument(
        "--sshfs-cache",
        action="store_true",
        help="keep sshfs's and the kernel's caches of names and attributes at their defaults "
        "(default: all off, every lookup and stat a round trip)",
    )
    p.add_argument("--part", choices=["storage", "mirrors", "both"], default="both")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--json", type=Path, help="save the raw numbers here")
    p.add_argument("--no-strace", action="store_true", help="skip the syscall-count run")
    p.add_argument(
        "--no-daemon", action="store_true", help="skip the passes inside `reconciler run`"
    )
    p.add_argument(
        "--profile", type=Path, metavar="DIR", help="cProfile the no-op pass on the mount"
    )
    args = p.parse_args(argv)
    args.arches = [a for a in args.arches.split(",") if a]
    args.workdir.mkdir(parents=True, exist_ok=True)
    compileall.compile_dir(str(ROOT / "reconciler"), quiet=1)  # as an install does
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty=+dirty-tree", "--abbrev=12"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    header = [
        "reconciler benchmarks: network storage and what the mirrors pay (issue 16)",
        f"command: {' '.join(['bench/network.py', *(argv or sys.argv[1:])])}",
        f"machine: {os.cpu_count()} CPUs, kernel {platform.release()}, "
        f"Python {platform.python_version()}, reconciler {rev}, work dir {args.workdir}",
    ]
    print("\n".join(header), flush=True)
    base = Path(tempfile.mkdtemp(prefix="reconciler-network-", dir=args.workdir))
    base.chmod(0o755)
    results: dict[str, Any] = {"argv": argv or sys.argv[1:], "revision": rev}
    report = list(header)
    started = time.perf_counter()
    try:
        if args.part in ("storage", "both"):
            results["storage"] = storage(args, base)
            report += ["", *storage_report(results["storage"])]
        if args.part in ("mirrors", "both"):
            results["mirrors"] = mirrors(args, base)
            report += ["", *mirrors_report(results["mirrors"])]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    report.append(f"\nbench time {time.perf_counter() - started:.0f}s")
    print("\n---- report (paste from here) ----")
    print("\n".join(report))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
        print(f"raw numbers: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
