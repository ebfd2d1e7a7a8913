"""Metrics and health for ``reconciler run``, and the authenticated wake-up.

Served on ``metrics.listen`` (default 127.0.0.1:9090):

* ``GET /metrics``: Prometheus text format (prometheus-client);
* ``GET /healthz``: 200 with the loop's last pass, as JSON;
* ``POST /trigger``: wakes the loop for a git webhook. It needs
  ``Authorization: Bearer <secret>`` (the secret is read from
  ``webhook_secret_file`` and compared in constant time); anything else gets
  401 and triggers nothing. The request body is read and ignored: a wake-up
  carries no instructions.

Each connection carries one request, which must arrive whole within
``REQUEST_TIMEOUT`` seconds (a deadline for the request, not for each read);
at most ``MAX_CONNECTIONS`` are served at once, and one more is answered 503
and closed at once. A ``Content-Length`` that is not a number gets 400, a body
over ``MAX_BODY`` bytes 413.
"""

from __future__ import annotations

import contextlib
import hmac
import http.server
import io
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import write_to_textfile as _write_textfile

from .errors import ConfigError
from .vocabulary import Stage, TargetState

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

#: Seconds a client has to send its whole request (and to take the answer).
REQUEST_TIMEOUT = 10.0
#: Connections served at once; more are refused at once.
MAX_CONNECTIONS = 64
#: Bytes a POST body may have.
MAX_BODY = 64 * 1024
_LENGTH_RE = re.compile(r"[0-9]{1,19}")
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n"
         b"Connection: close\r\n\r\n")  # fmt: skip


