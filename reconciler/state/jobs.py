"""Compose jobs: every compose a plan wants, taken by whichever process is free.

A job is queued once per SIG release at a time (a partial unique index of schema 9),
claimed by one worker (``running``: it heartbeats), and ends ``done`` or ``failed``.
A worker that stops heartbeating for ``job_timeout`` seconds loses the job: it goes
back to the queue and the next claim is a new attempt (``attempt`` + 1); the abandoned
attempt's compose directory is named in ``compose_attempts`` so that it is DOOMED
before the next attempt composes. Every time here is the database's clock
(:meth:`Database.clock`), which all hosts sharing a PostgreSQL state agree on.

Claims never hand one job to two workers: on SQLite the write transaction's
``BEGIN IMMEDIATE`` serialises them; on PostgreSQL the row is locked with
``FOR UPDATE SKIP LOCKED`` (a concurrent claimer skips it and takes the next one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

from ..vocabulary import AttemptOutcome, Dialect, JobState, Trigger
from .database import Database
from .records import Row

JOB_COLUMNS = (
    "id, sig, release, state, reason, trigger, revision, queued_at, attempt, worker,"
    " started_at, heartbeat_at, compose_id, finished_at, error, bytes, packages"
)
_ATTEMPT_COLUMNS = "job, attempt, worker, compose_id, started_at, ended_at, outcome"
#: The one place where claiming differs between the engines (see the module's doc).
_CLAIM_LOCK = {Dialect.SQLITE: "", Dialect.POSTGRESQL: " FOR UPDATE SKIP LOCKED"}
_ACTIVE = (JobState.QUEUED.value, JobState.RUNNING.value)
_FINISHED = frozenset({JobState.DONE, JobState.FAILED})
#: Whether a worker (``<node>:<pid>``) is known to be gone (killed on this host).
Dead = Callable[[str], bool]


def _NOBODY(worker: str) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class ComposeJob:
    """One row of ``compose_jobs``."""

    id: int
    sig: str
    release: str
    state: JobState
    reason: str
    trigger: Trigger | None
    revision: str | None  # the desired-state revision whose plan wanted it
    queued_at: float
    attempt: int  # 0 until claimed; each claim counts one up
    worker: str | None  # ``<node>:<pid>`` of the process that holds (or held) it
    started_at: float | None
    heartbeat_at: float | None
    compose_id: str | None
    finished_at: float | None
    error: str | None
    bytes: int = 0
    packages: int = 0

    @property
    def finished(self) -> bool:
        return self.state in _FINISHED

    @classmethod
    def from_row(cls, row: Row) -> Self:
        (id_, sig, release, state, reason, trigger, revision, queued_at, attempt) = row[:9]
        (worker, started, heartbeat, compose_id, finished, error, nbytes, packages) = row[9:]
        return cls(
            id=int(id_),
            sig=sig,
            release=release,
            state=JobState(state),
            reason=reason,
            trigger=None if trigger is None else Trigger(trigger),
            revision=revision,
            queued_at=float(queued_at),
            attempt=int(attempt),
            worker=worker,
            started_at=None if started is None else float(started),
            heartbeat_at=None if heartbeat is None else float(heartbeat),
            compose_id=compose_id,
            finished_at=None if finished is None else float(finished),
            error=error,
            bytes=int(nbytes),
            packages=int(packages),
        )


@dataclass(frozen=True, slots=True)
class ComposeAttempt:
    """One row of ``compose_attempts``: one worker's go at a job."""

    job: int
    attempt: int
    worker: str
    compose_id: str | None  # the directory it made (None: it died before allocating one)
    started_at: float
    ended_at: float | None
    outcome: AttemptOutcome | None  # None: still going

    @classmethod
    def from_row(cls, row: Row) -> Self:
        job, attempt, worker, compose_id, started, ended, outcome = row
        return cls(
            job=int(job),
            attempt=int(attempt),
            worker=worker,
            compose_id=compose_id,
            started_at=float(started),
            ended_at=None if ended is None else float(ended),
            outcome=None if outcome is None else AttemptOutcome(outcome),
        )


