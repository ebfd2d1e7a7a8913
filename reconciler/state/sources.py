"""What the reconciler last learned from outside: its desired-state source (which
revision validated, which was applied, why the newest was refused), the upstream's
conditional-GET validators, and the drift found in the published trees."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from ..facts import DriftFinding, TargetKey, UpstreamCacheEntry
from ..vocabulary import DriftKind
from .database import Database
from .records import SourceRecord, from_text, opt_from_text, to_text


class Sources:
    """The ``source``, ``source_problems``, ``upstream_cache``, ``drift``, ``drift_check``
    and ``drift_deep_check`` tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- the desired-state source --

    def source(self) -> SourceRecord:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT good_revision, applied_revision, checkout_revision FROM source"
            ).fetchone()
            problems = conn.execute(
                "SELECT message FROM source_problems ORDER BY position"
            ).fetchall()
            ignored = conn.execute("SELECT path FROM source_ignored ORDER BY position").fetchall()
        good, applied, checkout = row if row is not None else (None, None, None)
        return SourceRecord(
            good, applied, checkout, tuple(p[0] for p in problems), tuple(i[0] for i in ignored)
        )

    def set_source(self, record: SourceRecord) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO source (id, good_revision, applied_revision, checkout_revision)"
                " VALUES (1, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " good_revision = excluded.good_revision,"
                " applied_revision = excluded.applied_revision,"
                " checkout_revision = excluded.checkout_revision",
                (record.good_revision, record.applied_revision, record.checkout_revision),
            )
            conn.execute("DELETE FROM source_problems")
            conn.executemany(
                "INSERT INTO source_problems (position, message) VALUES (?, ?)",
                enumerate(record.problems),
            )
            conn.execute("DELETE FROM source_ignored")
            conn.executemany(
                "INSERT INTO source_ignored (position, path) VALUES (?, ?)",
                enumerate(record.ignored),
            )

    # -- the upstream's validators --

    def upstream_cache(self, url: str) -> UpstreamCacheEntry | None:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT url, etag, last_modified, sha256, fetched_at FROM upstream_cache"
                " WHERE url = ?",
                (url,),
            ).fetchone()
        if row is None:
            return None
        url, etag, last_modified, sha256, fetched_at = row
        return UpstreamCacheEntry(url, etag, last_modified, sha256, from_text(fetched_at))

    def set_upstream_cache(self, entries: Iterable[UpstreamCacheEntry]) -> None:
        with self._db.write() as conn:
            conn.executemany(
                "INSERT INTO upstream_cache (url, etag, last_modified, sha256, fetched_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (url) DO UPDATE SET etag = excluded.etag,"
                " last_modified = excluded.last_modified, sha256 = excluded.sha256,"
                " fetched_at = excluded.fetched_at",
                (
                    (e.url, e.etag, e.last_modified, e.sha256, to_text(e.fetched_at))
                    for e in entries
                ),
            )

    # -- drift --

    def drift(self, key: TargetKey) -> tuple[DriftFinding, ...]:
        """The drift last found in a target (empty: none, or never checked)."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT path, what FROM drift WHERE stage = ? AND sig = ? AND release = ?"
                " ORDER BY position",
                (key.stage.value, key.sig, key.release),
            ).fetchall()
        return tuple(DriftFinding(path, DriftKind(what)) for path, what in rows)

    def set_drift(self, key: TargetKey, found: Iterable[DriftFinding]) -> None:
        """Replace what is known of a target's drift (empty: the target matches)."""
        with self._db.write() as conn:
            conn.execute(
                "DELETE FROM drift WHERE stage = ? AND sig = ? AND release = ?",
                (key.stage.value, key.sig, key.release),
            )
            conn.executemany(
                "INSERT INTO drift (stage, sig, release, position, what, path)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (key.stage.value, key.sig, key.release, i, d.what.value, d.path)
                    for i, d in enumerate(found)
                ),
            )

    def drift_checked_at(self) -> datetime | None:
        """When the published trees were last compared with their inventories."""
        with self._db.read() as conn:
            row = conn.execute("SELECT checked_at FROM drift_check").fetchone()
        return None if row is None else opt_from_text(row[0])

    def set_drift_checked(self, at: datetime) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO drift_check (id, checked_at) VALUES (1, ?)"
                " ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
                (to_text(at),),
            )

    def drift_deep_checked_at(self) -> datetime | None:
        """When the published files were last hashed and compared with their composes'."""
        with self._db.read() as conn:
            row = conn.execute("SELECT checked_at FROM drift_deep_check").fetchone()
        return None if row is None else opt_from_text(row[0])

    def set_drift_deep_checked(self, at: datetime) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO drift_deep_check (id, checked_at) VALUES (1, ?)"
                " ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
                (to_text(at),),
            )
