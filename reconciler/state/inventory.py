"""Inventories: every path the reconciler published under a stage's root, and what
the production file lists were last written from."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Any

from ..vocabulary import LISTED_STAGES, Stage
from .database import Database
from .records import InventoryEntry, ListingRow

#: A row of a file list (path after the prefix bound to the first ``?``, kind, size,
#: max(mtime, ctime) in whole seconds, checksum), for :meth:`Inventory.listing`; spelled so
#: that SQLite and PostgreSQL both take it (no two-argument max; substr's start an integer).
_LISTING_ROW = (
    "substr(relpath, CAST(? AS INTEGER)), kind, size,"
    " CASE WHEN mtime_ns > ctime_ns THEN mtime_ns ELSE ctime_ns END / 1000000000, checksum"
)
_NOTE_LISTING_CHANGE = (
    "INSERT INTO listing_changes (stage, relpath) VALUES (?, ?) ON CONFLICT DO NOTHING"
)
_UPSERT_INVENTORY = (
    "INSERT INTO inventory (stage, relpath, kind, size, mtime_ns, ino, checksum, ctime_ns)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (stage, relpath) DO UPDATE SET"
    " kind = excluded.kind, size = excluded.size, mtime_ns = excluded.mtime_ns,"
    " ino = excluded.ino, checksum = excluded.checksum, ctime_ns = excluded.ctime_ns"
)


def _prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix`` (None: no bound).

    SQLite compares TEXT as UTF-8 bytes, which is code point order, so
    ``prefix <= s < _prefix_end(prefix)`` holds exactly for the strings starting
    with ``prefix`` and can use the primary key index (LIKE could not).
    """
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code <= 0x10FFFF:
            if 0xD800 <= code <= 0xDFFF:  # surrogates cannot be encoded; skip them
                code = 0xE000
            return "".join(chars) + chr(code)
    return None


def under_prefix(stage: Stage, prefix: str) -> tuple[str, tuple[str, ...]]:
    """The WHERE clause (one of two fixed texts) and its parameters for the inventory rows of
    ``stage`` whose relpath starts with ``prefix``: a range on the primary key."""
    end = _prefix_end(prefix)
    if end is None:
        return "stage = ? AND relpath >= ?", (stage.value, prefix)
    return "stage = ? AND relpath >= ? AND relpath < ?", (stage.value, prefix, end)


class Inventory:
    """The ``inventory``, ``listing_changes`` and ``listings`` tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def entries(self, stage: Stage, prefix: str = "") -> dict[str, InventoryEntry]:
        """Entries of ``stage`` whose relpath starts with ``prefix`` (a string prefix)."""
        where, params = under_prefix(stage, prefix)
        sql = (
            "SELECT relpath, kind, size, mtime_ns, ino, checksum, ctime_ns FROM inventory"  # noqa: S608 - under_prefix's text is fixed
            f" WHERE {where}"
        )
        with self._db.read() as conn:
            rows = conn.execute(sql, params).fetchall()
        return {row[0]: InventoryEntry.from_row(row) for row in rows}

    def listing(self, stage: Stage, prefix: str) -> list[ListingRow]:
        """``(path after prefix, kind, size, max(mtime, ctime) in seconds, checksum)`` of each
        entry of ``stage`` under ``prefix``, sorted by path: the rows of a file list."""
        where, params = under_prefix(stage, prefix)
        sql = f"SELECT {_LISTING_ROW} FROM inventory WHERE {where} ORDER BY relpath"  # noqa: S608 - as above
        with self._db.read() as conn:
            return conn.execute(sql, (len(prefix) + 1, *params)).fetchall()

    def apply_changes(
        self, stage: Stage, upserts: Iterable[InventoryEntry], deletes: Iterable[str]
    ) -> None:
        """Delete ``deletes``, then insert or update ``upserts``, in one transaction.

        A path in both ends up present (the upsert is the newer fact).
        """
        deletes, upserts = list(deletes), list(upserts)
        with self._db.write() as conn:
            conn.executemany(
                "DELETE FROM inventory WHERE stage = ? AND relpath = ?",
                ((stage.value, relpath) for relpath in deletes),
            )
            conn.executemany(_UPSERT_INVENTORY, (e.to_row(stage) for e in upserts))
            if stage in LISTED_STAGES:
                conn.executemany(
                    _NOTE_LISTING_CHANGE,
                    ((stage.value, p) for p in chain(deletes, (e.relpath for e in upserts))),
                )

    def replace(self, stage: Stage, prefix: str, entries: Iterable[InventoryEntry]) -> None:
        """Make ``entries`` the whole inventory under ``prefix``, in one transaction.

        Every entry must start with ``prefix`` (ValueError otherwise, nothing changed).
        """

        def rows() -> Iterator[tuple[Any, ...]]:
            for entry in entries:
                if not entry.relpath.startswith(prefix):
                    raise ValueError(f"inventory entry {entry.relpath!r} is not under {prefix!r}")
                yield entry.to_row(stage)

        where, params = under_prefix(stage, prefix)
        with self._db.write() as conn:
            conn.execute(f"DELETE FROM inventory WHERE {where}", params)  # noqa: S608 - as above
            conn.executemany(_UPSERT_INVENTORY, rows())
            if stage in LISTED_STAGES:
                conn.execute(_NOTE_LISTING_CHANGE, (stage.value, ""))  # unknown: whole lists

    # -- what the file lists were last written from --

    def lists_outdated(self, stage: Stage) -> bool:
        """Whether the file lists of ``stage`` no longer match its inventory (a path changed
        since :meth:`listing_written`, or what changed is unknown)."""
        return self.listing_changes(stage) != frozenset()

    def listing_changes(self, stage: Stage) -> frozenset[str] | None:
        """The paths of ``stage`` (one of :data:`LISTED_STAGES`) whose inventory rows changed
        since :meth:`listing_written`; ``None`` when that is unknown (after
        :meth:`replace` or an upgrade)."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT relpath FROM listing_changes WHERE stage = ?", (stage.value,)
            ).fetchall()
        paths = frozenset(r[0] for r in rows)
        return None if "" in paths else paths

    def listing_of(self, stage: Stage, prefix: str, relpaths: Iterable[str]) -> list[ListingRow]:
        """The :meth:`listing` rows of those of ``relpaths`` (all under ``prefix``) that
        are in the inventory, in the order given."""
        sql = f"SELECT {_LISTING_ROW} FROM inventory WHERE stage = ? AND relpath = ?"  # noqa: S608 - a constant
        start = len(prefix) + 1
        found: list[ListingRow] = []
        with self._db.read() as conn:
            for relpath in relpaths:
                if not relpath.startswith(prefix):
                    raise ValueError(f"{relpath!r} is not under {prefix!r}")
                row = conn.execute(sql, (start, stage.value, relpath)).fetchone()
                if row is not None:
                    found.append(row)
        return found

    def listing_written(self, stage: Stage, digest: str) -> None:
        """The file lists of ``stage`` were written from the inventory as it is now, and
        their content has ``digest``: forget the changes, remember the digest."""
        with self._db.write() as conn:
            conn.execute("DELETE FROM listing_changes WHERE stage = ?", (stage.value,))
            conn.execute(
                "INSERT INTO listings (stage, digest) VALUES (?, ?)"
                " ON CONFLICT (stage) DO UPDATE SET digest = excluded.digest",
                (stage.value, digest),
            )

    def listing_digest(self, stage: Stage) -> str | None:
        """The digest :meth:`listing_written` recorded for ``stage``, if any."""
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT digest FROM listings WHERE stage = ?", (stage.value,)
            ).fetchone()
        return None if row is None else str(row[0])
