"""``reconciler run``: the loop — fetch git, plan, apply, sleep.

Sleeps ``interval`` seconds with +-10% jitter between passes; wakes early when
the trigger file (``<state_dir>/trigger``) is touched or a push moves the
branch of a desired-state repository on this host (watched with watchdog; a
remote URL is polled at ``interval``); backs off after failures; on SIGTERM or
SIGINT lets the current action finish, then exits cleanly.

Only what a push or a touch writes wakes the loop: the branch's ref file
(``refs/heads/<branch>``), ``packed-refs`` and ``reftable/tables.list`` of
that repository, and the trigger file. Opens, reads and closes without a write
are ignored (each pass's own ``git fetch`` reads the repository), and a burst
of writes is one wake-up (:class:`Debounce`).

Every pass ends in a recorded result: an error it did not expect (a bug, or a
world it was not written for) is logged with its traceback (``pass.failed``),
counted as a failed pass, and retried after the back-off, like any other
failure. The loop itself only ends on SIGTERM or SIGINT.

Several ``run`` processes may share one state (:mod:`.leadership`): each pass, the one
that holds the leader lease applies (today's pass, fenced by the lease: it stops when
the lease is no longer valid); the others follow: they observe and plan, record
nothing a leader owns (statuses, history, the last pass) and take compose jobs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from .composejobs import work_queued
from .diffing import package_diffs
from .errors import ReconcilerError
from .hostconfig import HostConfig
from .leadership import lease_for
from .metrics import Metrics, read_secret
from .observing import unmanaged_summaries
from .packagediff import PackageDiff
from .propagation import standings
from .reconciling import PassResult, load_source, observe_and_plan, open_state, run_pass
from .state import PassRecord, StateDB
from .vocabulary import (
    ActionKind,
    Dialect,
    MirrorState,
    PassOutcome,
    Result,
    Stage,
    TargetState,
)
from .webapp import SitePages, WebServer, make_app

if TYPE_CHECKING:
    from .recordcache import RecordCache

log = logging.getLogger(__name__)

MAX_BACKOFF = 3600.0


#: Event types a write causes (a push renames a ref into place, a touch sets a time).
#: Opened, closed-without-writing and the like come from reads, ours included.
_WRITES = frozenset({"created", "modified", "moved", "closed", "deleted", "attrib"})
#: Seconds of quiet after a burst of writes before the loop wakes.
DEBOUNCE = 0.5
#: Seconds of a burst that never goes quiet after which the loop wakes anyway.
DEBOUNCE_LONGEST = 5.0


class Debounce:
    """Calls ``fire`` once a burst of :meth:`poke` calls has been quiet for ``quiet`` seconds
    (or ``longest`` seconds after the burst began, if it goes on)."""

    def __init__(
        self, fire: Callable[[], None], quiet: float = DEBOUNCE, longest: float = DEBOUNCE_LONGEST
    ) -> None:
        self._fire, self._quiet, self._longest = fire, quiet, longest
        self._lock = threading.Lock()
        self._first = self._last = 0.0
        self._pending = False

    def poke(self) -> None:
        with self._lock:
            self._last = time.monotonic()
            if self._pending:
                return
            self._pending, self._first = True, self._last
        threading.Thread(target=self._wait, name="wake-debounce", daemon=True).start()

    def _wait(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                left = min(self._last + self._quiet, self._first + self._longest) - now
                if left <= 0:
                    self._pending = False
                    break
            time.sleep(left)
        self._fire()


class _Wake(FileSystemEventHandler):
    """Pokes ``poke`` on a write to one of ``files``; ignores reads and every other path."""

    def __init__(self, files: frozenset[str], poke: Callable[[], None]) -> None:
        self.files = files
        self.poke = poke

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type not in _WRITES:
            return
        paths = {os.fsdecode(event.src_path), os.fsdecode(getattr(event, "dest_path", "") or "")}
        if not paths.isdisjoint(self.files):
            self.poke()


def trigger_file(host: HostConfig) -> Path:
    return host.layout.trigger


def next_delay(interval: float, failures: int, rng: random.Random) -> float:
    """Seconds to sleep: the interval with jitter, or exponential backoff after failures."""
    if failures:
        base = min(MAX_BACKOFF, interval, 5.0 * 2.0 ** (failures - 1))
        return float(base * rng.uniform(0.9, 1.1))
    return float(interval * rng.uniform(0.9, 1.1))


def local_git_dir(url: str) -> Path | None:
    """The git directory of a desired-state repository on this host; None for a remote URL."""
    path = Path(url.removeprefix("file://"))
    if not path.is_absolute() and "://" in url:
        return None
    if (path / ".git").is_dir():
        return (path / ".git").resolve()
    return path.resolve() if path.is_dir() else None


@dataclass(frozen=True)
class Watches:
    """What wakes the loop: writes to ``files``, seen by watching ``dirs`` (path: recursive)."""

    dirs: dict[Path, bool]
    files: frozenset[str]


def watches(host: HostConfig) -> Watches:
    """The trigger file, and for a local repository what a push of the branch writes."""
    trigger = trigger_file(host).resolve()
    dirs = {trigger.parent: False}
    files = {trigger}
    git_dir = local_git_dir(host.git.url) if host.git is not None else None
    if host.git is not None and git_dir is not None:
        branch = host.git.branch
        heads = git_dir / "refs" / "heads"
        reftable = git_dir / "reftable"
        files |= {heads.joinpath(*branch.split("/")), git_dir / "packed-refs",
                  reftable / "tables.list"}  # fmt: skip
        dirs[git_dir] = False
        if heads.is_dir():  # a branch a/b lives in refs/heads/a/, which a push may create
            dirs[heads] = "/" in branch
        if reftable.is_dir():
            dirs[reftable] = False
    return Watches(dirs, frozenset(str(f) for f in files))


class Loop:
    def __init__(
        self, host: HostConfig, spec_dir: Path | None = None, cache: RecordCache | None = None
    ) -> None:
        self.host = host
        self.spec_dir = spec_dir
        #: validated desired states by the digest of their bytes: a pass whose files did
        #: not change takes the spec from here instead of parsing and validating it again
        self.cache = cache
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.failures = 0
        #: what the actions the last pass could not finish would ship (the status page)
        self.pending_diffs: tuple[PackageDiff, ...] = ()
        self.metrics = Metrics()
        #: the leader lease; ``leading``: whether this process led its last pass
        self.lease = lease_for(host, self.stop)
        self.leading = False
        self.rng = random.Random()  # noqa: S311 - jitter, not security

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.warning("signal %d: finishing the current action, then exiting", signum)
        self.stop.set()
        self.wake.set()

    def one_pass(self) -> bool:
        """One pass, whatever happens in it: True when it converged, else False (recorded)."""
        started = time.monotonic()
        self.leading = False
        try:
            with open_state(self.host) as state, self.lease.lead(state) as leading:
                self.leading = leading
                if leading:
                    result = run_pass(
                        self.host, state, apply=True, spec_dir=self.spec_dir, stop=self.stop,
                        cache=self.cache, fence=self.lease.valid,
                    )  # fmt: skip
                else:
                    result = self._follow(state)
                statuses = [(s.sig, s.release, s.stage, s.state) for s in state.targets.statuses()]
                category = result.source.spec.defaults.publish.category
                self.metrics.set_unmanaged(
                    (k.sig, k.release, k.stage, u.files, u.bytes)
                    for k, u in unmanaged_summaries(state, category).items()
                )
                self.metrics.set_mirrors(
                    (t.mirror, t.sig, t.release, t.state is MirrorState.CURRENT,
                     t.lag.total_seconds() if t.lag is not None else 0.0)
                    for t in standings(state, [m.name for m in self.host.mirrors])
                )  # fmt: skip
                self._show_leader(state)
                if leading:
                    self._keep_pass_in(state, result.ok, time.monotonic() - started)
        except ReconcilerError as exc:
            log.error("pass failed: %s", exc, extra={"event": "pass.failed"})
            error = str(exc)
        except Exception as exc:  # a bug or a surprise: recorded and retried, never a crash loop
            error = f"{type(exc).__name__}: {exc}"
            log.error("pass failed unexpectedly: %s", error, exc_info=True,
                      extra={"event": "pass.failed", "unexpected": True})  # fmt: skip
        else:
            self.pending_diffs = self._pending_diffs(result)
            self._record(result, statuses, time.monotonic() - started, None, kept=True)
            log.info(
                "pass done: %d action(s), %s", len(result.plan.actions),
                PassOutcome.OK if result.ok else PassOutcome.FAILED,
                extra={"event": "pass.done", "ok": result.ok, "revision": result.source.revision},
            )  # fmt: skip
            return result.ok
        self._record(None, [], time.monotonic() - started, error)
        return False

    def _record(
        self,
        result: PassResult | None,
        statuses: list[tuple[str, str, Stage, TargetState]],
        seconds: float,
        error: str | None,
        kept: bool = False,
    ) -> None:
        """The pass in the metrics (and in the state, unless ``kept`` there already)."""
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
        if not kept and self.leading:
            self._keep_pass(PassRecord(datetime.now(UTC), round(seconds, 3), ok, error))
        if self.host.metrics.textfile is not None:
            try:
                m.write_textfile(self.host.metrics.textfile)
            except OSError as exc:
                log.warning("cannot write %s: %s", self.host.metrics.textfile, exc)

    def _follow(self, state: StateDB) -> PassResult:
        """A follower's pass: observe and plan (nothing recorded), then work compose jobs."""
        source = load_source(self.host, state, self.spec_dir, self.cache)
        plan, _learned = observe_and_plan(self.host, state, source)
        log.info("following: %d action(s) planned, the leader applies them",
                 len(plan.actions), extra={"event": "pass.follow"})  # fmt: skip
        self._work_jobs(state)
        return PassResult(source, plan)

    def _work_jobs(self, state: StateDB) -> None:
        """A follower takes the queued compose jobs (the leader's plans submit them), until
        none is left or ``stop`` is set; a job that failed is the job's (it is recorded
        there and the leader's compose action fails with it), not this pass's."""
        work_queued(self.host, state, self.spec_dir, self.cache, self.stop)

    def _show_leader(self, state: StateDB) -> None:
        """Who leads, in the metrics (a lease past its expiry is shown as no leader)."""
        held = state.leases.current()
        live = held if held is not None and held.live(state.clock()) else None
        self.metrics.set_leader(live, self.leading)
        self.metrics.set_jobs(state.jobs.counts())  # the queue, as every process sees it

    @staticmethod
    def _keep_pass_in(state: StateDB, ok: bool, seconds: float) -> None:
        """The pass, kept in its own connection to the state: opening the state again to
        write this one row cost as much as the rest of an idle pass's state work (its
        checkpoint on closing). A failure to write it is only logged."""
        try:
            state.history.record_pass(PassRecord(datetime.now(UTC), round(seconds, 3), ok, None))
        except ReconcilerError as exc:
            log.warning("cannot keep the last pass in the state: %s", exc)

    def _keep_pass(self, record: PassRecord) -> None:
        """The last pass, for the exported status page; a state that cannot be opened
        (the very reason the pass failed, maybe) is only logged."""
        if self.host.state.dialect is Dialect.SQLITE and not self.host.layout.database.exists():
            return
        try:
            with StateDB.connect(self.host, create=False) as state:
                state.history.record_pass(record)
        except ReconcilerError as exc:
            log.warning("cannot keep the last pass in the state: %s", exc)

    def _pending_diffs(self, result: PassResult) -> tuple[PackageDiff, ...]:
        """The package diffs of the actions the pass did not finish (failed, skipped):
        what merging the desired state still has to ship. Never fails the pass."""
        applied = result.applied.results if result.applied is not None else ()
        pending = tuple(r.action for r in applied if r.result is not Result.OK)
        if not pending:
            return ()
        try:
            return package_diffs(self.host, dataclasses.replace(result.plan, actions=pending))
        except Exception as exc:  # a page extra: reported, never the loop's failure
            log.warning("package diffs of the pending actions: %s", exc)
            return ()

    def _serve(self) -> WebServer | None:
        if not self.host.metrics.listen:
            return None
        secret = read_secret(self.host.webhook_secret_file)
        pages = SitePages(self.host, lambda: self.metrics.last_pass, lambda: self.pending_diffs)
        app = make_app(self.metrics, secret, self.wake.set, pages)
        server = WebServer(self.host.metrics.listen, app).start()
        log.info("serving the status page, /metrics, /healthz and /trigger on %s", server.address,
                 extra={"event": "metrics.listening", "address": server.address})  # fmt: skip
        return server

    def _watch(self) -> BaseObserver | None:
        """Start watching what a push or a touch of the trigger file writes (None: cannot)."""
        plan = watches(self.host)
        handler = _Wake(plan.files, Debounce(self.wake.set).poke)
        observer = Observer()
        try:
            for directory, recursive in plan.dirs.items():
                observer.schedule(handler, str(directory), recursive=recursive)
            observer.start()
        except OSError as exc:  # e.g. out of inotify watches: the interval still holds
            log.warning("cannot watch for pushes and the trigger file (%s); a pass runs every %ds",
                        exc, self.host.interval, extra={"event": "watch.failed"})  # fmt: skip
            return None
        log.info("waking on writes to %s", ", ".join(sorted(plan.files)),
                 extra={"event": "watch.start", "files": sorted(plan.files)})  # fmt: skip
        return observer

    def run(self, once: bool = False) -> int:
        self.host.state_dir.mkdir(parents=True, exist_ok=True)
        if once:
            try:
                return 0 if self.one_pass() else 1
            finally:
                self.lease.close()
        server = self._serve()  # fails fast, before anything else, if the port is taken
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        observer = None
        try:
            observer = self._watch()
            while not self.stop.is_set():
                self.wake.clear()
                try:
                    ok = self.one_pass()
                except Exception:  # recording the pass failed: still never end the loop
                    log.exception("pass failed", extra={"event": "pass.failed"})
                    ok = False
                self.failures = 0 if ok else self.failures + 1
                delay = next_delay(self.host.interval, self.failures, self.rng)
                if self.host.mirrors and self.host.mirror_check_interval:
                    # the mirrors are checked at the end of a pass, when their check is due
                    delay = min(delay, float(self.host.mirror_check_interval))
                log.info("next pass in %.0fs", delay)
                self.wake.wait(delay)
        finally:
            self.lease.close()
            if observer is not None:
                observer.stop()
                observer.join()
            if server is not None:
                server.stop()
            for s, handler in old.items():
                signal.signal(s, handler)
        return 0
