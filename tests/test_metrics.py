"""``run`` serves /metrics, /healthz and an authenticated POST /trigger; logs are JSON lines."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import yaml

from .conftest import DesiredState, Host, reconciler_process

SECRET = "s3cret-for-the-webhook-0123456789"


def configure(host: Host, tmp_path: Path, **metrics: Any) -> None:
    conf = yaml.safe_load(host.config_path.read_text())
    (tmp_path / "secret").write_text(SECRET + "\n")
    conf.update(
        interval=3600,
        webhook_secret_file=str(tmp_path / "secret"),
        metrics={"listen": "127.0.0.1:0", **metrics},
    )
    host.config_path.write_text(yaml.safe_dump(conf))


class Reader(threading.Thread):
    """Collects the JSON log lines of a process's stderr."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(daemon=True)
        self.stream, self.events = stream, []  # type: ignore[var-annotated]
        self.start()

    def run(self) -> None:
        for line in self.stream:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.events.append({"event": "text", "message": line})

    def wait_for(self, event: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if e.get("event") == event:
                    return e  # type: ignore[no-any-return]
            time.sleep(0.05)
        raise AssertionError(f"no {event} in {self.events}")


@pytest.fixture
def running(
    host: Host, desired_state: DesiredState, tmp_path: Path
) -> Iterator[tuple[str, Reader]]:
    configure(host, tmp_path)
    proc = reconciler_process("run", "--config", host.config_path, "--desired-state",
                              desired_state.path)  # fmt: skip
    assert proc.stderr is not None
    reader = Reader(proc.stderr)
    try:
        address = reader.wait_for("metrics.listening")["address"]
        yield f"http://{address}", reader
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
        reader.join(timeout=5)
        proc.stderr.close()


def finished(base: str) -> float | None:
    return httpx.get(f"{base}/healthz", timeout=5).json().get("finished")  # type: ignore[no-any-return]


def wait_for_pass(base: str, after: float | None = None, timeout: float = 30) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = finished(base)
        if done is not None and (after is None or done > after):
            return done
        time.sleep(0.05)
    raise AssertionError("no pass finished")


def test_metrics_health_and_trigger(running: tuple[str, Reader]) -> None:
    base, reader = running
    first = wait_for_pass(base)
    body = httpx.get(f"{base}/metrics", timeout=5).text
    assert (
        'reconciler_target_state{release="9",sig="core",stage="staging",state="Synced"} 1.0' in body
    )
    assert (
        'reconciler_target_state{release="9",sig="core",stage="staging",state="Failed"} 0.0' in body
    )
    assert "reconciler_pass_duration_seconds_count 1.0" in body
    assert 'reconciler_passes_total{result="ok"} 1.0' in body
    assert "reconciler_last_success_timestamp_seconds" in body
    assert 'reconciler_published_files_total{stage="staging"}' in body
    assert 'reconciler_compose_duration_seconds_count{result="ok"} 1.0' in body
    assert "reconciler_git_fetch_failures_total 0.0" in body
    assert httpx.get(f"{base}/healthz", timeout=5).json()["ok"] is True

    assert httpx.post(f"{base}/trigger", timeout=5).status_code == 401
    wrong = {"Authorization": "Bearer not-the-secret"}
    assert httpx.post(f"{base}/trigger", headers=wrong, timeout=5).status_code == 401
    time.sleep(1)
    assert finished(base) == first, "a rejected call triggered nothing"
    good = {"Authorization": f"Bearer {SECRET}"}
    assert (
        httpx.post(
            f"{base}/trigger", headers=good, content=b'{"event":"push"}', timeout=5
        ).status_code
        == 202
    )
    wait_for_pass(base, after=first)
    # structured logs: one event per action with stable names and fields
    done = [e for e in reader.events if e.get("event") == "action.done"]
    assert {(e["action"], e["stage"]) for e in done} >= {("compose", None), ("publish", "staging")}
    assert all(e["sig"] == "core" and e["release"] == "9" for e in done)


def test_metrics_port_in_use_is_a_clear_error(
    host: Host, desired_state: DesiredState, tmp_path: Path
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        configure(host, tmp_path, listen=f"127.0.0.1:{port}")
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "reconciler.cli",
                "run",
                "--config",
                str(host.config_path),
                "--desired-state",
                str(desired_state.path),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        taken.close()
    assert proc.returncode == 1
    assert f"127.0.0.1:{port}" in proc.stderr and "Address already in use" in proc.stderr


def test_textfile_collector(
    cli: Any, host: Host, desired_state: DesiredState, tmp_path: Path
) -> None:
    prom = tmp_path / "reconciler.prom"
    configure(host, tmp_path, textfile=str(prom))
    assert (
        cli(
            "run", "--once", "--config", host.config_path, "--desired-state", desired_state.path
        ).code
        == 0
    )
    assert (
        'reconciler_target_state{release="9",sig="core",stage="compose",state="Synced"} 1.0'
        in prom.read_text()
    )