class Metrics:
    """The reconciler's metrics, in a registry of their own (no global state)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.pass_duration = Histogram(
            "reconciler_pass_duration_seconds", "Duration of a reconcile pass", registry=r,
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
        )  # fmt: skip
        self.passes = Counter("reconciler_passes", "Reconcile passes by result", ["result"],
                              registry=r)  # fmt: skip
        self.target_state = Gauge(
            "reconciler_target_state", "1 for the current state of each target",
            ["sig", "release", "stage", "state"], registry=r,
        )  # fmt: skip
        self.last_success = Gauge("reconciler_last_success_timestamp_seconds",
                                  "When a pass last converged", registry=r)  # fmt: skip
        self.published_bytes = Counter("reconciler_published_bytes", "Bytes published",
                                       ["stage"], registry=r)  # fmt: skip
        self.published_files = Counter("reconciler_published_files", "Files published",
                                       ["stage"], registry=r)  # fmt: skip
        self.compose_duration = Histogram(
            "reconciler_compose_duration_seconds", "Duration of composes", ["result"],
            registry=r, buckets=(1, 5, 15, 60, 300, 900, 1800, 3600, 7200),
        )  # fmt: skip
        self.git_fetch_failures = Counter("reconciler_git_fetch_failures",
                                          "Failed fetches of the desired-state repository",
                                          registry=r)  # fmt: skip
        self.unmanaged_files = Gauge(
            "reconciler_unmanaged_files",
            "Files under a published target that the reconciler did not publish and keeps "
            "(not drift; publish.unmanaged paths not counted), as its last walk found them",
            ["sig", "release", "stage"], registry=r,
        )  # fmt: skip
        self.unmanaged_bytes = Gauge(
            "reconciler_unmanaged_bytes", "Bytes of those unmanaged files",
            ["sig", "release", "stage"], registry=r,
        )  # fmt: skip
        self.mirror_current = Gauge(
            "reconciler_mirror_current",
            "1 when the mirror serves production's newest repomd.xml of every repo of the "
            "SIG release, at its last check; else 0",
            ["mirror", "sig", "release"], registry=r,
        )  # fmt: skip
        self.mirror_lag = Gauge(
            "reconciler_mirror_lag_seconds",
            "How long the mirror has been behind production for the SIG release (its "
            "oldest behind repo); 0 when it is not behind",
            ["mirror", "sig", "release"], registry=r,
        )  # fmt: skip
        self.last_pass: dict[str, Any] = {}

    def set_target_states(self, rows: Iterable[tuple[str, str, Stage, TargetState]]) -> None:
        """``(sig, release, stage, state)`` rows: 1 for the state each target is in, else 0."""
        for sig, release, stage, current in rows:
            for state in TargetState:
                self.target_state.labels(sig, release, stage, state).set(
                    1 if state is current else 0
                )

    def set_unmanaged(self, rows: Iterable[tuple[str, str, Stage, int, int]]) -> None:
        """``(sig, release, stage, files, bytes)`` of each published target's unmanaged
        files; a target no longer listed is dropped."""
        self.unmanaged_files.clear()
        self.unmanaged_bytes.clear()
        for sig, release, stage, files, size in rows:
            self.unmanaged_files.labels(sig, release, stage).set(files)
            self.unmanaged_bytes.labels(sig, release, stage).set(size)

    def set_mirrors(self, rows: Iterable[tuple[str, str, str, bool, float]]) -> None:
        """``(mirror, sig, release, current, lag seconds)`` of each mirror and production
        target; one no longer listed is dropped."""
        self.mirror_current.clear()
        self.mirror_lag.clear()
        for mirror, sig, release, current, lag in rows:
            self.mirror_current.labels(mirror, sig, release).set(1 if current else 0)
            self.mirror_lag.labels(mirror, sig, release).set(lag)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def write_textfile(self, path: Path) -> None:
        _write_textfile(str(path), self.registry)


class _DeadlineReader(io.RawIOBase):
    """Reads a socket until ``deadline`` (a ``time.monotonic()`` value), then times out."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock, self._deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: MetricsServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.request_timeout)
        self.rfile.close()  # the whole request within the deadline, however slowly it comes
        deadline = time.monotonic() + self.server.request_timeout
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, deadline))

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
        self.connection.settimeout(self.server.request_timeout)
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/metrics":
            self._send(200, self.server.metrics.render(), "text/plain; version=0.0.4")
        elif self.path == "/healthz":
            body = json.dumps({"status": "ok", **self.server.metrics.last_pass}).encode()
            self._send(200, body, "application/json")
        else:
            self._send(404, b"not found\n")

    def _body_length(self) -> int | None:
        """The declared length of the body; None when it was refused (400 or 413 sent)."""
        values = {v.strip() for v in self.headers.get_all("Content-Length") or []}
        if not values:
            return 0
        value = values.pop()
        if values or not _LENGTH_RE.fullmatch(value):
            self._send(400, b"bad Content-Length\n")
            return None
        if int(value) > MAX_BODY:
            self._send(413, b"request body too large\n")
            return None
        return int(value)

    def do_POST(self) -> None:
        length = self._body_length()
        if length is None:
            return
        self.rfile.read(length)  # read and ignore: a wake-up carries no instructions
        if self.path != "/trigger":
            self._send(404, b"not found\n")
            return
        secret = self.server.secret
        given = self.headers.get("Authorization", "")
        expected = f"Bearer {secret}" if secret else None
        if expected is None or not hmac.compare_digest(given.encode(), expected.encode()):
            self._send(401, b"unauthorized\n")
            return
        self.server.on_trigger()
        self._send(202, b"triggered\n")


class MetricsServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = MAX_CONNECTIONS

    def __init__(self, listen: str, metrics: Metrics, secret: str | None,
                 on_trigger: Callable[[], None], *, request_timeout: float = REQUEST_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS) -> None:  # fmt: skip
        host, _, port = listen.rpartition(":")
        self.metrics, self.secret, self.on_trigger = metrics, secret, on_trigger
        self.request_timeout = request_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        try:
            super().__init__((host.strip("[]") or "127.0.0.1", int(port)), _Handler)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise ConfigError(f"metrics.listen {listen}: cannot listen: {reason}") from exc
        self._thread = threading.Thread(target=self.serve_forever, name="metrics", daemon=True)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a thread of its own, unless ``max_connections`` are busy."""
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):  # a courtesy: the client learns why
                request.setblocking(False)
                request.send(_BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)


def read_secret(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        secret = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"webhook_secret_file {path}: {exc.strerror}") from exc
    if len(secret) < 16:
        raise ConfigError(f"webhook_secret_file {path}: the secret must be 16 characters or more")
    return secret


def now() -> float:
    return time.time()
