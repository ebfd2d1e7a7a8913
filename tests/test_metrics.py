"""``run`` serves /metrics, /healthz and an authenticated POST /trigger; logs are JSON lines."""

from __future__ import annotations

import json
import os
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
def running_process(
    host: Host, desired_state: DesiredState, tmp_path: Path
) -> Iterator[tuple[str, Reader, subprocess.Popen[str]]]:
    configure(host, tmp_path)
    proc = reconciler_process("run", "--config", host.config_path, "--desired-state",
                              desired_state.path)  # fmt: skip
    assert proc.stderr is not None
    reader = Reader(proc.stderr)
    try:
        address = reader.wait_for("metrics.listening")["address"]
        yield f"http://{address}", reader, proc
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
        reader.join(timeout=5)
        proc.stderr.close()


@pytest.fixture
def running(running_process: tuple[str, Reader, subprocess.Popen[str]]) -> tuple[str, Reader]:
    base, reader, _proc = running_process
    return base, reader


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


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def closed_or_answered(sock: socket.socket) -> bool:
    """True when the server closed ``sock`` or wrote something on it (without waiting)."""
    try:
        sock.recv(1024, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


def test_idle_and_slow_connections_are_capped_and_closed(
    running_process: tuple[str, Reader, subprocess.Popen[str]],
) -> None:
    base, _reader, proc = running_process
    wait_for_pass(base)
    time.sleep(0.5)
    baseline = threads(proc.pid)
    address = base.removeprefix("http://").rsplit(":", 1)
    where = (address[0], int(address[1]))

    slow = socket.create_connection(where)  # sends a byte now and then, never a whole request
    stop = threading.Event()

    def dribble() -> None:
        for byte in b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 200:
            if stop.wait(0.5):
                return
            try:
                slow.send(bytes([byte]))
            except OSError:
                return

    dribbler = threading.Thread(target=dribble, daemon=True)
    dribbler.start()
    idle = [socket.create_connection(where) for _ in range(100)]
    try:
        time.sleep(2)
        held = sum(1 for s in idle if not closed_or_answered(s))
        assert held <= 64, f"{held} idle connections held"
        assert threads(proc.pid) <= baseline + 64, "no more than 64 connection threads"
        # the request timeout (10 s) is a deadline for the whole request, not per read
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
            threads(proc.pid) <= baseline and closed_or_answered(slow)
        ):
            time.sleep(0.2)
        assert threads(proc.pid) <= baseline, f"{threads(proc.pid)} threads, {baseline} before"
        assert closed_or_answered(slow), "a request sent a byte at a time is cut off"
        assert all(closed_or_answered(s) for s in idle)
    finally:
        stop.set()
        for s in [slow, *idle]:
            s.close()
        dribbler.join(timeout=5)
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200


def raw_request(base: str, request: bytes) -> bytes:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    ("length", "status"),
    [("abc", b"400"), ("-1", b"400"), ("1e3", b"400"), ("2, 2", b"400"), ("100000000", b"413")],
)
def test_a_bad_content_length_is_answered_at_once(
    running: tuple[str, Reader], length: str, status: bytes
) -> None:
    base, _reader = running
    request = (
        f"POST /trigger HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    answer = raw_request(base, request)
    assert answer.split(b"\r\n", 1)[0].split(b" ")[1] == status, answer
    assert time.monotonic() - started < 5
    body = b'{"event":"push"}'
    ok = (
        f"POST /trigger HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    assert raw_request(base, ok).startswith(b"HTTP/1.0 202"), "the server still answers"
