"""Working compose jobs (effects): take a job from the state, compose it, say how it ended.

Any process works the queue: ``reconciler worker``, and an ``apply`` (or a ``run``
pass) while it waits for the composes of its own plan. A job is composed from the
desired state at the revision whose plan wanted it: exported from the host's git
source into ``<state_dir>/revisions/<sha>`` (or ``--desired-state DIR`` when given).

While a compose runs, a heartbeat thread renews the job every ``job_timeout``/3 on a
state connection of its own (a connection is never shared between threads). A worker
that dies (or is cut off) stops heartbeating; after ``job_timeout`` seconds any worker
puts the job back in the queue (:meth:`Jobs.expire`) and the next claim is a new
attempt. Before that attempt composes, the abandoned attempt's directory is marked
DOOMED if it is still STARTED and nobody holds its release's compose lock; the new
attempt allocates a compose ID of its own (composing takes the next respin), so two
workers never write one directory. A worker whose job was taken says so loudly
(``job.lost``): what it composed is not recorded as the job's.
"""

from __future__ import annotations

import logging
import re
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .composemeta import read_status, write_status
from .errors import LockHeldError, ReconcilerError, SourceError, SourceRejected, StateError
from .hostconfig import HostConfig
from .locking import exclusive_lock
from .nodes import is_dead_here, this_process
from .planning import Plan
from .spec import Spec
from .state import ComposeJob, StateDB
from .vocabulary import ActionKind, AttemptOutcome, ComposeStatus, JobState

if TYPE_CHECKING:
    from .progress import Reporter
    from .recordcache import RecordCache

log = logging.getLogger(__name__)

#: Seconds between looks at the queue when nothing can be claimed.
POLL = 1.0
#: Seconds between tries to record a job's end while the state cannot be reached.
FINISH_RETRY = 0.5
#: A full commit id (SHA-1 or SHA-256): the only revisions a job directory is named after.
_FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def own_connection(host: HostConfig) -> StateDB:
    """A state connection of the calling thread's own (the heartbeat's): the one place a
    job worker opens the state, the SQLite file or the PostgreSQL database the host
    config names."""
    return StateDB.connect(host)


def expire_abandoned(host: HostConfig, state: StateDB) -> None:
    """Put the jobs of workers that stopped heartbeating (or were killed on this host: no
    need to wait for the timeout) back in the queue, each abandoned attempt logged."""
    dead = partial(is_dead_here, host)
    for attempt in state.jobs.expire(host.state.job_timeout, dead):
        log.warning(
            "job %d attempt %d of %s abandoned (killed, or silent for %d s); queued again",
            attempt.job, attempt.attempt, attempt.worker, host.state.job_timeout,
            extra={"event": "job.expired", "job": attempt.job, "attempt": attempt.attempt,
                   "worker": attempt.worker, "compose_id": attempt.compose_id},
        )  # fmt: skip


def submit_composes(
    state: StateDB, plan: Plan, revision: str | None, since: float
) -> dict[tuple[str, str], ComposeJob]:
    """Every compose of ``plan`` as a job, submitted now (so that other processes can take
    them at once), by SIG release: a new one, or the one that stands for it already."""
    return {
        (a.sig, a.release): state.jobs.submit(
            a.sig, a.release, a.reason, a.trigger, revision, since
        )
        for a in plan.actions
        if a.kind is ActionKind.COMPOSE
    }


def _fields(job: ComposeJob, worker: str) -> dict[str, object]:
    """Structured log fields of a job (stable names)."""
    return {
        "job": job.id,
        "sig": job.sig,
        "release": job.release,
        "attempt": job.attempt,
        "worker": worker,
        "revision": job.revision,
    }


@dataclass(frozen=True)
class Desired:
    """A desired state loaded already, and the revision it is (None: a local folder)."""

    spec: Spec
    spec_dir: Path
    revision: str | None = None


