"""The history: every action the reconciler took, what for, from which revision, by whom."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..errors import StateError
from ..vocabulary import FINISHED_RESULTS, INTERRUPTED, JobState, Result, Stage, Trigger
from .database import Database
from .records import HISTORY_COLUMNS, HistoryEntry, PassRecord, to_text


@dataclass(frozen=True, slots=True)
class ActionStart:
    """What an action is, as recorded when it starts."""

    action: str
    sig: str
    release: str
    stage: Stage | None
    compose_id: str | None
    reason: str
    revision: str | None
    author: str | None  # the author of the desired-state revision in force
    started_at: datetime
    trigger: Trigger | None = None
    actor: str | None = None
    node: str | None = None  # the process that does it: nodes.this_process()


class History:
    """The ``history`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def start(self, start: ActionStart) -> int:
        """Record an action as running; returns its id for :meth:`finish`."""
        with self._db.write() as conn:
            row = conn.execute(
                "INSERT INTO history (action, sig, release, stage, compose_id, reason, revision,"
                " author, started_at, result, trigger, actor, node)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    start.action,
                    start.sig,
                    start.release,
                    None if start.stage is None else start.stage.value,
                    start.compose_id,
                    start.reason,
                    start.revision,
                    start.author,
                    to_text(start.started_at),
                    Result.RUNNING.value,
                    None if start.trigger is None else start.trigger.value,
                    start.actor,
                    start.node,
                ),
            ).fetchone()
        return int(row[0])

    def finish(
        self,
        action_id: int,
        *,
        result: Result,
        error: str | None = None,
        bytes: int = 0,
        files: int = 0,
        finished_at: datetime,
        compose_id: str | None = None,
    ) -> None:
        """Record how an action ended (one of :data:`FINISHED_RESULTS`).

        ``compose_id`` fills in the compose an action made or published, when it was
        not known at the start (a compose, or a publish of the compose just made).
        """
        if result not in FINISHED_RESULTS:
            raise ValueError(f"result {result!r} is not one of {sorted(FINISHED_RESULTS)}")
        with self._db.write() as conn:
            cursor = conn.execute(
                "UPDATE history SET result = ?, error = ?, bytes = ?, files = ?, finished_at = ?,"
                " compose_id = COALESCE(?, compose_id) WHERE id = ?",
                (result.value, error, bytes, files, to_text(finished_at), compose_id, action_id),
            )
            if cursor.rowcount != 1:
                raise StateError(f"state database {self._db.name} has no action {action_id}")

    def entries(self, limit: int | None = None, *, sig: str | None = None) -> list[HistoryEntry]:
        """Actions, newest first; at most ``limit``, only those of ``sig`` if given."""
        where, params = ("WHERE sig = ?", [sig]) if sig is not None else ("", [])
        sql = f"SELECT {HISTORY_COLUMNS} FROM history {where} ORDER BY id DESC"  # noqa: S608
        if limit is not None:  # (no "LIMIT -1" for all: PostgreSQL refuses a negative limit)
            sql += f" LIMIT {int(limit)}"
        with self._db.read() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [HistoryEntry.from_row(row) for row in rows]

    def running(self) -> list[HistoryEntry]:
        """Actions still marked running, oldest first.

        Left by a crash only if no other process is applying: hold the apply
        lock before treating them as interrupted.
        """
        sql = f"SELECT {HISTORY_COLUMNS} FROM history WHERE result = ? ORDER BY id"  # noqa: S608
        with self._db.read() as conn:
            rows = conn.execute(sql, (Result.RUNNING.value,)).fetchall()
        return [HistoryEntry.from_row(row) for row in rows]

    def record_pass(self, record: PassRecord) -> None:
        """The loop finished a pass (kept: the last one only)."""
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO last_pass (id, finished_at, seconds, ok, error) VALUES (1, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET finished_at = excluded.finished_at,"
                " seconds = excluded.seconds, ok = excluded.ok, error = excluded.error",
                (to_text(record.finished_at), record.seconds, int(record.ok), record.error),
            )

    def last_pass(self) -> PassRecord | None:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT finished_at, seconds, ok, error FROM last_pass WHERE id = 1"
            ).fetchone()
        return None if row is None else PassRecord.from_row(row)

    def mark_interrupted(self, finished_at: datetime) -> int:
        """Mark running actions failed with the error "interrupted"; returns how many.

        Called by the process that holds the apply lock (and, sharing a PostgreSQL state,
        the leader lease): every running action is then left by a process that holds
        nothing any more (an earlier leader, a killed apply), except those of a process
        that still runs a compose job: its rows are its own."""
        with self._db.write() as conn:
            cursor = conn.execute(
                "UPDATE history SET result = ?, error = ?, finished_at = ? WHERE result = ?"
                " AND (node IS NULL OR node NOT IN (SELECT worker FROM compose_jobs"
                " WHERE state = ? AND worker IS NOT NULL))",
                (Result.FAILED.value, INTERRUPTED, to_text(finished_at), Result.RUNNING.value,
                 JobState.RUNNING.value),
            )  # fmt: skip
        return cursor.rowcount
