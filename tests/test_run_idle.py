"""``reconciler run`` with nothing to do: a pass woken by ``POST /trigger`` is counted in
/metrics (passes and their durations), does nothing, and leaves the daemon's open
descriptors and threads where they were (what a week of idle passes must not grow)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import DesiredState, Host, Upstream, write_host_config
from .gitrepo import DesiredRepo
from .test_run import Running, running

SECRET = "idle-secret-0123456789abcdef"
IDLE_PASSES = 12


def _fds_threads(pid: int) -> tuple[int, int]:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return len(os.listdir(f"/proc/{pid}/fd")), int(status["Threads"])


def _settled(pid: int, at_most: tuple[int, int] | None = None) -> tuple[int, int]:
    """Descriptors and threads once the HTTP connections the test made are closed on the
    daemon's side too (waitress closes them after the response, in its own time)."""
    deadline = time.monotonic() + 5
    time.sleep(0.3)
    now = _fds_threads(pid)
    while at_most is not None and now > at_most and time.monotonic() < deadline:
        time.sleep(0.1)
        now = _fds_threads(pid)
    return now


def _trigger(run: Running) -> None:
    headers = {"Authorization": f"Bearer {SECRET}"}
    assert httpx.post(f"{run.base}/trigger", headers=headers, timeout=5).status_code == 202


def _durations(run: Running) -> int:
    body = httpx.get(f"{run.base}/metrics", timeout=5).text
    found = re.search(r"^reconciler_pass_duration_seconds_count ([0-9.e+]+)$", body, re.M)
    assert found is not None, body
    return int(float(found.group(1)))


@pytest.fixture
def idle_world(tmp_path: Path, desired_state: DesiredState, upstream: Upstream) -> Path:
    desired_state.write(production=None, staging="latest")
    repo = DesiredRepo(tmp_path / "git", desired_state.path)
    repo.commit("Add SIG core")
    root = tmp_path / "host"
    root.mkdir()
    (root / "secret").write_text(SECRET + "\n")
    return write_host_config(
        root, upstream.server.base_url, interval=3600,
        git={"url": str(repo.server), "branch": "main", "path": "desired-state"},
        webhook_secret_file=str(root / "secret"),
    )  # fmt: skip


def test_idle_passes_are_counted_and_leak_no_descriptor_or_thread(idle_world: Path) -> None:
    with running(idle_world) as run:
        run.wait_passes(1, "the first pass (compose, stage)")
        for n in (2, 3):  # warm-up: every lazy import and pooled connection made
            _trigger(run)
            run.wait_passes(n, f"warm-up pass {n}")
        before = _settled(run.proc.pid)
        for n in range(4, 4 + IDLE_PASSES):
            _trigger(run)
            run.wait_passes(n, f"idle pass {n}")
        after = _settled(run.proc.pid, before)
        total = 3 + IDLE_PASSES
        assert run.passes("ok") == total and run.passes("failed") == 0
        assert _durations(run) == total, "every pass observed in reconciler_pass_duration_seconds"
        done = [e for e in run.log.events if e.get("event") == "pass.done"]
        assert len(done) == total
        idle = [e["message"] for e in done[3:]]
        assert all("0 action(s)" in m for m in idle), idle
    assert after[0] <= before[0], f"descriptors grew: {before} -> {after}"
    assert after[1] <= before[1], f"threads grew: {before} -> {after}"


def test_the_loop_takes_an_unchanged_desired_state_from_the_record_cache(
    cli: Any,
    host: Host,
    desired_state: DesiredState,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each of the loop's passes parsed and validated the desired state again (about 1.7 ms
    of an idle pass's 10): it now uses the record cache as the other commands do."""
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("RECONCILER_CACHE_DIR", str(cache_dir))
    args = ("--config", host.config_path, "--desired-state", desired_state.path)
    assert cli("run", "--once", *args).code == 0
    assert len(list(cache_dir.glob("spec-*.json"))) == 1, sorted(cache_dir.iterdir())
