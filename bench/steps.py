"""The timed sequences: a whole run (compose, publish, the 1% change, nothing changed, the
daemon) and the cold-compose comparison alone (``--cold-only-fs``)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reconciler.filelists import parse_timelist

import generate as gen
from daemon import Daemon, DaemonFailed, daemon_env
from procs import Run, plus, rsync, run
from world import CATEGORY, REL, SIG, Env, World, write_config

Note = Callable[..., None]


def _noter(res: dict[str, Any]) -> Note:
    def note(key: str, r: Run, **extra: Any) -> None:
        if r.rc != 0:  # a failed baseline is reported, never used as a time
            res[key] = {"failed": r.err or f"exit {r.rc}", **extra}
            print(f"    {key:34s} FAILED: {res[key]['failed']}", flush=True)
            return
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

    return note


def _cold_steps(env: Env, w: World, index: int, note: Note, prof: Any, rotate: bool) -> Path:
    """The cold compose, reposync of the same repos, ``cp -a`` and the verified copy
    (``cp -a``, then sha256 of every package: the byte work a compose must do, the
    physical limit). Each writes the whole tree anew, and how fast this machine writes
    fresh pages depends on what ran just before: the order rotates from run to run, so
    that each goes first once in three runs. Returns the reposync tree (for --delete)."""

    def cold_compose() -> None:
        w.server.reset_counts()
        cpu = w.server.cpu_seconds()
        r = w.reconciler("compose", SIG, REL, profile=prof("cold_compose"))
        nbytes, gets = w.served_bytes()
        note("r.cold_compose", r, bytes=nbytes, gets=gets,
             server_cpu=round(w.server.cpu_seconds() - cpu, 2))  # fmt: skip

    reposync_dir = w.dir / "reposync-cold"

    def reposync_cold() -> None:
        rr, b = w.reposync(reposync_dir)
        note("b.reposync_cold", rr, bytes=b, server_cpu=round(rr.server_cpu, 2))

    copy = w.dir / "cp-a"

    def cp_a() -> None:
        cp = run(["cp", "-a", str(w.data / "upstream"), str(copy)])
        note("b.cp_a", cp)
        if env.tools["openssl"] is None and cp.rc == 0:
            # the verified copy: every package of the copy read through sha256
            # (one openssl process), as the compose checks every byte it receives
            digest = run(
                ["find", str(copy), "-name", "*.rpm", "-type", "f",
                 "-exec", "openssl", "dgst", "-sha256", "{}", "+"]
            )  # fmt: skip
            note("b.cp_a_sha256", plus(cp, digest))
        shutil.rmtree(copy, ignore_errors=True)  # not needed again: room on small file systems

    cold = [cold_compose]
    if rotate:
        if env.tools["reposync"] is None and env.reposync:
            cold.append(reposync_cold)
        if env.tools["cp"] is None:
            cold.append(cp_a)
        turn = index % len(cold)
        cold = cold[turn:] + cold[:turn]
    for step in cold:
        step()
    return reposync_dir


def cold_only_run(env: Env, index: int, where: Path) -> dict[str, Any]:
    """The cold-compose comparison on the file system at ``where``, and the first publish
    compose -> staging there (same file system) against rsync."""
    w = World(env, f"cold-{index}", where=where)
    print(f"    upstream: {w.server.description}", flush=True)
    res: dict[str, Any] = {}
    note = _noter(res)
    try:
        reposync_dir = _cold_steps(env, w, index, note, lambda _: None, rotate=True)
        shutil.rmtree(reposync_dir, ignore_errors=True)
        cid1 = w.latest()
        w.pin(staging="latest", production=None)
        note("r.publish1_staging", w.reconciler("apply", "--yes"))
        if env.tools["rsync"] is None:
            note("b.rsync_publish1_staging", rsync(w.sig_dir(cid1), w.rs_staging))
    finally:
        w.close()
    return res


def one_run(
    env: Env, index: int, mode: str, profile_dir: Path | None = None, where: Path | None = None
) -> dict[str, Any]:
    """One full sequence. ``mode``: ``time`` (timings, baselines), ``strace`` (syscall
    counts of the publish steps, both sides), ``profile`` (reconciler steps profiled)."""
    w = World(env, f"run-{mode}-{index}", where=where)
    print(f"    upstream: {w.server.description}", flush=True)
    res: dict[str, Any] = {}
    timing = mode == "time"
    tracing = mode == "strace"
    tdir = w.dir / "strace"
    tdir.mkdir(parents=True, exist_ok=True)
    has_rsync = env.tools["rsync"] is None
    note = _noter(res)

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
            note(baseline, rsync(src, dst, traced(baseline)))

    try:
        # 1. cold compose, and (timing) the baselines of the same download
        reposync_dir = _cold_steps(env, w, index, note, prof, rotate=timing)
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
                    rsync(w.sig_dir(cid1), xroot / "rsync" / CATEGORY / REL / SIG),
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
        if timing and env.tools["reposync"] is None and env.reposync:
            rr, b = w.reposync(w.dir / "reposync-fresh")
            note("b.reposync_fresh_1pct", rr, bytes=b)
            shutil.rmtree(w.dir / "reposync-fresh")
            rr, b = w.reposync(reposync_dir, delete=True)
            note("b.reposync_delete_1pct", rr, bytes=b)
        shutil.rmtree(reposync_dir, ignore_errors=True)

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
            note("b.rsync_nothing_changed", _rsync_both(w, cid2, tracing, traced))

        # 8. passes inside a running daemon (before the file lists of step 9: a list that
        # `filelist --root` rewrote would make its next publish list everything anew)
        if timing and env.daemon:
            daemon_passes(env, w, note, has_rsync)

        # 9. file lists of the production tree
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


def _rsync_both(w: World, cid: str, tracing: bool, traced: Callable[[str], Path | None]) -> Run:
    """The scripts' pass: rsync compose -> staging, then staging -> production (summed)."""
    a = rsync(w.sig_dir(cid), w.rs_staging, traced("b.rsync_nothing_staging"))
    b = rsync(w.rs_staging, w.rs_production, traced("b.rsync_nothing_production"))
    both = Run(["rsync x2"], a.seconds + b.seconds, max(a.rss_kb, b.rss_kb), 0, "", "")
    if tracing:
        both.breakdown = {
            k: a.breakdown.get(k, 0) + b.breakdown.get(k, 0) for k in {*a.breakdown, *b.breakdown}
        }
        both.calls = (a.calls or 0) + (b.calls or 0)
    return both


