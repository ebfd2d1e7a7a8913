"""Unmanaged paths: what lies under a published SIG directory that the reconciler did
not publish (docs/architecture.md, "Ownership of published paths").

Each walk of a directory replaces what is known under its prefix. The rows are listed
for mirrors with the inventory (so a quick-fedora-mirror client keeps an adopted
tree's images and keys), and those no ``publish.unmanaged`` pattern covers are
reported. Nothing here ever causes a path to be changed or deleted.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from ..vocabulary import LISTED_STAGES, Stage
from .database import Database
from .inventory import under_prefix
from .records import ListingRow, UnmanagedEntry, UnmanagedSummary, from_text, to_text

_COLUMNS = "relpath, kind, size, mtime_ns, ctime_ns, ignored"
_LISTING_ROW = (  # as the inventory's (inventory._LISTING_ROW), without a checksum
    "substr(relpath, CAST(? AS INTEGER)), kind, size,"
    " CASE WHEN mtime_ns > ctime_ns THEN mtime_ns ELSE ctime_ns END / 1000000000, NULL"
)
_UPSERT = (
    f"INSERT INTO unmanaged (stage, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"  # noqa: S608 - constants
    " ON CONFLICT (stage, relpath) DO UPDATE SET kind = excluded.kind, size = excluded.size,"
    " mtime_ns = excluded.mtime_ns, ctime_ns = excluded.ctime_ns, ignored = excluded.ignored"
)
_NOTE_LISTING_CHANGE = (
    "INSERT INTO listing_changes (stage, relpath) VALUES (?, ?) ON CONFLICT DO NOTHING"
)
#: how many example paths a summary names
EXAMPLES = 5


class Unmanaged:
    """The ``unmanaged`` and ``unmanaged_walks`` tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def entries(self, stage: Stage, prefix: str = "") -> dict[str, UnmanagedEntry]:
        """The unmanaged paths of ``stage`` whose relpath starts with ``prefix``."""
        where, params = under_prefix(stage, prefix)
        sql = f"SELECT {_COLUMNS} FROM unmanaged WHERE {where}"  # noqa: S608 - fixed texts
        with self._db.read() as conn:
            rows = conn.execute(sql, params).fetchall()
        return {row[0]: UnmanagedEntry.from_row(row) for row in rows}

    def replace(
        self,
        stage: Stage,
        prefix: str,
        entries: Iterable[UnmanagedEntry],
        walked_at: datetime,
        keep: Iterable[str] = (),
    ) -> None:
        """A walk of ``prefix`` found ``entries`` (all under it): they become everything
        known there, but under the prefixes ``keep`` (a category's walk keeps the rows of
        the SIG directories walked on their own). Paths whose row appeared, went or
        changed are noted for the lists."""
        kept = tuple(keep)
        new = {e.relpath: e for e in entries if not e.relpath.startswith(kept)}
        for relpath in new:
            if not relpath.startswith(prefix):
                raise ValueError(f"unmanaged path {relpath!r} is not under {prefix!r}")
        old = {
            p: e for p, e in self.entries(stage, prefix).items() if not p.startswith(kept or "\0")
        }
        changed = [p for p in old.keys() | new.keys() if old.get(p) != new.get(p)]
        with self._db.write() as conn:
            conn.executemany(
                "DELETE FROM unmanaged WHERE stage = ? AND relpath = ?",
                ((stage.value, p) for p in old.keys() - new.keys()),
            )
            conn.executemany(_UPSERT, (e.to_row(stage) for e in new.values()))
            conn.execute(
                "INSERT INTO unmanaged_walks (stage, prefix, walked_at) VALUES (?, ?, ?)"
                " ON CONFLICT (stage, prefix) DO UPDATE SET walked_at = excluded.walked_at",
                (stage.value, prefix, to_text(walked_at)),
            )
            if stage in LISTED_STAGES:
                conn.executemany(_NOTE_LISTING_CHANGE, ((stage.value, p) for p in changed))

    def walks(self, stage: Stage) -> dict[str, datetime]:
        """Every prefix of ``stage`` that was walked, and when it last was."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT prefix, walked_at FROM unmanaged_walks WHERE stage = ?", (stage.value,)
            ).fetchall()
        return {prefix: from_text(at) for prefix, at in rows}

    def forget(self, stage: Stage, relpaths: Iterable[str]) -> None:
        """``relpaths`` are unmanaged no more (published over, adopted, or deleted)."""
        paths = list(relpaths)
        with self._db.write() as conn:
            gone = [
                p
                for p in paths
                if conn.execute(
                    "DELETE FROM unmanaged WHERE stage = ? AND relpath = ?", (stage.value, p)
                ).rowcount
            ]
            if stage in LISTED_STAGES:
                conn.executemany(_NOTE_LISTING_CHANGE, ((stage.value, p) for p in gone))

    def listing(self, stage: Stage, prefix: str) -> list[ListingRow]:
        """File-list rows (as :meth:`Inventory.listing`) of the unmanaged paths under
        ``prefix``, ignored ones included: mirrors must keep them too."""
        where, params = under_prefix(stage, prefix)
        sql = f"SELECT {_LISTING_ROW} FROM unmanaged WHERE {where} ORDER BY relpath"  # noqa: S608
        with self._db.read() as conn:
            return conn.execute(sql, (len(prefix) + 1, *params)).fetchall()

    def listing_of(self, stage: Stage, prefix: str, relpaths: Iterable[str]) -> list[ListingRow]:
        """The :meth:`listing` rows of those of ``relpaths`` that are unmanaged."""
        sql = f"SELECT {_LISTING_ROW} FROM unmanaged WHERE stage = ? AND relpath = ?"  # noqa: S608
        found: list[ListingRow] = []
        with self._db.read() as conn:
            for relpath in relpaths:
                if not relpath.startswith(prefix):
                    raise ValueError(f"{relpath!r} is not under {prefix!r}")
                row = conn.execute(sql, (len(prefix) + 1, stage.value, relpath)).fetchone()
                if row is not None:
                    found.append(row)
        return found

    def summary(self, stage: Stage, prefix: str) -> UnmanagedSummary:
        """The reported unmanaged files (not directories, not ignored) under ``prefix``."""
        where, params = under_prefix(stage, prefix)
        with self._db.read() as conn:
            files, size = conn.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM unmanaged"  # noqa: S608 - fixed
                f" WHERE {where} AND ignored = 0 AND kind != 'd'",
                params,
            ).fetchone()
            examples = conn.execute(
                "SELECT relpath FROM unmanaged"  # noqa: S608 - fixed
                f" WHERE {where} AND ignored = 0 AND kind != 'd' ORDER BY relpath LIMIT ?",
                (*params, EXAMPLES),
            ).fetchall()
            walked = conn.execute(
                "SELECT walked_at FROM unmanaged_walks WHERE stage = ? AND prefix = ?",
                (stage.value, prefix),
            ).fetchone()
        return UnmanagedSummary(
            int(files), int(size), tuple(r[0] for r in examples),
            None if walked is None else from_text(walked[0]),
        )  # fmt: skip
