"""``reconciler run``: one pass, the loop waking on its trigger file, a clean SIGTERM."""

from __future__ import annotations

import random
import signal
from pathlib import Path
from typing import Any

import yaml

from reconciler.running import MAX_BACKOFF, next_delay
from reconciler.state import StateDB
from reconciler.vocabulary import Stage

from .conftest import DesiredState, Host, reconciler_process, wait_until


def test_run_once_converges(cli: Any, host: Host, desired_state: DesiredState) -> None:
    args = ("--config", host.config_path, "--desired-state", desired_state.path)
    assert cli("run", "--once", *args).code == 0
    assert cli("plan", *args).code == 0


def test_delays_have_jitter_and_back_off() -> None:
    rng = random.Random(1)
    assert all(270 <= next_delay(300, 0, rng) <= 330 for _ in range(50))
    assert next_delay(300, 1, rng) < next_delay(300, 4, rng) <= 330
    assert next_delay(10**6, 50, rng) <= MAX_BACKOFF * 1.1


def last_update(state_dir: Path) -> str:
    with StateDB.open(state_dir) as state:
        return max((s.updated_at.isoformat() for s in state.targets.statuses()), default="")


def test_loop_wakes_on_trigger_and_stops_on_sigterm(
    host: Host, desired_state: DesiredState
) -> None:
    conf = yaml.safe_load(host.config_path.read_text())
    conf["interval"] = 3600
    host.config_path.write_text(yaml.safe_dump(conf))
    state_dir = Path(conf["state_dir"])
    proc = reconciler_process("run", "--config", host.config_path, "--desired-state",
                              desired_state.path)  # fmt: skip
    try:
        wait_until(lambda: bool(last_update(state_dir)), proc, "the first pass")
        first = last_update(state_dir)
        (state_dir / "trigger").touch()
        wait_until(lambda: last_update(state_dir) != first, proc, "a pass woken by the trigger")
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err


def test_sigterm_finishes_the_current_action_then_exits(
    host: Host, desired_state: DesiredState, upstream: Any
) -> None:
    path = upstream.path("core-common", "aarch64", "Packages/sig-tools-2.0-1.aarch64.rpm")
    upstream.server.delay(path, 2.0)
    proc = reconciler_process("run", "--config", host.config_path, "--desired-state",
                              desired_state.path)  # fmt: skip
    try:
        wait_until(lambda: path in upstream.server.requests, proc, "the compose's downloads")
        proc.send_signal(signal.SIGTERM)  # mid-compose
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    (compose,) = (host.compose_root / "9").glob("SIG-core-9-*")
    assert (compose / "STATUS").read_text() == "FINISHED\n", "the running compose finished"
    with StateDB.open(Path(yaml.safe_load(host.config_path.read_text())["state_dir"])) as state:
        assert [h.action for h in state.history.entries()] == ["compose"], (
            "nothing after it started"
        )
        assert state.targets.get("core", "9", Stage.STAGING) is None