@dataclass
class Specs:
    """Where each job's desired state comes from: ``folder`` for every job when given
    (``--desired-state``), the caller's own when the revision is its, else the git
    source's tree at the job's revision (exported once per revision)."""

    host: HostConfig
    folder: Path | None = None
    own: Desired | None = None
    cache: RecordCache | None = None
    _loaded: dict[str, Desired] = field(default_factory=dict)

    def at(self, revision: str | None) -> Desired:
        from .specfile import load_spec

        if self.folder is not None:
            return self._loaded.get("") or self._loaded.setdefault(
                "", Desired(load_spec(self.folder, self.cache), self.folder, revision)
            )
        if self.own is not None and self.own.revision == revision:
            return self.own
        if revision is None:
            raise SourceError(
                "the job's plan came from a desired-state folder, not git: "
                "work it with --desired-state DIR"
            )
        if revision not in self._loaded:
            dest = self._export(revision)
            self._loaded[revision] = Desired(load_spec(dest, self.cache), dest, revision)
        return self._loaded[revision]

    def _export(self, revision: str) -> Path:
        from .gitsource import GitSource  # GitPython: only when a job needs a revision

        if not _FULL_SHA.fullmatch(revision):
            raise SourceRejected(f"job revision {revision!r} is not a full commit id")
        if self.host.git is None:
            raise SourceError(
                f"a job wants revision {revision[:12]} but the host config has "
                "no git section; pass --desired-state DIR"
            )
        dest = self.host.layout.revision(revision)
        if (dest / "defaults.yaml").is_file():
            return dest  # exported whole before (export replaces the directory atomically)
        git = GitSource(self.host.git, self.host.layout.git)
        try:
            git.export(revision, dest)
        except SourceRejected:  # not fetched here yet (another host's plan)
            git.fetch()
            git.export(revision, dest)
        prune_revisions(dest.parent, KEEP_REVISIONS)
        return dest


#: How many exported revisions a host keeps (the newest; a job of an older one exports
#: it again). Enough that a compose in another worker never loses the one it reads.
KEEP_REVISIONS = 10


def prune_revisions(root: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest revision directories under ``root`` (by the
    time they were exported); returns those deleted."""
    found = [p for p in root.iterdir() if p.is_dir() and _FULL_SHA.fullmatch(p.name)]
    found.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in found[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return found[keep:]


class Heartbeat:
    """Renews a job every ``job_timeout``/3 seconds from a thread with its own connection;
    :attr:`lost` is set when the job turned out to be someone else's."""

    def __init__(self, host: HostConfig, job: ComposeJob, worker: str) -> None:
        self.host, self.job, self.worker = host, job, worker
        self.lost = threading.Event()
        self._stop = threading.Event()
        # when the last renewal that succeeded was sent (the claim, at first: it was made
        # just before), by this host's monotonic clock
        self._renewed = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job.id}", daemon=True)

    def still_ours(self) -> bool:
        """May this worker still finish the job? Not once it was told the job is another's,
        nor once ``job_timeout`` (less a fifth) has passed since its last renewal was sent:
        by then another process may have taken it (a worker cut off from the database
        cannot know), so its compose is DOOMED rather than finished beside the new one."""
        timeout = float(self.host.state.job_timeout)
        return not self.lost.is_set() and time.monotonic() < self._renewed + timeout * 0.8

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        # bounded: one heartbeat statement at most (its statement timeout) after the stop
        self._thread.join(timeout=self.host.state.statement_timeout + 5)

    def _run(self) -> None:
        interval = self.host.state.job_timeout / 3
        try:
            state = own_connection(self.host)
        except StateError as exc:
            log.error(
                "job %d: no heartbeat connection: %s",
                self.job.id,
                exc,
                extra={"event": "job.heartbeat_failed", **_fields(self.job, self.worker)},
            )
            return
        with state:
            while not self._stop.wait(interval):
                sent = time.monotonic()
                try:
                    ours = state.jobs.heartbeat(self.job.id, self.worker, self.job.attempt)
                except StateError as exc:  # the next beat tries again (a new connection on PG)
                    log.warning(
                        "job %d: heartbeat failed: %s",
                        self.job.id,
                        exc,
                        extra={"event": "job.heartbeat_failed", **_fields(self.job, self.worker)},
                    )
                    continue
                if ours:
                    self._renewed = sent
                    continue
                self.lost.set()
                log.error(
                    "job %d (%s %s) was taken from this worker: its compose will not be recorded",
                    self.job.id,
                    self.job.sig,
                    self.job.release,
                    extra={"event": "job.lost", **_fields(self.job, self.worker)},
                )
                return


