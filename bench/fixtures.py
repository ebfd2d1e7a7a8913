"""Measure the bundled fixtures: a compose (time, HTTP requests) and three publishes.

    python bench/fixtures.py [--runs 5]

Compose: the tests' SIG (2 repos; 8 repos with -debug and source) from the
sample upstream on 127.0.0.1, cold, then after one upstream package changed
(the .rpm requests are listed: only the changed one is downloaded).
Publish: `reconciler apply` timed, and counted under `strace -f -c`, for a
first publish into an empty production tree, a promotion that adds, updates
and drops packages, and a pass where nothing changed.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reconciler import testing as su
from reconciler.cli import main
from reconciler.state import StateDB
from reconciler.vocabulary import Stage
from tests import publish_support as ps
from tests.conftest import PROJECT_ID, REPOS, make_desired_state, write_host_config

from run import META_SYSCALLS, parse_strace

FILE_OPS = ("link", "linkat", "rename", "renameat", "renameat2", "unlink", "unlinkat")


def compose(root: Path, runs: int) -> None:
    su.build_upstream(root / "upstream", PROJECT_ID, REPOS, extras_for=["core-common"])
    ds = make_desired_state(root / "desired-state")
    quiet = {"download": {"workers": 8, "retries": 4, "backoff": 0.5, "timeout": 60}}
    with su.UpstreamServer(root / "upstream") as server:
        times, requests = [], []
        for i in range(runs):
            host = root / f"host{i}"
            host.mkdir()
            config = write_host_config(host, server.base_url, **quiet)
            server.reset_counts()
            started = time.perf_counter()
            assert main(["compose", "core", "9", "--config", str(config),
                         "--desired-state", str(ds.path)]) == 0  # fmt: skip
            times.append(time.perf_counter() - started)
            requests.append(len(server.requests))
        print(f"cold compose: median {statistics.median(times):.3f}s of {runs}, "
              f"HTTP requests {requests}")  # fmt: skip
        changed = su.upstream_repo_dir(root / "upstream", PROJECT_ID, "core-common", "x86_64")
        su.add_packages(changed, [su.sample_rpm("sig-hello-1.1-1.x86_64.rpm")])
        server.reset_counts()
        started = time.perf_counter()
        assert main(["compose", "core", "9", "--config", str(config),
                     "--desired-state", str(ds.path)]) == 0  # fmt: skip
        rpms = [p.rsplit("/", 1)[-1] for p in server.requests if p.endswith(".rpm")]
        print(f"second compose after one package changed: {time.perf_counter() - started:.3f}s, "
              f"{len(server.requests)} requests, .rpm requests: {rpms}")  # fmt: skip


def apply_cmd(world: ps.World) -> list[str]:
    return [sys.executable, "-m", "reconciler.cli", "apply", "--config", str(world.config),
            "--desired-state", str(world.ds.path)]  # fmt: skip


def publish(root: Path, runs: int) -> None:
    for label in ("first publish", "promotion A->B", "nothing changed"):
        walls: list[float] = []
        counts = (0, 0)
        for i in range(runs + 1):
            for world in ps.build_world(root / f"{label.split()[0]}{i}"):
                if label == "first publish":
                    world.pin(world.b)
                    shutil.rmtree(world.production)
                    with StateDB.open(world.root / "state") as state:
                        state.targets.clear("core", "9", Stage.PRODUCTION)
                        state.inventory.replace(Stage.PRODUCTION, "mirror/", [])
                elif label.startswith("promotion"):
                    world.pin(world.b)
                if i < runs:
                    started = time.perf_counter()
                    subprocess.run(apply_cmd(world), check=True, capture_output=True)
                    walls.append(time.perf_counter() - started)
                else:
                    out = world.root / "strace.txt"
                    subprocess.run(["strace", "-f", "-c", "-o", str(out), *apply_cmd(world)],
                                   check=True, capture_output=True)  # fmt: skip
                    calls = parse_strace(out.read_text())
                    counts = (sum(v for k, v in calls.items() if k in META_SYSCALLS),
                              sum(calls.get(k, 0) for k in FILE_OPS))  # fmt: skip
        print(f"{label:16s} median {statistics.median(walls):.3f}s of {runs}; "
              f"metadata calls {counts[0]}, link+rename+unlink {counts[1]}")  # fmt: skip


def main_() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="reconciler-fixtures-") as tmp:
        compose(Path(tmp) / "compose", max(args.runs, 1))
        if shutil.which("strace") is None:
            print("strace is not installed: publish counts skipped")
            return 0
        publish(Path(tmp) / "publish", max(args.runs, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main_())
