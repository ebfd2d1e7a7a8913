"""A soak of the real loop: ``reconciler run`` on a git world for about a minute, with
everything a compose host meets thrown at it, then checks that nothing leaked and
every tree is sound.

The world: a local bare desired-state repository (the documented default), the sample
upstream over HTTP on 127.0.0.1, ``interval: 3600`` (so every pass is a wake-up the test
caused: a push, the trigger file, ``POST /trigger``, a start), and a lifecycle hook that
leaves a grandchild holding its output. Thrown at it: valid, invalid and
recursive-anchor pushes, upstream changes, a slow-drip upstream, SIGTERM and SIGKILL with
restarts. Measured from ``/proc``: open descriptors, threads and resident memory of the
last process over forty passes after its warm-up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler import testing as su
from reconciler.filelists import TIMELIST_SIG, UNLISTED, parse_timelist
from reconciler.state import StateDB
from reconciler.verifying import verify_tree
from reconciler.vocabulary import Stage

from .conftest import DesiredState, Upstream, wait_until, write_host_config
from .gitrepo import DesiredRepo
from .test_run import Running, running

SECRET = "soak-secret-0123456789abcdef"
CATEGORY = "mirror/pub/sig"
SIG_DIR = f"{CATEGORY}/9/core"
HOOK = """#!/bin/sh
# leaves a grandchild in a new session holding our output: the pass must not wait for it
setsid sleep 30 &
echo $! >>"$(dirname "$0")/grandchildren"
cat >/dev/null
exit 0
"""


def _proc(pid: int) -> tuple[int, int, int]:
    """(open descriptors, threads, resident KiB) of a process, from /proc."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return fds, int(status["Threads"]), int(status["VmRSS"].split()[0])


def _problems(root: Path) -> tuple[str, ...]:
    with StateDB.open(root / "state") as state:
        return state.sources.source().problems


def _trigger(run: Running) -> None:
    headers = {"Authorization": f"Bearer {SECRET}"}
    assert httpx.post(f"{run.base}/trigger", headers=headers, timeout=5).status_code == 202


def _stop(run: Running) -> None:
    run.proc.send_signal(signal.SIGTERM)
    assert run.proc.wait(timeout=60) == 0, "SIGTERM: the loop finishes its pass and exits 0"


@pytest.fixture
def soak_world(
    tmp_path: Path, desired_state: DesiredState, upstream: Upstream
) -> tuple[Path, DesiredRepo]:
    desired_state.write(production=None, staging="latest")
    repo = DesiredRepo(tmp_path / "git", desired_state.path)
    repo.commit("Add SIG core")
    root = tmp_path / "host"
    hooks = root / "hooks"
    hooks.mkdir(parents=True)
    hook = hooks / "post-staging.grandchild"
    hook.write_text(HOOK)
    hook.chmod(0o755)
    (root / "secret").write_text(SECRET + "\n")
    config = write_host_config(
        root,
        upstream.server.base_url,
        interval=3600,
        drift_interval=0,
        git={"url": str(repo.server), "branch": "main", "path": "desired-state"},
        hooks={"dir": str(hooks), "timeout": 2},
        webhook_secret_file=str(root / "secret"),
        download={"workers": 4, "retries": 1, "backoff": 0.01, "timeout": 10, "deadline": 4},
    )
    return config, repo


