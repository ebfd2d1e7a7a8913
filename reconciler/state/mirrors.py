"""Mirror propagation: every ``repomd.xml`` production served and when, and what each
public mirror served at its last check (:mod:`reconciler.propagation` checks,
:mod:`reconciler.freshness` judges)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from ..freshness import MirrorCheck, Served
from ..vocabulary import Stage
from .database import Database
from .inventory import under_prefix
from .records import from_text, opt_from_text, to_text

_CHECK_COLUMNS = "mirror, sig, release, path, sha1, etag, last_modified, error, missing, checked_at"


class Mirrors:
    """The ``mirror_served`` and ``mirror_checks`` tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def record_served(self, sig: str, release: str, prefix: str, at: datetime) -> int:
        """Production's inventory under ``prefix`` (a SIG release's directory) was just
        published: its ``repomd.xml`` (the rows with a checksum) become the current ones,
        those whose SHA1 is new to their path published ``at`` (so is one served before
        and back again: a rollback). Returns how many are new."""
        where, params = under_prefix(Stage.PRODUCTION, prefix)
        start = len(prefix) + 1
        with self._db.write() as conn:
            now = dict(
                conn.execute(
                    f"SELECT substr(relpath, CAST(? AS INTEGER)), checksum FROM inventory"  # noqa: S608 - fixed text
                    f" WHERE {where} AND checksum IS NOT NULL",
                    (start, *params),
                ).fetchall()
            )
            was = dict(
                conn.execute(
                    "SELECT path, sha1 FROM mirror_served"
                    " WHERE sig = ? AND release = ? AND current = 1",
                    (sig, release),
                ).fetchall()
            )
            conn.execute(
                "UPDATE mirror_served SET current = 0 WHERE sig = ? AND release = ?",
                (sig, release),
            )
            new = 0
            for path, sha1 in now.items():
                if was.get(path) == sha1:
                    conn.execute(
                        "UPDATE mirror_served SET current = 1"
                        " WHERE sig = ? AND release = ? AND path = ? AND sha1 = ?",
                        (sig, release, path, sha1),
                    )
                    continue
                new += 1
                conn.execute(
                    "INSERT INTO mirror_served (sig, release, path, sha1, published_at, current)"
                    " VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (sig, release, path, sha1)"
                    " DO UPDATE SET published_at = excluded.published_at, current = 1",
                    (sig, release, path, sha1, to_text(at)),
                )
        return new

    def served(self) -> list[Served]:
        """Every ``repomd.xml`` production served, oldest first."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT sig, release, path, sha1, published_at, current FROM mirror_served"
                " ORDER BY sig, release, path, published_at"
            ).fetchall()
        return [Served(s, r, p, h, from_text(at), bool(c)) for s, r, p, h, at, c in rows]

    def checks(self) -> list[MirrorCheck]:
        """What every mirror served at its last check."""
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT {_CHECK_COLUMNS} FROM mirror_checks"  # noqa: S608 - a constant
                " ORDER BY mirror, sig, release, path"
            ).fetchall()
        return [
            MirrorCheck(m, s, r, p, h, e, lm, err, bool(miss), from_text(at))
            for m, s, r, p, h, e, lm, err, miss, at in rows
        ]

    def replace_checks(self, mirrors: Iterable[str], checks: Iterable[MirrorCheck]) -> None:
        """``checks`` are all that is known now of ``mirrors`` (and of no other mirror:
        one no longer configured is forgotten)."""
        with self._db.write() as conn:
            # Every row goes: those of ``mirrors`` are replaced, any other mirror's forgotten.
            conn.execute("DELETE FROM mirror_checks")
            conn.executemany(
                f"INSERT INTO mirror_checks ({_CHECK_COLUMNS})"  # noqa: S608 - a constant
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (mirror, sig, release, path) DO UPDATE SET sha1 = excluded.sha1,"
                " etag = excluded.etag, last_modified = excluded.last_modified,"
                " error = excluded.error, missing = excluded.missing,"
                " checked_at = excluded.checked_at",
                (
                    (c.mirror, c.sig, c.release, c.path, c.sha1, c.etag, c.last_modified,
                     c.error, int(c.missing), to_text(c.checked_at))
                    for c in checks
                ),
            )  # fmt: skip

    def checked_at(self) -> datetime | None:
        """When the mirrors were last checked (None: never)."""
        with self._db.read() as conn:
            row = conn.execute("SELECT max(checked_at) FROM mirror_checks").fetchone()
        return opt_from_text(row[0] if row else None)
