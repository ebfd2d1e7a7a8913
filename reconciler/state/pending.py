"""Pending deletions: superseded paths of a published tree, deleted once due."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from ..vocabulary import Stage
from .database import Database
from .records import PendingDeletion, to_text

_COLUMNS = "id, stage, relpath, due_at, reason"


class PendingDeletions:
    """The ``pending_deletions`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, stage: Stage, relpaths: Iterable[str], due_at: datetime, reason: str) -> None:
        """Schedule deletions; a path already pending keeps its earliest due time and reason."""
        due = to_text(due_at)
        with self._db.write() as conn:
            conn.executemany(
                "INSERT INTO pending_deletions (stage, relpath, due_at, reason) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (stage, relpath) DO UPDATE SET"
                " due_at = excluded.due_at, reason = excluded.reason"
                " WHERE excluded.due_at < pending_deletions.due_at",
                ((stage.value, relpath, due, reason) for relpath in relpaths),
            )

    def all(self, stage: Stage | None = None) -> list[PendingDeletion]:
        """Pending deletions (of ``stage`` if given), soonest due first."""
        sql = f"SELECT {_COLUMNS} FROM pending_deletions"  # noqa: S608 - a constant
        params: tuple[str, ...] = ()
        if stage is not None:
            sql += " WHERE stage = ?"
            params = (stage.value,)
        with self._db.read() as conn:
            rows = conn.execute(sql + " ORDER BY due_at, id", params).fetchall()
        return [PendingDeletion.from_row(row) for row in rows]

    def due(self, now: datetime) -> list[PendingDeletion]:
        """Pending deletions whose due time is at or before ``now``, soonest first."""
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM pending_deletions"  # noqa: S608 - a constant
                " WHERE due_at <= ? ORDER BY due_at, id",
                (to_text(now),),
            ).fetchall()
        return [PendingDeletion.from_row(row) for row in rows]

    def remove(self, ids: Iterable[int]) -> None:
        """Forget pending deletions by id (done, or no longer wanted)."""
        with self._db.write() as conn:
            conn.executemany("DELETE FROM pending_deletions WHERE id = ?", ((i,) for i in ids))

    def cancel(self, stage: Stage, relpaths: Iterable[str]) -> None:
        """A path needed again is no longer deleted."""
        with self._db.write() as conn:
            conn.executemany(
                "DELETE FROM pending_deletions WHERE stage = ? AND relpath = ?",
                ((stage.value, relpath) for relpath in relpaths),
            )