def test_the_loop_under_a_minute_of_everything(
    soak_world: tuple[Path, DesiredRepo], upstream: Upstream
) -> None:
    config, repo = soak_world
    root = config.parent
    wakeups = passes = 0
    started = time.monotonic()

    # -- process 1: rest, pushes of every kind, an upstream change, SIGTERM ----------------
    with running(config, stop=False) as run:
        wakeups += 1  # the start
        run.wait_passes(1, "the first pass (compose, stage, the hook's timeout)")
        time.sleep(5)
        assert run.passes() == 1, "nothing happened: no second pass"

        with StateDB.open(root / "state") as state:
            held = state.targets.get("core", "9", Stage.STAGING)
        assert held is not None
        repo.set_release(production=held.compose_id)
        repo.commit("Promote to production")
        wakeups += 1
        run.wait_passes(2, "a pass woken by a valid push")

        repos = repo.release()["repos"]
        repos["core-infra"]["arches"].append("mips")
        repo.set_release(repos=repos)
        bad = repo.commit("An unknown arch")
        wakeups += 1
        run.wait_passes(3, "a pass woken by an invalid push")
        assert any("unknown arch 'mips'" in p for p in _problems(root))

        repo.git("revert", "--no-edit", bad)
        repo.sig_file.write_text("sig: core\nreleases: &loop\n  x: *loop\n")
        repo.commit("A recursive anchor")
        wakeups += 1
        run.wait_passes(4, "a pass woken by a recursive-anchor push")
        assert run.proc.poll() is None
        assert any("InvalidSpec" in p for p in _problems(root)), _problems(root)

        repo.git("checkout", "-q", "HEAD~1", "--", ".")
        repo.commit("Back to the good spec")
        wakeups += 1
        run.wait_passes(5, "a pass woken by the repair push")
        assert _problems(root) == ()

        su.add_packages(
            upstream.repo_dir("core-common", "x86_64"),
            [su.sample_rpm("sig-hello-1.1-1.x86_64.rpm")],
        )
        _trigger(run)
        wakeups += 1
        run.wait_passes(6, "a pass woken by POST /trigger (a new compose, staged)")
        time.sleep(2)
        assert run.passes() == 6
        hooks = [e for e in run.log.events if e.get("hook") == "post-staging.grandchild"]
        assert len(hooks) == 2 and all(e["event"] == "hook.ok" for e in hooks), hooks
        passes += run.passes()
        _stop(run)

    # -- process 2: a slow upstream, then SIGKILL in the middle of a compose -------------
    with running(config, stop=False) as run:
        wakeups += 1
        run.wait_passes(1, "the first pass after a restart")
        su.add_packages(
            upstream.repo_dir("core-common", "aarch64"),
            [su.sample_rpm("sig-hello-1.1-1.aarch64.rpm")],
        )
        slow = upstream.path("core-common", "aarch64", "Packages/sig-hello-1.1-1.aarch64.rpm")
        upstream.server.drip(slow, 0.2, times=1)  # a byte every 0.2 s: an hour for the package
        (run.state_dir / "trigger").touch()
        wakeups += 1
        run.wait_passes(2, "a pass that gave up on a slow-drip upstream at the deadline", 30)
        assert run.passes("failed") == 1, "the compose was DOOMED at the download's deadline"
        debug = "sig-hello-debuginfo-1.1-1.aarch64.rpm"
        su.add_packages(upstream.repo_dir("core-common", "aarch64-debug"), [su.sample_rpm(debug)])
        package = upstream.path("core-common", "aarch64-debug", f"Packages/{debug}")
        upstream.server.delay(package, 5.0, times=1)
        (run.state_dir / "trigger").touch()
        wakeups += 1
        wait_until(lambda: package in upstream.server.requests, run.proc, "the compose's download")
        passes += run.passes() + 1  # the killed pass was a wake-up too
        run.proc.kill()
        run.proc.wait()

    # -- process 3: finishes the job, then forty passes measured for leaks ---------------
    with running(config, stop=False) as run:
        wakeups += 1
        run.wait_passes(1, "the first pass after SIGKILL")
        for n in range(2, 5):  # warm-up
            _trigger(run)
            wakeups += 1
            run.wait_passes(n, f"warm-up pass {n}")
        time.sleep(0.5)
        before = _proc(run.proc.pid)
        for n in range(5, 45):
            _trigger(run)
            wakeups += 1
            run.wait_passes(n, f"measured pass {n}")
            time.sleep(0.2)
        time.sleep(0.5)
        after = _proc(run.proc.pid)
        passes += run.passes()
        assert run.passes("failed") == 0, [e for e in run.log.events if e.get("level") == "error"]
        _stop(run)

    seconds = time.monotonic() - started
    summary: dict[str, Any] = {
        "seconds": round(seconds, 1),
        "wakeups": wakeups,
        "passes": passes,
        "fds": (before[0], after[0]),
        "threads": (before[1], after[1]),
        "rss_kib": (before[2], after[2]),
    }
    print(f"soak: {summary}")
    assert passes == wakeups, summary
    assert after[0] <= before[0], f"descriptors leaked: {summary}"
    assert after[1] <= before[1], f"threads leaked: {summary}"
    assert after[2] <= before[2] * 1.10, f"resident memory grew over 10%: {summary}"

    # -- every tree is sound, the file lists match production ----------------------------
    for stage in ("staging", "production"):
        report = verify_tree(root / stage)
        assert report.ok, (stage, [str(p) for p in report.problems])
    for compose in sorted((root / "compose" / "9").glob("SIG-core-9-*")):
        if (compose / "STATUS").read_text() == "FINISHED\n":
            assert verify_tree(compose / "compose").ok, compose
    lists = root / "production" / CATEGORY
    entries, _sums = parse_timelist((lists / TIMELIST_SIG).read_text())
    listed = {e.path for e in entries if e.kind == "f"}
    on_disk = {
        str(p.relative_to(lists))
        for p in lists.rglob("*")
        if p.is_file() and p.name not in UNLISTED and not p.name.startswith(".")
    }
    assert listed == on_disk, listed ^ on_disk
    with StateDB.open(root / "state") as state:
        state.check()
        assert not state.history.running(), "no action left running"


@pytest.fixture(autouse=True)
def _no_grandchild_left(tmp_path: Path) -> Iterator[None]:
    yield
    pids = tmp_path / "host" / "hooks" / "grandchildren"
    for pid in pids.read_text().split() if pids.exists() else ():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
