"""Targets: what each staging and production target holds, every publish to it, its
status as ``reconciler status`` shows it, and whether a publish to it is unfinished."""

from __future__ import annotations

from collections.abc import Iterable

from ..facts import TargetKey
from ..vocabulary import Stage
from .database import Database
from .records import StageEvent, TargetRecord, TargetStatus

_TARGET_COLUMNS = "sig, release, stage, compose_id, published_at, revision"


class Targets:
    """The ``targets``, ``stage_events``, ``statuses`` and ``publishing`` tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, sig: str, release: str, stage: Stage) -> TargetRecord | None:
        with self._db.read() as conn:
            row = conn.execute(
                f"SELECT {_TARGET_COLUMNS} FROM targets"  # noqa: S608 - a constant
                " WHERE sig = ? AND release = ? AND stage = ?",
                (sig, release, stage.value),
            ).fetchone()
        return None if row is None else TargetRecord.from_row(row)

    def all(self) -> list[TargetRecord]:
        """Every target, ordered by sig, release and stage."""
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT {_TARGET_COLUMNS} FROM targets ORDER BY sig, release, stage"  # noqa: S608
            ).fetchall()
        return [TargetRecord.from_row(row) for row in rows]

    def set(self, record: TargetRecord) -> None:
        """Record a completed publish: the target now holds it, and a StageEvent is appended.

        Setting the record the target already holds (same compose and time) is
        a no-op, so re-running a finished publish adds no event.
        """
        with self._db.write() as conn:
            current = conn.execute(
                "SELECT compose_id, published_at FROM targets"
                " WHERE sig = ? AND release = ? AND stage = ?",
                (record.sig, record.release, record.stage.value),
            ).fetchone()
            row = record.to_row()
            if current is not None and tuple(current) == (row[3], row[4]):
                return
            conn.execute(
                "INSERT INTO targets (sig, release, stage, compose_id, published_at, revision)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sig, release, stage) DO UPDATE SET"
                " compose_id = excluded.compose_id, published_at = excluded.published_at,"
                " revision = excluded.revision",
                row,
            )
            event = StageEvent(
                record.sig, record.release, record.stage, record.compose_id, record.published_at
            )
            conn.execute(
                "INSERT INTO stage_events (sig, release, stage, compose_id, at)"
                " VALUES (?, ?, ?, ?, ?)",
                event.to_row(),
            )

    def clear(self, sig: str, release: str, stage: Stage) -> None:
        """Forget what a target holds (its stage events stay)."""
        with self._db.write() as conn:
            conn.execute(
                "DELETE FROM targets WHERE sig = ? AND release = ? AND stage = ?",
                (sig, release, stage.value),
            )

    def events(self, sig: str, release: str, stage: Stage) -> list[StageEvent]:
        """Every publish to a target, oldest first."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT sig, release, stage, compose_id, at FROM stage_events"
                " WHERE sig = ? AND release = ? AND stage = ? ORDER BY id",
                (sig, release, stage.value),
            ).fetchall()
        return [StageEvent.from_row(row) for row in rows]

    # -- statuses --

    def set_statuses(self, statuses: Iterable[TargetStatus]) -> None:
        """Replace every status; :meth:`statuses` returns them in this order.

        Two statuses for the same target raise ValueError (nothing changed).
        """
        with self._db.write() as conn:
            conn.execute("DELETE FROM statuses")
            try:
                conn.executemany(
                    "INSERT INTO statuses (sig, release, stage, state, desired, actual, reason,"
                    " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (status.to_row() for status in statuses),
                )
            except self._db.integrity_errors as exc:
                raise ValueError(f"two statuses for the same target: {exc}") from exc

    def statuses(self) -> list[TargetStatus]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT sig, release, stage, state, desired, actual, reason, updated_at"
                " FROM statuses ORDER BY position"
            ).fetchall()
        return [TargetStatus.from_row(row) for row in rows]

    # -- unfinished publishes --

    def mark_publishing(self, key: TargetKey, compose_id: str | None) -> None:
        """A publish of ``compose_id`` to ``key`` begins (or, with None, its inventory was
        rebuilt from the tree): until :meth:`published`, the next publish to it compares
        everything instead of reading the composes' changes."""
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO publishing (stage, sig, release, compose_id) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (stage, sig, release) DO UPDATE SET compose_id = excluded.compose_id",
                (key.stage.value, key.sig, key.release, compose_id),
            )

    def published(self, key: TargetKey) -> None:
        """The publish to ``key`` finished (its target record says what it holds)."""
        with self._db.write() as conn:
            conn.execute(
                "DELETE FROM publishing WHERE stage = ? AND sig = ? AND release = ?",
                (key.stage.value, key.sig, key.release),
            )

    def is_publishing(self, key: TargetKey) -> bool:
        """Whether a publish to ``key`` began and did not finish (or its inventory was rebuilt)."""
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT 1 FROM publishing WHERE stage = ? AND sig = ? AND release = ?",
                (key.stage.value, key.sig, key.release),
            ).fetchone()
        return row is not None
