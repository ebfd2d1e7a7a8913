"""A pass inside a running ``reconciler run``: no interpreter start-up, no imports, the
loop's own state. The daemon runs with the world's host config plus a listener on a free
port of 127.0.0.1, a webhook secret and a day-long interval (so only the bench's
``POST /trigger`` starts a pass). A pass's time is the delta of the
``reconciler_pass_duration_seconds`` histogram's sum across the pass (what the loop
measures around ``one_pass``: lock, state, plan, apply, record); the wall time from the
trigger until ``/metrics`` shows the pass counted is kept beside it."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from procs import RECONCILER, ROOT
from servers import _free_port

#: How often /metrics is read while a pass runs (each read is a little of the daemon's CPU).
POLL = 0.02


class DaemonFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class PassTime:
    seconds: float  # the histogram's sum delta: the pass as the loop measured it
    wall: float  # trigger sent -> the pass counted on /metrics (includes polling)
    ok: bool


def _metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


class Daemon:
    """``python -m reconciler.cli run`` on a world's host; :meth:`stop` always ends it."""

    def __init__(self, config: Path, desired_state: Path, workdir: Path, env: dict[str, str]):
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        conf: dict[str, Any] = yaml.safe_load(config.read_text())
        self.port = _free_port()
        self.secret = secrets.token_hex(16)
        secret_file = self.dir / "webhook-secret"
        secret_file.write_text(self.secret + "\n")
        secret_file.chmod(0o600)
        conf.update(
            interval=86400,
            metrics={"listen": f"127.0.0.1:{self.port}"},
            webhook_secret_file=str(secret_file),
        )
        self.config = self.dir / "daemon-config.yaml"
        self.config.write_text(yaml.safe_dump(conf))
        self.desired_state = desired_state
        self.env = env
        self.log = self.dir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 600.0) -> PassTime:
        """Start the loop and wait for its first pass (it converges the host)."""
        cmd = [*RECONCILER, "run", "--config", str(self.config)]
        cmd += ["--desired-state", str(self.desired_state)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env, cwd=ROOT,
            )  # fmt: skip
        started = time.perf_counter()
        return self._wait_pass(0.0, 0.0, 0.0, started, timeout)

    def _read(self) -> dict[str, float]:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as r:  # noqa: S310
            return _metrics(r.read().decode())

    def _counts(self) -> tuple[float, float, float]:
        m = self._read()
        return (
            m.get("reconciler_pass_duration_seconds_sum", 0.0),
            m.get("reconciler_pass_duration_seconds_count", 0.0),
            m.get('reconciler_passes_total{result="ok"}', 0.0),
        )

    def _wait_pass(
        self, total: float, count: float, oks: float, started: float, timeout: float
    ) -> PassTime:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise DaemonFailed(f"reconciler run exited; see {self.log}:\n{self._tail()}")
            try:
                s, c, ok = self._counts()
            except OSError:  # not listening yet
                time.sleep(POLL)
                continue
            if c > count:
                wall = time.perf_counter() - started
                return PassTime(s - total, wall, ok > oks)
            time.sleep(POLL)
        raise DaemonFailed(f"no pass within {timeout:.0f}s; see {self.log}:\n{self._tail()}")

    def trigger(self, timeout: float = 900.0) -> PassTime:
        """``POST /trigger``, then wait until the pass it started is counted."""
        total, count, oks = self._counts()
        req = urllib.request.Request(  # noqa: S310
            f"{self.url}/trigger",
            data=b"",
            method="POST",
            headers={"Authorization": f"Bearer {self.secret}"},
        )
        started = time.perf_counter()
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310
            if r.status != 202:
                raise DaemonFailed(f"POST /trigger answered {r.status}")
        return self._wait_pass(total, count, oks, started, timeout)

    def peak_rss_kb(self) -> int:
        if self.proc is None:
            return -1
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return -1

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM (the loop finishes its action and exits), then SIGKILL after 60 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def daemon_env(cache_dir: Path) -> dict[str, str]:
    return dict(os.environ, RECONCILER_CACHE_DIR=str(cache_dir))
