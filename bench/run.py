#!/usr/bin/env python3
"""Benchmarks of the reconciler against the tools it replaces (issues 6 and 16).

    python bench/run.py --n 2000 --n 20000 --runs 3 [--json out.json] [--profile DIR]
    python bench/run.py --final --workdir DIR --json out.json   # the whole round-2 run

For each N, on the same machine and the same generated data (bench/generate.py:
filler files, NOT real RPMs, with consistent createrepo_c metadata), and
``--runs`` times each (medians are reported), every step is a subprocess
timed with ``time.perf_counter`` (peak RSS from ``/usr/bin/time``):

* cold compose (``reconciler compose``) vs ``dnf reposync`` per repo and arch
  against the same upstream (Debian's nginx in its own process, on 127.0.0.1;
  ``--upstream python`` for the sample server), vs the verified copy (``cp -a``
  of the upstream, then sha256 of every package: the physical limit) and ``cp -a``;
* compose after 1% of the packages got new versions vs reposync into a fresh
  directory and vs reposync ``--delete`` into the previous tree, plus the bytes
  the reconciler downloaded (nginx's access log) vs the changed packages + metadata;
* first publish compose -> staging, staging -> production (``reconciler apply``)
  vs ``rsync -rlptDSH --delete``, same filesystem and (tmpfs) across filesystems;
* publish after 1% and a pass where nothing changed vs the same rsync, in time
  and in filesystem metadata syscalls (``strace -f -c``, an extra run);
* passes inside a running ``reconciler run`` (POST /trigger; the pass duration
  histogram of /metrics): nothing changed, and after 1% with a commit that stages
  and promotes it, vs both rsyncs;
* ``reconciler filelist --root`` over the production tree (output parsed);
* peak RSS of every reconciler step;
* on other file systems (``--fs``, ``--cold-only-fs``: XFS on a loop image with
  reflinks, tmpfs), mounted and unmounted by the bench.

Caches are warm (everything was just written); the machine is described in the
output. Temporary trees are removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import compileall
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import filesystems  # noqa: E402
import generate as gen  # noqa: E402
from filesystems import mount_tmpfs  # noqa: E402
from machine import fs_type, import_calls, machine, summarize_profile, tool_status  # noqa: E402
from procs import RECONCILER, RSYNC, TIME, CommandFailed, Run, parse_strace, plus, run  # noqa: E402
from procs import rsync as _rsync  # noqa: E402
from rows import Row, cross_n, med, print_table, rows_for, rss_table, summary  # noqa: E402
from steps import cold_only_run, one_run  # noqa: E402
from world import CATEGORY, REL, SIG, Env, World, write_config, write_desired_state  # noqa: E402

#: Kept importable from here (bench/network.py and older scripts use them).
__all__ = [
    "CATEGORY",
    "RECONCILER",
    "REL",
    "RSYNC",
    "SIG",
    "TIME",
    "CommandFailed",
    "Env",
    "Row",
    "Run",
    "World",
    "_plus",
    "_rsync",
    "machine",
    "main",
    "med",
    "mount_tmpfs",
    "one_run",
    "parse_strace",
    "run",
    "tool_status",
    "write_config",
    "write_desired_state",
]
_plus = plus

#: Bytes per package entry at scale 1 (N = 2,000 makes 1,365 MB), and the copies of the
#: upstream a full run holds at once (generated, compose, reposync x2, cp -a, rsync x2).
BYTES_PER_ENTRY = 700_000
COPIES = 7
#: ``--final``: N = 2,000 and 20,000 with 3 runs, 100,000 with 1, the cold-compose
#: comparison on XFS and tmpfs at 2,000.
FINAL = ["--n", "2000", "--n", "20000", "--n", "100000:1", "--runs", "3",
         "--cold-only-fs", "xfs,tmpfs"]  # fmt: skip


def auto_scale(n: int, budget: int | None = None) -> float:
    """Sizes divided by max(1, N/4000), more when the copies would not fit ``budget``."""
    scale = max(1.0, n / 4000)
    if budget:
        # every file takes at least a block: that part does not scale down
        fixed = n * 4096 * COPIES
        need = n * BYTES_PER_ENTRY * COPIES
        if fixed >= budget:
            return float(max(scale, 1000.0))
        scale = max(scale, need / (budget - fixed))
    return float(round(scale, 1))


def parse_n(values: list[str], runs: int) -> list[tuple[int, int]]:
    """``N`` or ``N:RUNS`` (runs for that N only)."""
    out = []
    for v in values:
        n, _, r = v.partition(":")
        out.append((int(n), int(r) if r else runs))
    return out


def bench_n(
    args: argparse.Namespace, n: int, runs: int, tools: dict[str, str | None]
) -> list[dict[str, Any]]:
    """Every run of one N: the full runs on each ``--fs``, then the cold-only ones."""
    budget = int(args.disk_budget * 1e9) if args.disk_budget else None
    scale = args.scale if args.scale else auto_scale(n, budget)
    base = Path(tempfile.mkdtemp(prefix=f"reconciler-bench-{n}-", dir=args.workdir))
    print(
        f"\n=== N={n} (package entries per repo), generator scale {scale:g} "
        f"(package sizes divided by {scale:g}; filler files, not real RPMs), "
        f"work dir {base}",
        flush=True,
    )
    full_baselines = n <= args.full_baselines_up_to
    results: list[dict[str, Any]] = []
    tmpfs: Path | None = None
    try:
        started = time.perf_counter()
        pristine = base / "pristine"
        summary_ = gen.generate(
            pristine, n, args.seed, scale, {r: tuple(args.arches) for r in args.repo}
        )
        print(
            f"  generated in {time.perf_counter() - started:.1f}s: {summary_['entries']} "
            f"package entries, {summary_['files']} distinct files, "
            f"{summary_['bytes'] / 1e6:.1f} MB in total (scale {scale:g}), "
            f"{summary_['variants']} repos (variants), "
            f"{summary_['metadata_bytes'] / 1e3:.0f} KB metadata",
            flush=True,
        )
        if not full_baselines:
            print(f"  N > {args.full_baselines_up_to}: no reposync baselines, no strace run")
        tmpfs, tmpfs_note = (None, "across-FS publish skipped (--no-tmpfs)")
        if not args.no_tmpfs:
            tmpfs, tmpfs_note = filesystems.mount_tmpfs(base, summary_["bytes"])
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
            upstream=args.upstream,
            daemon=not args.no_daemon,
            reposync=full_baselines,
            keep=args.keep,
        )
        common = {"n": n, "scale": scale, "summary": summary_, "tmpfs": tmpfs_note,
                  "keep_versions": args.keep_versions, "reposync": full_baselines}  # fmt: skip
        cold_here = n in (args.cold_only_n or [min(x for x, _ in args.n)])
        plan = [(fs, "full") for fs in args.fs]
        plan += [(fs, "cold") for fs in args.cold_only_fs if cold_here]
        for fs, mode in plan:
            out = run_on(args, env, fs, mode, runs, full_baselines, summary_["bytes"])
            results.append({**common, **out})
        return results
    finally:
        if tmpfs is not None:
            filesystems.Mounted("tmpfs", tmpfs, "", mounted=True).teardown()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


def run_on(
    args: argparse.Namespace,
    env: Env,
    fs: str,
    mode: str,
    runs: int,
    full_baselines: bool,
    nbytes: int,
) -> dict[str, Any]:
    """The runs of ``mode`` (full or cold-only) with the trees on file system ``fs``."""
    copies = COPIES - 1 if mode == "full" else 3
    try:
        mounted = filesystems.setup(fs, env.base, int(nbytes * copies))
    except filesystems.FsUnavailable as exc:
        print(f"\n  --- {mode} runs on {fs}: SKIPPED: {exc}", flush=True)
        return {"fs": fs, "mode": mode, "runs": [], "strace": {}, "fs_note": f"skipped: {exc}"}
    note = f"{mounted.note} ({fs_type(mounted.path)})"
    where = None if fs == "dir" else mounted.path
    print(f"\n  --- {mode} runs on {fs}: {note}", flush=True)
    out: dict[str, Any] = {"fs": fs, "mode": mode, "fs_note": note, "strace": {}}
    try:
        if mode == "cold":
            out["runs"] = []
            for i in range(runs):
                print(f"  cold-only run {i + 1}/{runs} on {fs}", flush=True)
                out["runs"].append(cold_only_run(env, i, mounted.path))
            return out
        out["runs"] = []
        for i in range(runs):
            print(f"  run {i + 1}/{runs} on {fs}", flush=True)
            out["runs"].append(one_run(env, i, "time", where=where))
        if env.tools["strace"] is None and not args.no_strace and full_baselines:
            print("  strace run (syscall counts of publish steps; times not used)", flush=True)
            out["strace"] = one_run(env, 0, "strace", where=where)
            out["strace"]["python_imports"] = import_calls()
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            print(f"  profile run ({args.profiler} of every reconciler step into {args.profile})")
            one_run(env, 0, "profile", args.profile, where=where)
            for f in sorted(args.profile.glob(f"n{env.n}-*")):
                print(summarize_profile(f))
        return out
    finally:
        mounted.teardown()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Package files are generated filler, not real RPMs (see bench/generate.py --help).",
    )
    p.add_argument(
        "--n",
        action="append",
        metavar="N[:RUNS]",
        help="package entries per repo (repeatable; N:RUNS sets that N's runs)",
    )
    p.add_argument("--runs", type=int, default=3, help="timed runs per N (medians reported)")
    p.add_argument(
        "--final",
        action="store_true",
        help=f"the whole round-2 run: {' '.join(FINAL)} (other options add to it)",
    )
    p.add_argument(
        "--scale",
        type=float,
        default=None,
        help="divide package sizes by this (default: max(1, N/4000), more when "
        "the trees would not fit --disk-budget)",
    )
    p.add_argument(
        "--disk-budget",
        type=float,
        default=None,
        metavar="GB",
        help="disk the trees of one N may take (default: 40%% of the free space)",
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
    p.add_argument(
        "--upstream",
        choices=["nginx", "python"],
        default="nginx",
        help="serve the upstream with Debian's nginx in its own process (default) "
        "or the Python sample server in the bench's process",
    )
    p.add_argument(
        "--fs",
        action="append",
        choices=list(filesystems.KINDS),
        help="file system of the full runs' trees (repeatable; default dir: the "
        "work dir as it is; xfs: a loop image with reflink=1; tmpfs)",
    )
    p.add_argument(
        "--cold-only-fs",
        action="append",
        default=[],
        metavar="FS[,FS]",
        help="also run the cold-compose comparison (and the first publish) alone "
        "on these file systems",
    )
    p.add_argument(
        "--cold-only-n",
        type=int,
        action="append",
        help="the N(s) of the cold-only runs (default: the smallest N)",
    )
    p.add_argument(
        "--full-baselines-up-to",
        type=int,
        default=20000,
        metavar="N",
        help="above this N, skip the reposync baselines and the strace run",
    )
    p.add_argument("--no-daemon", action="store_true", help="skip the passes in `reconciler run`")
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
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    if args.final:
        args = p.parse_args(FINAL + argv)
    args.n = parse_n(args.n or ["2000"], args.runs)
    args.fs = args.fs or ["dir"]
    args.cold_only_fs = [f for v in args.cold_only_fs for f in v.split(",") if f]
    for f in args.cold_only_fs:
        if f not in filesystems.KINDS:
            p.error(f"--cold-only-fs: unknown file system {f!r} (one of dir, xfs, tmpfs)")
    args.repo = args.repo or list(gen.DEFAULT_REPOS)
    args.arches = [a for a in args.arches.split(",") if a]
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.disk_budget is None:
        args.disk_budget = filesystems.free_disk(args.workdir) * 0.4 / 1e9
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # An installed package comes with its bytecode (pip compiles it); a source tree run with
    # PYTHONDONTWRITEBYTECODE=1 would recompile every module at every start instead.
    bytecode = compileall.compile_dir(str(ROOT / "reconciler"), quiet=1, force=False)
    info = machine(args.workdir)
    tools = tool_status()
    if args.upstream == "nginx" and tools["nginx"]:
        print(f"NOTE: {tools['nginx']}: the upstream falls back to the Python sample server")
        args.upstream = "python"
    print("reconciler benchmarks (issues 6 and 16)")
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
    print(
        "upstream: "
        + (
            "Debian's nginx (/usr/sbin/nginx), started by the bench for each world in its own "
            "process on 127.0.0.1 (generated config: sendfile on, access log of bytes sent), "
            "stopped at the world's end"
            if args.upstream == "nginx"
            else "the Python sample server (reconciler.testing), in the bench's process"
        )
    )
    for tool, why in tools.items():
        if why and tool != "nginx":
            print(f"MISSING BASELINE: {tool}: {why}")
    if TIME is None:
        print(
            "NOTE: /usr/bin/time missing (apt-get install time): peak RSS comes from wait4 "
            "and includes this process's own RSS at fork"
        )
    print(
        f"setup: {len(args.repo)} repo(s) x {len(args.arches)} arches x {{binary, -debug}} "
        f"+ src; compose.keep_versions={args.keep_versions}; caches warm; "
        f"runs per N: {', '.join(f'{n}: {r}' for n, r in args.n)}; file systems: full runs "
        f"on {', '.join(args.fs)}, cold-only on {', '.join(args.cold_only_fs) or 'none'}; "
        f"the 1% change replaces whole builds (about {args.fraction:.0%} of the package "
        f"entries); the cold compose, reposync and cp -a take turns going first; disk budget "
        f"{args.disk_budget:.1f} GB"
    )

    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    for n, runs in args.n:
        t0 = time.perf_counter()
        for res in bench_n(args, n, runs, tools):
            res["seconds"] = time.perf_counter() - t0
            report(res, tools)
            results.append(res)
    pairs = {(r["n"], r["fs"]) for r in results if r["n"] > 2000 and r["mode"] == "full"}
    crosses = [c for c in (cross_n(results, n, fs) for n, fs in sorted(pairs)) if c]
    for c in crosses:
        print(
            f"\nnothing-changed pass on {c['fs']}, N={c['n']} vs N=2000: {c['big']:.3f}s / "
            f"{c['small']:.3f}s = {c['ratio']:.2f} (target <= 1.5): "
            f"{'MET' if c['met'] else 'MISSED'}"
        )
    print("\n" + summary(results))
    print(f"\ntotal bench time {time.perf_counter() - started:.0f}s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "tools": tools,
                    "results": results,
                    "cross_n": crosses,
                    "argv": argv or sys.argv[1:],
                },
                indent=1,
                default=str,
            )
        )
        print(f"raw numbers: {args.json}")
    return 0


def report(res: dict[str, Any], tools: dict[str, str | None]) -> None:
    rows = rows_for(res, tools)
    res["rows"] = [r.__dict__ for r in rows]
    what = "cold-compose comparison only" if res["mode"] == "cold" else "full runs"
    print(
        f"\nN={res['n']} on {res['fs']} ({what}; {res['fs_note']}): "
        f"{res['summary']['entries']} entries, {res['summary']['bytes'] / 1e6:.0f} MB, "
        f"scale {res['scale']:g}, medians of {len(res['runs'])} run(s), bench time so far "
        f"{res['seconds']:.0f}s"
    )
    if not res["runs"]:
        return
    print(print_table(rows))
    print(rss_table(res))
    if res["strace"].get("python_imports"):
        print(
            f"(metadata syscalls of just starting Python and importing the reconciler: "
            f"{res['strace']['python_imports']['calls']})"
        )


if __name__ == "__main__":
    sys.exit(main())
