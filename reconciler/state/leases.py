"""The leader lease: the ``leader`` row (id 1: term, holder, since, renewed_at, expires_at)
and ``leader_terms`` (every term: holder, since, until). Times are epoch seconds of the
database's clock (:meth:`StateDB.clock`), the one clock every host sharing the state reads.

The statements are written once, in the spelling both engines take (``?`` parameters,
``ON CONFLICT ... excluded``), and run through an ``execute`` callable: the repository
passes its own connection's, the PostgreSQL lease (:mod:`reconciler.leadership`) the one
of its dedicated connection, so the lease row means the same whoever writes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self

from .database import Database
from .records import Row


class _Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Any: ...


#: ``execute(sql, params)`` of a connection (``?`` parameters).
Execute = Callable[[str, Sequence[Any]], _Cursor]


@dataclass(frozen=True, slots=True)
class LeaderRecord:
    """Who holds the lease (or last held it), in which term, until when."""

    term: int
    holder: str  # this_process() of the leader: <node>:<pid>
    since: float
    renewed_at: float
    expires_at: float

    @classmethod
    def from_row(cls, row: Row) -> Self:
        term, holder, since, renewed_at, expires_at = row
        return cls(int(term), str(holder), float(since), float(renewed_at), float(expires_at))

    def live(self, now: float) -> bool:
        """Still held at ``now`` (the database's clock)."""
        return now < self.expires_at


@dataclass(frozen=True, slots=True)
class LeaderTerm:
    """One term of the lease; ``until`` is None while it lasts (or its holder died in it)."""

    term: int
    holder: str
    since: float
    until: float | None

    @classmethod
    def from_row(cls, row: Row) -> Self:
        term, holder, since, until = row
        return cls(int(term), str(holder), float(since), None if until is None else float(until))


_CURRENT = "SELECT term, holder, since, renewed_at, expires_at FROM leader WHERE id = 1"


def current(execute: Execute) -> LeaderRecord | None:
    row = execute(_CURRENT, ()).fetchone()
    return None if row is None else LeaderRecord.from_row(row)


def begin_term(execute: Execute, holder: str, now: float, lease: float) -> LeaderRecord:
    """A new term for ``holder`` from ``now``: the open term (if any) ends now. Run it in
    one transaction, by the process that holds the lease (nothing else may write these)."""
    term = int(execute("SELECT COALESCE(MAX(term), 0) FROM leader_terms", ()).fetchone()[0]) + 1
    execute("UPDATE leader_terms SET until = ? WHERE until IS NULL", (now,))
    execute(
        "INSERT INTO leader_terms (term, holder, since, until) VALUES (?, ?, ?, NULL)",
        (term, holder, now),
    )
    execute(
        "INSERT INTO leader (id, term, holder, since, renewed_at, expires_at)"
        " VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET term = excluded.term,"
        " holder = excluded.holder, since = excluded.since, renewed_at = excluded.renewed_at,"
        " expires_at = excluded.expires_at",
        (term, holder, now, now, now + lease),
    )
    return LeaderRecord(term, holder, now, now, now + lease)


def renew(execute: Execute, term: int, holder: str, now: float, lease: float) -> bool:
    """Extend the lease to ``now + lease``; False when the row is no longer this term's."""
    cursor = execute(
        "UPDATE leader SET renewed_at = ?, expires_at = ? WHERE id = 1 AND term = ? AND holder = ?",
        (now, now + lease, term, holder),
    )
    return cursor.rowcount == 1


def end_term(execute: Execute, term: int, holder: str, now: float) -> None:
    """Give the lease up at ``now`` (a clean exit): a successor need not wait for it."""
    execute(
        "UPDATE leader SET renewed_at = ?, expires_at = ? WHERE id = 1 AND term = ? AND holder = ?",
        (now, now, term, holder),
    )
    execute("UPDATE leader_terms SET until = ? WHERE term = ? AND until IS NULL", (now, term))


class Leases:
    """The ``leader`` and ``leader_terms`` tables through the state's own connection
    (reading them anywhere; writing them on SQLite, where the apply lock is the lease)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def current(self) -> LeaderRecord | None:
        with self._db.read() as conn:
            return current(conn.execute)

    def terms(self, limit: int = 20) -> list[LeaderTerm]:
        """The latest terms, newest first."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT term, holder, since, until FROM leader_terms ORDER BY term DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [LeaderTerm.from_row(row) for row in rows]

    def hold(self, holder: str, lease: float) -> LeaderRecord:
        """``holder`` leads now: its term renewed, or a new term if the lease was another's."""
        with self._db.write() as conn:
            now = self._db.clock()
            held = current(conn.execute)
            if held is not None and held.holder == holder:
                renew(conn.execute, held.term, holder, now, lease)
                return LeaderRecord(held.term, holder, held.since, now, now + lease)
            return begin_term(conn.execute, holder, now, lease)

    def give_up(self, record: LeaderRecord) -> None:
        with self._db.write() as conn:
            end_term(conn.execute, record.term, record.holder, self._db.clock())
