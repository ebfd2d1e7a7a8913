"""Metrics and health for ``reconciler run``, and the authenticated wake-up.

Served on ``metrics.listen`` (default 127.0.0.1:9090):

* ``GET /metrics``: Prometheus text format (prometheus-client);
* ``GET /healthz``: 200 with the loop's last pass, as JSON;
* ``POST /trigger``: wakes the loop for a git webhook. It needs
  ``Authorization: Bearer <secret>`` (the secret is read from
  ``webhook_secret_file`` and compared in constant time); anything else gets
  401 and triggers nothing. The request body is read and ignored: a wake-up
  carries no instructions.
"""

from __future__ import annotations

import hmac
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import write_to_textfile as _write_textfile

from .errors import ConfigError
from .vocabulary import Stage, TargetState

_MAX_BODY = 64 * 1024


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
        self.last_pass: dict[str, Any] = {}

    def set_target_states(self, rows: Iterable[tuple[str, str, Stage, TargetState]]) -> None:
        """``(sig, release, stage, state)`` rows: 1 for the state each target is in, else 0."""
        for sig, release, stage, current in rows:
            for state in TargetState:
                self.target_state.labels(sig, release, stage, state).set(
                    1 if state is current else 0
                )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def write_textfile(self, path: Path) -> None:
        _write_textfile(str(path), self.registry)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: MetricsServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
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

    def do_POST(self) -> None:
        length = min(int(self.headers.get("Content-Length") or 0), _MAX_BODY)
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

    def __init__(self, listen: str, metrics: Metrics, secret: str | None,
                 on_trigger: Callable[[], None]) -> None:  # fmt: skip
        host, _, port = listen.rpartition(":")
        self.metrics, self.secret, self.on_trigger = metrics, secret, on_trigger
        try:
            super().__init__((host.strip("[]") or "127.0.0.1", int(port)), _Handler)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise ConfigError(f"metrics.listen {listen}: cannot listen: {reason}") from exc
        self._thread = threading.Thread(target=self.serve_forever, name="metrics", daemon=True)

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
