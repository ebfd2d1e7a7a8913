"""``reconciler run``: the loop — fetch git, plan, apply, sleep.

Sleeps ``interval`` seconds with +-10% jitter between passes; wakes early when
the trigger file (``<state_dir>/trigger``) or a local desired-state repository
changes (watched with watchdog); backs off after failures; on SIGTERM or
SIGINT lets the current action finish, then exits cleanly.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from pathlib import Path
from types import FrameType

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from .errors import ReconcilerError
from .hostconfig import HostConfig
from .metrics import Metrics, MetricsServer, read_secret
from .reconciling import PassResult, apply_lock, open_state, run_pass
from .vocabulary import ActionKind, PassOutcome, Result, Stage, TargetState

log = logging.getLogger(__name__)

MAX_BACKOFF = 3600.0


class _Wake(FileSystemEventHandler):
    """Sets ``event`` on any change, or only on changes to ``only`` when given."""

    def __init__(self, event: threading.Event, only: Path | None = None) -> None:
        self.event = event
        self.only = str(only) if only else None

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = {str(event.src_path), str(getattr(event, "dest_path", "") or "")}
        if self.only is None or self.only in paths:
            self.event.set()


def trigger_file(host: HostConfig) -> Path:
    return host.layout.trigger


def next_delay(interval: float, failures: int, rng: random.Random) -> float:
    """Seconds to sleep: the interval with jitter, or exponential backoff after failures."""
    if failures:
        base = min(MAX_BACKOFF, interval, 5.0 * 2.0 ** (failures - 1))
        return float(base * rng.uniform(0.9, 1.1))
    return float(interval * rng.uniform(0.9, 1.1))


def _watches(host: HostConfig) -> list[tuple[Path, Path | None]]:
    """``(directory, only this file or None)`` pairs to watch."""
    watches: list[tuple[Path, Path | None]] = [(host.state_dir, trigger_file(host))]
    if host.git is not None:
        local = Path(host.git.url.removeprefix("file://"))
        if local.is_dir():
            watches.append((local, None))
    return watches


class Loop:
    def __init__(self, host: HostConfig, spec_dir: Path | None = None) -> None:
        self.host = host
        self.spec_dir = spec_dir
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.failures = 0
        self.metrics = Metrics()
        self.rng = random.Random()  # noqa: S311 - jitter, not security

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.warning("signal %d: finishing the current action, then exiting", signum)
        self.stop.set()
        self.wake.set()

    def one_pass(self) -> bool:
        started = time.monotonic()
        try:
            with apply_lock(self.host), open_state(self.host) as state:
                result = run_pass(
                    self.host, state, apply=True, spec_dir=self.spec_dir, stop=self.stop
                )
                statuses = [(s.sig, s.release, s.stage, s.state) for s in state.targets.statuses()]
        except ReconcilerError as exc:
            log.error("pass failed: %s", exc, extra={"event": "pass.failed"})
            self._record(None, [], time.monotonic() - started, str(exc))
            return False
        self._record(result, statuses, time.monotonic() - started, None)
        log.info(
            "pass done: %d action(s), %s", len(result.plan.actions),
            PassOutcome.OK if result.ok else PassOutcome.FAILED,
            extra={"event": "pass.done", "ok": result.ok, "revision": result.source.revision},
        )  # fmt: skip
        return result.ok

    def _record(
        self,
        result: PassResult | None,
        statuses: list[tuple[str, str, Stage, TargetState]],
        seconds: float,
        error: str | None,
    ) -> None:
        m = self.metrics
        ok = result is not None and result.ok
        m.passes.labels(PassOutcome.OK if ok else PassOutcome.FAILED).inc()
        m.pass_duration.observe(seconds)
        if ok:
            m.last_success.set(time.time())
        if result is not None:
            if any(p.startswith("SourceUnavailable") for p in result.source.problems):
                m.git_fetch_failures.inc()
            for r in result.applied.results if result.applied else ():
                if r.action.kind is ActionKind.COMPOSE:
                    m.compose_duration.labels(r.result).observe(r.seconds)
                elif (
                    r.action.kind is ActionKind.PUBLISH and r.result is Result.OK and r.action.stage
                ):
                    m.published_bytes.labels(r.action.stage.value).inc(r.bytes)
                    m.published_files.labels(r.action.stage.value).inc(r.files)
        m.set_target_states(statuses)
        m.last_pass = {"finished": time.time(), "ok": ok, "seconds": round(seconds, 3),
                       "error": error, "failures": self.failures}  # fmt: skip
        if self.host.metrics.textfile is not None:
            try:
                m.write_textfile(self.host.metrics.textfile)
            except OSError as exc:
                log.warning("cannot write %s: %s", self.host.metrics.textfile, exc)

    def _serve(self) -> MetricsServer | None:
        if not self.host.metrics.listen:
            return None
        secret = read_secret(self.host.webhook_secret_file)
        server = MetricsServer(self.host.metrics.listen, self.metrics, secret, self.wake.set)
        server.start()
        log.info("serving /metrics, /healthz and /trigger on %s", server.address,
                 extra={"event": "metrics.listening", "address": server.address})  # fmt: skip
        return server

    def run(self, once: bool = False) -> int:
        self.host.state_dir.mkdir(parents=True, exist_ok=True)
        if once:
            return 0 if self.one_pass() else 1
        server = self._serve()  # fails fast, before anything else, if the port is taken
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        observer = Observer()
        for path, only in _watches(self.host):
            observer.schedule(_Wake(self.wake, only), str(path), recursive=only is None)
        observer.start()
        try:
            while not self.stop.is_set():
                self.wake.clear()
                ok = self.one_pass()
                self.failures = 0 if ok else self.failures + 1
                delay = next_delay(self.host.interval, self.failures, self.rng)
                log.info("next pass in %.0fs", delay)
                self.wake.wait(delay)
        finally:
            observer.stop()
            observer.join()
            if server is not None:
                server.stop()
            for s, handler in old.items():
                signal.signal(s, handler)
        return 0
