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
from pathlib import Path
from types import FrameType

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from .errors import ReconcilerError
from .hostconfig import HostConfig
from .reconciling import apply_lock, open_state, run_pass

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
    return host.state_dir / "trigger"


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
        self.rng = random.Random()  # noqa: S311 - jitter, not security

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.warning("signal %d: finishing the current action, then exiting", signum)
        self.stop.set()
        self.wake.set()

    def one_pass(self) -> bool:
        try:
            with apply_lock(self.host), open_state(self.host) as state:
                result = run_pass(
                    self.host, state, apply=True, spec_dir=self.spec_dir, stop=self.stop
                )
        except ReconcilerError as exc:
            log.error("pass failed: %s", exc)
            return False
        return result.ok

    def run(self, once: bool = False) -> int:
        self.host.state_dir.mkdir(parents=True, exist_ok=True)
        if once:
            return 0 if self.one_pass() else 1
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
            for s, handler in old.items():
                signal.signal(s, handler)
        return 0