@dataclass(frozen=True, slots=True)
class ComposesOfJobs:
    """Compose IDs of one SIG release by what their jobs say of them."""

    #: made by an attempt whose job is running and heartbeats (on any host): a compose
    #: that runs, though this host may not see its lock
    working: frozenset[str] = frozenset()
    #: made by an attempt whose worker stopped heartbeating: DOOMED (or about to be), and
    #: no verdict on the upstream
    abandoned: frozenset[str] = frozenset()


class Jobs:
    """The ``compose_jobs`` and ``compose_attempts`` tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def submit(
        self,
        sig: str,
        release: str,
        reason: str,
        trigger: Trigger | None,
        revision: str | None,
        since: float,
    ) -> ComposeJob:
        """Queue a compose of SIG release; or return the job that already stands for it:
        the queued or running one, else one that finished after ``since`` (a clock
        reading taken when the plan began observing: that compose is the one the plan
        wanted, made meanwhile by another process, and is never made twice). A job still
        queued takes this plan's reason, trigger and revision (the newest plan's)."""
        now = self._db.clock()
        with self._db.write() as conn:
            found = self._standing(conn, sig, release, since)
            if found is not None and found.state is JobState.QUEUED:
                # not started yet: the newest plan says what it composes (its revision)
                row = conn.execute(
                    "UPDATE compose_jobs SET reason = ?, trigger = ?, revision = ?"  # noqa: S608
                    f" WHERE id = ? AND state = ? RETURNING {JOB_COLUMNS}",
                    (reason, None if trigger is None else trigger.value, revision, found.id,
                     JobState.QUEUED.value),
                ).fetchone()  # fmt: skip
                return found if row is None else ComposeJob.from_row(row)
            if found is not None:
                return found
            # Two submitters at once on PostgreSQL: the second waits on the unique index,
            # does nothing, and then sees the first's job (read committed).
            row = conn.execute(
                "INSERT INTO compose_jobs (sig, release, state, reason, trigger, revision,"  # noqa: S608
                " queued_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (sig, release) WHERE state IN ('queued', 'running') DO NOTHING"
                f" RETURNING {JOB_COLUMNS}",
                (sig, release, JobState.QUEUED.value, reason,
                 None if trigger is None else trigger.value, revision, now),
            ).fetchone()  # fmt: skip
            if row is None:
                found = self._standing(conn, sig, release, since)
                assert found is not None, "the conflicting job is active"
                return found
        return ComposeJob.from_row(row)

    def _standing(self, conn: Any, sig: str, release: str, since: float) -> ComposeJob | None:
        """The active job of SIG release, else the newest that finished after ``since``."""
        row = conn.execute(
            f"SELECT {JOB_COLUMNS} FROM compose_jobs WHERE sig = ? AND release = ?"  # noqa: S608
            " AND (state IN (?, ?) OR finished_at > ?)"
            " ORDER BY CASE WHEN state IN (?, ?) THEN 0 ELSE 1 END, id DESC LIMIT 1",
            (sig, release, *_ACTIVE, since, *_ACTIVE),
        ).fetchone()
        return None if row is None else ComposeJob.from_row(row)

    def claim(self, worker: str) -> ComposeJob | None:
        """Take the oldest queued job for ``worker`` (a new attempt), or None."""
        now = self._db.clock()
        with self._db.write() as conn:
            found = conn.execute(
                "SELECT id FROM compose_jobs WHERE state = ? ORDER BY id LIMIT 1"  # noqa: S608
                + _CLAIM_LOCK[self._db.dialect],
                (JobState.QUEUED.value,),
            ).fetchone()
            if found is None:
                return None
            row = conn.execute(
                "UPDATE compose_jobs SET state = ?, attempt = attempt + 1, worker = ?,"  # noqa: S608
                " started_at = ?, heartbeat_at = ?, compose_id = NULL, error = NULL"
                f" WHERE id = ? AND state = ? RETURNING {JOB_COLUMNS}",
                (JobState.RUNNING.value, worker, now, now, found[0], JobState.QUEUED.value),
            ).fetchone()
            if row is None:  # taken meanwhile (cannot happen under the lock above: a guard)
                return None
            job = ComposeJob.from_row(row)
            conn.execute(
                "INSERT INTO compose_attempts (job, attempt, worker, started_at)"
                " VALUES (?, ?, ?, ?)",
                (job.id, job.attempt, worker, now),
            )
        return job

    def heartbeat(self, job: int, worker: str, attempt: int) -> bool:
        """Say that ``worker`` still works ``attempt`` of ``job``; False: it was taken away."""
        now = self._db.clock()
        with self._db.write() as conn:
            cursor = conn.execute(
                "UPDATE compose_jobs SET heartbeat_at = ?"
                " WHERE id = ? AND state = ? AND worker = ? AND attempt = ?",
                (now, job, JobState.RUNNING.value, worker, attempt),
            )
            return bool(cursor.rowcount == 1)

    def started(self, job: int, attempt: int, compose_id: str) -> None:
        """The attempt allocated its compose directory (so a retake can DOOM it)."""
        with self._db.write() as conn:
            conn.execute(
                "UPDATE compose_attempts SET compose_id = ? WHERE job = ? AND attempt = ?",
                (compose_id, job, attempt),
            )
            conn.execute(
                "UPDATE compose_jobs SET compose_id = ? WHERE id = ? AND attempt = ? AND state = ?",
                (compose_id, job, attempt, JobState.RUNNING.value),
            )

    def finish(
        self,
        job: int,
        attempt: int,
        state: JobState,
        *,
        compose_id: str | None = None,
        error: str | None = None,
        bytes: int = 0,
        packages: int = 0,
    ) -> bool:
        """End ``attempt`` of ``job`` as DONE or FAILED; False (nothing recorded) when the
        job is no longer this attempt's: it was taken again meanwhile."""
        if state not in _FINISHED:
            raise ValueError(f"a job finishes done or failed, not {state}")
        now = self._db.clock()
        with self._db.write() as conn:
            cursor = conn.execute(
                "UPDATE compose_jobs SET state = ?, finished_at = ?, compose_id ="
                " COALESCE(?, compose_id), error = ?, bytes = ?, packages = ?"
                " WHERE id = ? AND attempt = ? AND state = ?",
                (state.value, now, compose_id, error, bytes, packages, job, attempt,
                 JobState.RUNNING.value),
            )  # fmt: skip
            if cursor.rowcount != 1:
                return False
            conn.execute(
                "UPDATE compose_attempts SET ended_at = ?, outcome = ?,"
                " compose_id = COALESCE(?, compose_id) WHERE job = ? AND attempt = ?",
                (now, AttemptOutcome(state.value).value, compose_id, job, attempt),
            )
        return True

    def expire(self, job_timeout: float, dead: Dead = _NOBODY) -> list[ComposeAttempt]:
        """Put every running job back in the queue whose heartbeat is older than
        ``job_timeout`` seconds, or whose worker is known ``dead`` (killed on this host);
        returns the attempts so abandoned (their compose directories are to be DOOMED
        before the job composes again)."""
        now = self._db.clock()
        with self._db.write() as conn:
            running = conn.execute(
                "SELECT id, attempt, worker, heartbeat_at FROM compose_jobs WHERE state = ?"  # noqa: S608
                " ORDER BY id" + _CLAIM_LOCK[self._db.dialect],
                (JobState.RUNNING.value,),
            ).fetchall()
            abandoned = []
            for job, attempt, worker, heartbeat in running:
                stale = heartbeat is None or float(heartbeat) < now - job_timeout
                if not (stale or (worker is not None and dead(str(worker)))):
                    continue
                conn.execute(
                    "UPDATE compose_jobs SET state = ?, worker = NULL, heartbeat_at = NULL"
                    " WHERE id = ? AND attempt = ?",
                    (JobState.QUEUED.value, job, attempt),
                )
                row = conn.execute(
                    "UPDATE compose_attempts SET ended_at = ?, outcome = ?"  # noqa: S608
                    f" WHERE job = ? AND attempt = ? RETURNING {_ATTEMPT_COLUMNS}",
                    (now, AttemptOutcome.ABANDONED.value, job, attempt),
                ).fetchone()
                if row is not None:
                    abandoned.append(ComposeAttempt.from_row(row))
        return abandoned

    def get(self, job: int) -> ComposeJob | None:
        with self._db.read() as conn:
            sql = f"SELECT {JOB_COLUMNS} FROM compose_jobs WHERE id = ?"  # noqa: S608
            row = conn.execute(sql, (job,)).fetchone()
        return None if row is None else ComposeJob.from_row(row)

    def all(self, states: frozenset[JobState] | None = None, limit: int = 100) -> list[ComposeJob]:
        """Jobs (only those in ``states`` if given), newest first, at most ``limit``."""
        chosen = sorted(s.value for s in states) if states is not None else []
        where = f"WHERE state IN ({', '.join('?' * len(chosen))})" if states is not None else ""
        sql = f"SELECT {JOB_COLUMNS} FROM compose_jobs {where} ORDER BY id DESC LIMIT ?"  # noqa: S608
        with self._db.read() as conn:
            rows = conn.execute(sql, (*chosen, limit)).fetchall()
        return [ComposeJob.from_row(r) for r in rows]

    def counts(self) -> dict[JobState, int]:
        """How many jobs are in each state (for status and metrics)."""
        with self._db.read() as conn:
            rows = conn.execute("SELECT state, count(*) FROM compose_jobs GROUP BY state")
            found = {JobState(state): int(n) for state, n in rows.fetchall()}
        return {s: found.get(s, 0) for s in JobState}

    def attempts(self, job: int | None = None) -> list[ComposeAttempt]:
        """The attempts (at ``job`` if given), oldest first."""
        where, params = ("WHERE job = ?", (job,)) if job is not None else ("", ())
        sql = f"SELECT {_ATTEMPT_COLUMNS} FROM compose_attempts {where} ORDER BY job, attempt"  # noqa: S608
        with self._db.read() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [ComposeAttempt.from_row(r) for r in rows]

    def composes(
        self, sig: str, release: str, job_timeout: float, dead: Dead = _NOBODY
    ) -> ComposesOfJobs:
        """The compose directories of SIG release that jobs' attempts made, as observing
        needs them: those still being made (their job heartbeats within ``job_timeout``
        and its worker is not known ``dead``), and the abandoned ones."""
        now = self._db.clock()
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT a.compose_id, a.outcome, j.state, j.attempt, a.attempt, j.heartbeat_at,"
                " a.worker FROM compose_attempts a JOIN compose_jobs j ON j.id = a.job"
                " WHERE j.sig = ? AND j.release = ? AND a.compose_id IS NOT NULL",
                (sig, release),
            ).fetchall()
        working: set[str] = set()
        abandoned: set[str] = set()
        for cid, outcome, state, current, attempt, heartbeat, worker in rows:
            ended = None if outcome is None else AttemptOutcome(outcome)
            if ended is AttemptOutcome.ABANDONED:
                abandoned.add(str(cid))
            current_attempt = JobState(state) is JobState.RUNNING and current == attempt
            fresh = heartbeat is not None and float(heartbeat) >= now - job_timeout
            if ended is None and current_attempt and fresh and not dead(str(worker)):
                working.add(str(cid))
        return ComposesOfJobs(frozenset(working), frozenset(abandoned))