def _pass_run(t: Any, rss_kb: int) -> Run:
    return Run(["reconciler run: POST /trigger"], t.seconds, rss_kb, 0 if t.ok else 1, "",
               "" if t.ok else "the pass failed (see the daemon's log)")  # fmt: skip


def daemon_passes(env: Env, w: World, note: Note, has_rsync: bool) -> None:
    """Start ``reconciler run`` on the converged host, let it converge (its first pass),
    then time (a) a pass with nothing to do and (b) a pass after another 1% change,
    composed ahead by the CLI, and a commit that stages and promotes the new compose:
    that pass publishes to staging and production, as the two rsyncs do."""
    d = Daemon(w.config, w.ds, w.dir / "daemon", daemon_env(w.dir / "record-cache"))
    try:
        first = d.start()
        print(f"    daemon: reconciler run listening on {d.url}, first pass {first.seconds:.2f}s "
              f"(log {d.log})", flush=True)  # fmt: skip
        t = d.trigger()
        note("r.daemon_nothing", _pass_run(t, d.peak_rss_kb()), wall=round(t.wall, 3))
        cid = w.latest()
        if has_rsync:
            note("b.rsync_daemon_nothing", _rsync_both(w, cid, False, lambda _: None))
        gen.update(w.data, env.fraction, env.seed + 2)
        w.reconciler("compose", SIG, REL)
        cid3 = w.latest()
        w.pin(staging="latest", production=cid3)  # the commit: stage and promote it
        t = d.trigger()
        note("r.daemon_1pct", _pass_run(t, d.peak_rss_kb()), wall=round(t.wall, 3))
        if has_rsync:
            note("b.rsync_daemon_1pct", _rsync_both(w, cid3, False, lambda _: None))
    except DaemonFailed as exc:
        print(f"    daemon FAILED: {exc}", flush=True)
        note("r.daemon_nothing", Run(["reconciler run"], 0.0, 0, 1, "", str(exc)[:300]))
    finally:
        d.stop()