@dataclass
class JobWorker:
    """Takes compose jobs from the state and composes them, one at a time."""

    host: HostConfig
    state: StateDB
    specs: Specs
    reporter: Reporter | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or this_process(self.host)

    def expire(self) -> None:
        """Put the jobs of workers that stopped heartbeating back in the queue."""
        expire_abandoned(self.host, self.state)

    def run_one(self) -> ComposeJob | None:
        """Expire stale jobs, claim one and work it; the job as it ended, or None when
        nothing was queued."""
        self.expire()
        job = self.state.jobs.claim(self.name)
        return None if job is None else self.work(job)

    def work(self, job: ComposeJob) -> ComposeJob:
        """Compose a claimed job and record how it ended (if it is still ours)."""
        from .composing import ComposeRequest, compose  # the heavy part: only when composing

        log.info(
            "job %d: composing %s %s (attempt %d, %s)",
            job.id,
            job.sig,
            job.release,
            job.attempt,
            job.reason,
            extra={"event": "job.start", **_fields(job, self.name)},
        )
        state, error, cid, nbytes, packages = JobState.FAILED, None, None, 0, 0
        beat = Heartbeat(self.host, job, self.name)
        try:
            self._doom_abandoned(job)
            desired = self.specs.at(job.revision)
            started = partial(self.state.jobs.started, job.id, job.attempt)
            request = ComposeRequest(job.sig, job.release, git_revision=job.revision,
                                     on_allocated=started, still_ours=beat.still_ours)  # fmt: skip
            with beat:
                result = compose(desired.spec, desired.spec_dir, self.host, request, self.reporter)
            cid, nbytes, packages = result.compose_id, result.downloaded_bytes, result.packages
            if result.ok:
                state = JobState.DONE
            else:
                error = f"compose {cid} {result.status.value}: {result.error or ''}".strip()
        except (ReconcilerError, OSError) as exc:
            error = str(exc)
        kept = self._finish(
            job, state, compose_id=cid, error=error, bytes=nbytes, packages=packages
        )
        fields = {**_fields(job, self.name), "compose_id": cid}
        if not kept:
            log.error(
                "job %d (%s %s) was taken from this worker before it ended: compose %s "
                "is not the job's",
                job.id,
                job.sig,
                job.release,
                cid,
                extra={"event": "job.lost", **fields},
            )
        elif state is JobState.DONE:
            log.info("job %d: %s done", job.id, cid, extra={"event": "job.done", **fields})
        else:
            log.error("job %d failed: %s", job.id, error, extra={"event": "job.failed", **fields})
        ended = self.state.jobs.get(job.id)
        assert ended is not None, "jobs are never deleted"
        return ended

    def _finish(self, job: ComposeJob, state: JobState, **end: Any) -> bool:
        """Record how ``job`` ended; False when it was taken from us meanwhile.

        The compose is on disk whatever the database says. A connection lost at this
        moment (PostgreSQL restarting) is tried again, on a new connection, for half the
        job timeout: the job is still ours that long after its last heartbeat, and giving
        up would leave a finished compose that no job names, composed a second time by
        the next attempt."""
        deadline = time.monotonic() + self.host.state.job_timeout / 2
        while True:
            try:
                return self.state.jobs.finish(job.id, job.attempt, state, **end)
            except StateError as exc:
                if time.monotonic() >= deadline:
                    raise
                fields = {"event": "job.finish_retry", **_fields(job, self.name)}
                log.warning("job %d: cannot record its end yet (%s); trying again", job.id,
                            exc, extra=fields)  # fmt: skip
                time.sleep(FINISH_RETRY)

    def _doom_abandoned(self, job: ComposeJob) -> None:
        """Mark the compose directories of the job's abandoned attempts DOOMED while they
        are STARTED, unless a compose of the release still runs (the lock is held: the
        old worker is alive; this attempt's compose will refuse to start beside it)."""
        tree = self.host.compose_tree(job.sig, job.release)
        for attempt in self.state.jobs.attempts(job.id):
            if attempt.outcome is not AttemptOutcome.ABANDONED or attempt.compose_id is None:
                continue
            cdir = tree.compose_dir(attempt.compose_id)
            if read_status(cdir) is not ComposeStatus.STARTED:
                continue
            try:
                with exclusive_lock(tree.lock_file, f"a compose of {job.sig} {job.release}"):
                    write_status(cdir, ComposeStatus.DOOMED)
            except LockHeldError as exc:
                log.warning("job %d: %s left as it is: %s", job.id, cdir, exc)
                continue
            log.warning(
                "job %d: %s of abandoned attempt %d marked DOOMED",
                job.id,
                cdir,
                attempt.attempt,
                extra={
                    "event": "job.doomed",
                    **_fields(job, self.name),
                    "compose_id": attempt.compose_id,
                },
            )

    def wait_for(self, job_id: int, poll: float = POLL) -> ComposeJob | None:
        """Until job ``job_id`` ends, work the queue (any job, this one first if it is
        queued: claims go oldest first); the job as it ended, or None when ``stop`` was
        set first. Bounded by progress: a dead worker's job is taken back after
        ``job_timeout``, and each job here is one compose."""
        while True:
            job = self.state.jobs.get(job_id)
            if job is None:
                raise StateError(f"compose job {job_id} is not in the state database")
            if job.finished:
                return job
            if self.stop.is_set():
                return None
            if self.run_one() is None:
                self.stop.wait(poll)

    def run(self, *, once: bool = False, poll: float = POLL) -> int:
        """Work jobs until ``stop`` (or, ``once``, until none is queued); 1 if a job this
        worker ran failed, else 0."""
        failed = False
        while not self.stop.is_set():
            job = self.run_one()
            if job is None:
                if once:
                    break
                self.stop.wait(poll)
                continue
            failed = failed or job.state is JobState.FAILED
        return 1 if failed else 0


def work_queued(
    host: HostConfig,
    state: StateDB,
    folder: Path | None = None,
    cache: RecordCache | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Work every queued job, then return (0, or 1 if one failed): what a follower's pass
    of ``reconciler run`` does with the jobs the leader's plans submit."""
    specs = Specs(host, folder, cache=cache)
    return JobWorker(host, state, specs, stop=stop or threading.Event()).run(once=True)


def work_queue(
    host: HostConfig,
    folder: Path | None,
    cache: RecordCache | None,
    *,
    once: bool = False,
    poll: float = POLL,
) -> int:
    """``reconciler worker``: work jobs until SIGTERM or SIGINT (the current compose
    finishes first) or, ``once``, until none is queued; the exit code."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping after the current job", signum,
                 extra={"event": "worker.stopping"})  # fmt: skip
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with own_connection(host) as state:
            worker = JobWorker(host, state, Specs(host, folder, cache=cache), stop=stop)
            fields = {"event": "worker.start", "worker": worker.name}
            log.info("worker %s started", worker.name, extra=fields)
            code = worker.run(once=once, poll=poll)
            log.info("worker %s stopped", worker.name, extra={**fields, "event": "worker.stop"})
            return code
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
