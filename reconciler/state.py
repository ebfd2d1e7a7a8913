"""Durable state: what was applied, what each target holds, and what the trees contain.

One SQLite file, ``<state_dir>/state.db``, in WAL mode with ``synchronous=NORMAL``:
a committed transaction survives a ``kill -9`` of the process (a power loss may
lose the last transactions, never the file). Every write is one transaction,
so a crash leaves either all of it or none of it.

The schema is versioned with ``PRAGMA user_version``: ``MIGRATIONS[n]`` takes a
database from version ``n`` to ``n + 1`` and they run in order on open. To change
the schema, append a migration; never edit one that has shipped.

Opening is cheap: it reads the header and the schema and checks that the file
is as long as its header says, but does not read every page. :meth:`StateDB.check`
runs SQLite's ``quick_check`` over the whole file (``open(..., check=True)`` does it
on open); damage found later, by any query, is reported the same way.

Records are frozen dataclasses with explicit ``to_row``/``from_row`` conversion.
Datetimes are timezone-aware and stored as fixed-width ISO-8601 UTC text, so that
text order is time order.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from .errors import StateError

DB_NAME = "state.db"
BUSY_TIMEOUT_S = 30.0
APPLICATION_ID = 0x53494752  # "SIGR": marks the file as a reconciler state database
REBUILD_HINT = (
    "run `reconciler state rebuild` to rebuild what can be rebuilt from the trees (history is lost)"
)

RUNNING = "running"
FINISHED_RESULTS = frozenset({"ok", "failed", "blocked"})
INVENTORY_KINDS = frozenset({"f", "l", "d"})

Row = Sequence[Any]

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 0 -> 1: the first schema.
    (
        f"PRAGMA application_id = {APPLICATION_ID}",
        """CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE history (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            action TEXT NOT NULL,
            sig TEXT NOT NULL,
            release TEXT NOT NULL,
            stage TEXT,
            compose_id TEXT,
            reason TEXT NOT NULL,
            revision TEXT,
            author TEXT,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            result TEXT NOT NULL,
            error TEXT,
            bytes INTEGER NOT NULL DEFAULT 0,
            files INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX history_by_sig ON history (sig, id)",
        "CREATE INDEX history_running ON history (id) WHERE result = 'running'",
        """CREATE TABLE targets (
            sig TEXT NOT NULL,
            release TEXT NOT NULL,
            stage TEXT NOT NULL,
            compose_id TEXT NOT NULL,
            published_at TEXT NOT NULL,
            revision TEXT,
            PRIMARY KEY (sig, release, stage)
        ) WITHOUT ROWID""",
        """CREATE TABLE stage_events (
            id INTEGER PRIMARY KEY,
            sig TEXT NOT NULL,
            release TEXT NOT NULL,
            stage TEXT NOT NULL,
            compose_id TEXT NOT NULL,
            at TEXT NOT NULL
        )""",
        "CREATE INDEX stage_events_by_target ON stage_events (sig, release, stage, id)",
        """CREATE TABLE inventory (
            stage TEXT NOT NULL,
            relpath TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('f', 'l', 'd')),
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            ino INTEGER NOT NULL,
            checksum TEXT,
            PRIMARY KEY (stage, relpath)
        ) WITHOUT ROWID""",
        """CREATE TABLE pending_deletions (
            id INTEGER PRIMARY KEY,
            stage TEXT NOT NULL,
            relpath TEXT NOT NULL,
            due_at TEXT NOT NULL,
            reason TEXT NOT NULL,
            UNIQUE (stage, relpath)
        )""",
        "CREATE INDEX pending_by_due ON pending_deletions (due_at)",
        """CREATE TABLE statuses (
            position INTEGER PRIMARY KEY,
            sig TEXT NOT NULL,
            release TEXT NOT NULL,
            stage TEXT NOT NULL,
            state TEXT NOT NULL,
            desired TEXT,
            actual TEXT,
            reason TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (sig, release, stage)
        )""",
        """CREATE TABLE upstream_cache (
            url TEXT PRIMARY KEY,
            etag TEXT,
            last_modified TEXT,
            sha256 TEXT NOT NULL,
            fetched_at TEXT NOT NULL
        ) WITHOUT ROWID""",
    ),
    # 1 -> 2: the inode change time of inventory entries (file lists use max(mtime, ctime)).
    ("ALTER TABLE inventory ADD COLUMN ctime_ns INTEGER NOT NULL DEFAULT 0",),
    # 2 -> 3: the inventory paths of production (LISTED_STAGES) changed since the file
    # lists were last written from it (relpath '' stands for "anything": render them whole).
    (
        """CREATE TABLE listing_changes (
            stage TEXT NOT NULL,
            relpath TEXT NOT NULL,
            PRIMARY KEY (stage, relpath)
        ) WITHOUT ROWID""",
        "INSERT INTO listing_changes (stage, relpath)"
        " SELECT DISTINCT stage, '' FROM inventory WHERE stage = 'production'",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


# --- datetimes ---------------------------------------------------------------


def _to_text(value: datetime) -> str:
    """Aware datetime -> ``2026-11-25T10:00:00.000000+00:00`` (fixed width, sorts as time)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: state datetimes must be timezone-aware")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _from_text(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _opt_from_text(text: str | None) -> datetime | None:
    return None if text is None else _from_text(text)


# --- records -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One action the reconciler took (or is taking: ``result == "running"``)."""

    id: int
    action: str  # "compose" | "publish" | "prune" | "delete" | ...
    sig: str
    release: str
    stage: str | None
    compose_id: str | None
    reason: str
    revision: str | None
    author: str | None
    started_at: datetime
    finished_at: datetime | None
    result: str  # "running" | "ok" | "failed" | "blocked"
    error: str | None
    bytes: int
    files: int

    @classmethod
    def from_row(cls, row: Row) -> Self:
        (id_, action, sig, release, stage, compose_id, reason, revision, author) = row[:9]
        (started_at, finished_at, result, error, nbytes, files) = row[9:]
        return cls(
            id=id_,
            action=action,
            sig=sig,
            release=release,
            stage=stage,
            compose_id=compose_id,
            reason=reason,
            revision=revision,
            author=author,
            started_at=_from_text(started_at),
            finished_at=_opt_from_text(finished_at),
            result=result,
            error=error,
            bytes=nbytes,
            files=files,
        )


_HISTORY_COLUMNS = (
    "id, action, sig, release, stage, compose_id, reason, revision, author,"
    " started_at, finished_at, result, error, bytes, files"
)


@dataclass(frozen=True, slots=True)
class TargetRecord:
    """What a staging or production target holds now."""

    sig: str
    release: str
    stage: str
    compose_id: str
    published_at: datetime
    revision: str | None

    def to_row(self) -> tuple[Any, ...]:
        return (
            self.sig,
            self.release,
            self.stage,
            self.compose_id,
            _to_text(self.published_at),
            self.revision,
        )

    @classmethod
    def from_row(cls, row: Row) -> Self:
        sig, release, stage, compose_id, published_at, revision = row
        return cls(sig, release, stage, compose_id, _from_text(published_at), revision)


@dataclass(frozen=True, slots=True)
class StageEvent:
    """A completed publish of a compose to a stage; kept forever (soak time, rollback)."""

    sig: str
    release: str
    stage: str
    compose_id: str
    at: datetime

    def to_row(self) -> tuple[Any, ...]:
        return (self.sig, self.release, self.stage, self.compose_id, _to_text(self.at))

    @classmethod
    def from_row(cls, row: Row) -> Self:
        sig, release, stage, compose_id, at = row
        return cls(sig, release, stage, compose_id, _from_text(at))


@dataclass(frozen=True, slots=True)
class InventoryEntry:
    """One file, symlink or directory of a published tree, relative to its stage's root."""

    relpath: str
    kind: str  # "f" | "l" | "d"
    size: int
    mtime_ns: int
    ino: int
    checksum: str | None  # sha1 of a repomd.xml (for the file lists); None otherwise
    ctime_ns: int = 0

    def to_row(self, stage: str) -> tuple[Any, ...]:
        if self.kind not in INVENTORY_KINDS:
            raise ValueError(f"inventory entry {self.relpath!r} has unknown kind {self.kind!r}")
        return (stage, self.relpath, self.kind, self.size, self.mtime_ns, self.ino, self.checksum,
                self.ctime_ns)  # fmt: skip

    @classmethod
    def from_row(cls, row: Row) -> Self:
        relpath, kind, size, mtime_ns, ino, checksum, ctime_ns = row
        return cls(relpath, kind, size, mtime_ns, ino, checksum, ctime_ns)


_SET_META = (
    "INSERT INTO meta (key, value) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
#: A row of a file list (path after the prefix bound to the first ``?``, kind, size,
#: max(mtime, ctime) in whole seconds, checksum), for :meth:`StateDB.listing`.
_LISTING_ROW = "substr(relpath, ?), kind, size, max(mtime_ns, ctime_ns) / 1000000000, checksum"
#: The stages whose file lists are written from the inventory: their changes are noted.
LISTED_STAGES = frozenset({"production"})
_NOTE_LISTING_CHANGE = "INSERT OR IGNORE INTO listing_changes (stage, relpath) VALUES (?, ?)"
#: The meta key (``<key>:<stage>``) of the digest of the file lists last written.
LISTING_DIGEST = "listing_digest"
_UPSERT_INVENTORY = (
    "INSERT INTO inventory (stage, relpath, kind, size, mtime_ns, ino, checksum, ctime_ns)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (stage, relpath) DO UPDATE SET"
    " kind = excluded.kind, size = excluded.size, mtime_ns = excluded.mtime_ns,"
    " ino = excluded.ino, checksum = excluded.checksum, ctime_ns = excluded.ctime_ns"
)


@dataclass(frozen=True, slots=True)
class PendingDeletion:
    """A path of a stage to delete once ``due_at`` has passed."""

    id: int
    stage: str
    relpath: str
    due_at: datetime
    reason: str

    @classmethod
    def from_row(cls, row: Row) -> Self:
        id_, stage, relpath, due_at, reason = row
        return cls(id_, stage, relpath, _from_text(due_at), reason)


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """The last computed status of one target (what ``reconciler status`` shows)."""

    sig: str
    release: str
    stage: str
    state: str
    desired: str | None
    actual: str | None
    reason: str
    updated_at: datetime

    def to_row(self) -> tuple[Any, ...]:
        return (
            self.sig,
            self.release,
            self.stage,
            self.state,
            self.desired,
            self.actual,
            self.reason,
            _to_text(self.updated_at),
        )

    @classmethod
    def from_row(cls, row: Row) -> Self:
        sig, release, stage, state, desired, actual, reason, updated_at = row
        return cls(sig, release, stage, state, desired, actual, reason, _from_text(updated_at))


@dataclass(frozen=True, slots=True)
class UpstreamCacheEntry:
    """Validators of the last fetch of an upstream ``repomd.xml`` (conditional requests)."""

    url: str
    etag: str | None
    last_modified: str | None
    sha256: str
    fetched_at: datetime

    def to_row(self) -> tuple[Any, ...]:
        return (self.url, self.etag, self.last_modified, self.sha256, _to_text(self.fetched_at))

    @classmethod
    def from_row(cls, row: Row) -> Self:
        url, etag, last_modified, sha256, fetched_at = row
        return cls(url, etag, last_modified, sha256, _from_text(fetched_at))


# --- errors ------------------------------------------------------------------


def _damaged(path: Path, detail: str) -> StateError:
    return StateError(f"state database {path} is damaged ({detail}); {REBUILD_HINT}")


def _state_error(path: Path, exc: sqlite3.Error) -> StateError:
    """Turn an SQLite error into a message an operator can act on."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith("SQLITE_NOTADB"):
        return StateError(f"state database {path} is not a SQLite database ({exc}); {REBUILD_HINT}")
    if name.startswith("SQLITE_CORRUPT"):
        return _damaged(path, str(exc))
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StateError(
            f"state database {path} is locked by another process"
            f" (waited {BUSY_TIMEOUT_S:g} s): {exc}"
        )
    return StateError(f"state database {path}: {exc}")


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


def _under(stage: str, prefix: str) -> tuple[str, tuple[str, ...]]:
    """The WHERE clause (one of two fixed texts) and its parameters for the inventory rows of
    ``stage`` whose relpath starts with ``prefix``: a range on the primary key."""
    end = _prefix_end(prefix)
    if end is None:
        return "stage = ? AND relpath >= ?", (stage, prefix)
    return "stage = ? AND relpath >= ? AND relpath < ?", (stage, prefix, end)


# --- the database ------------------------------------------------------------


class StateDB:
    """The reconciler's state database; one SQLite connection per object.

    Not shared between threads. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        """Use :meth:`open`."""
        self.path = path
        self._conn = conn

    # -- opening and closing --

    @classmethod
    def open(cls, state_dir: Path, *, create: bool = True, check: bool = False) -> StateDB:
        """Open ``state_dir/state.db``, creating the directory (0o750) and file if ``create``.

        Migrates an older schema. Raises :class:`StateError` when the file is
        missing (``create=False``), not a SQLite database, damaged, locked for
        longer than the busy timeout, or of a newer schema than this code knows.
        ``check=True`` also runs ``PRAGMA quick_check``, which reads the whole file.
        """
        path = Path(state_dir) / DB_NAME
        if create:
            try:
                Path(state_dir).mkdir(mode=0o750, parents=True, exist_ok=True)
            except OSError as exc:
                raise StateError(f"cannot create state directory {state_dir}: {exc}") from exc
        elif not path.exists():
            raise StateError(f"state database {path} does not exist")
        if path.exists() and not path.is_file():
            raise StateError(f"state database {path} is not a regular file")
        mode = "rwc" if create else "rw"
        uri = f"file:{urllib.parse.quote(os.fspath(path))}?mode={mode}"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise _state_error(path, exc) from exc
        db = cls(path, conn)
        try:
            db._prepare()
            if check:
                db.check()
        except BaseException:
            conn.close()
            raise
        return db

    def _prepare(self) -> None:
        """Connection settings, sanity checks that read no more than the header, migration."""
        with self._read() as conn:
            conn.execute("PRAGMA foreign_keys = ON")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StateError(f"state database {self.path} cannot use WAL mode (mode {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
            version = self._header_version(conn)
            self._check_length(conn)
        if version < SCHEMA_VERSION:
            self._migrate()

    def _header_version(self, conn: sqlite3.Connection) -> int:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StateError(
                f"state database {self.path} has schema version {version}, this reconciler"
                f" knows up to {SCHEMA_VERSION}; upgrade the reconciler"
            )
        foreign = app_id not in (0, APPLICATION_ID) or (version > 0 and app_id != APPLICATION_ID)
        if not foreign and version == 0:
            foreign = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
        if foreign:
            raise StateError(
                f"{self.path} is a SQLite database but not a reconciler state database"
                f" (application_id {app_id:#x}, user_version {version})"
            )
        return version

    def _check_length(self, conn: sqlite3.Connection) -> None:
        """A file shorter than its pages (and not made up by the WAL) was truncated.

        A passive checkpoint first moves committed WAL frames into the file
        (SQLite itself reports a file too short for them as corrupt); what it
        could not move, because of readers, may still make up the difference.
        """
        busy, frames, moved = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        expected = pages * page_size
        try:
            have = self.path.stat().st_size
        except OSError as exc:
            raise StateError(f"state database {self.path}: {exc}") from exc
        if busy or frames != moved:
            have += max(int(frames), 0) * page_size
        slack = 65536 if expected > 2**30 else 0  # the lock-byte page is never written
        if expected > have + slack:
            raise _damaged(self.path, f"{expected} bytes of pages, file has {have}: truncated")

    def _migrate(self) -> None:
        with self._write() as conn:
            # Read again inside the write lock: another process may have migrated meanwhile.
            version = self._header_version(conn)
            for number in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[number]:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def check(self) -> None:
        """Run ``PRAGMA quick_check`` over the whole file; raise :class:`StateError` if damaged."""
        with self._read() as conn:
            problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise _damaged(self.path, "; ".join(problems))

    def close(self) -> None:
        """Close the connection (the last one to close checkpoints the WAL)."""
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._read() as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    # -- transactions --

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """Queries; SQLite errors become :class:`StateError` (bugs still raise as they are)."""
        try:
            yield self._conn
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise
        except sqlite3.Error as exc:
            raise _state_error(self.path, exc) from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed on success, rolled back on any exception.

        ``BEGIN IMMEDIATE`` takes the write lock up front, so a transaction that
        reads before it writes waits for the busy timeout instead of failing
        with SQLITE_BUSY when another process wrote meanwhile.
        """
        with self._read() as conn, conn:
            conn.execute("BEGIN IMMEDIATE")
            yield conn

    # -- key/value --

    def get_meta(self, key: str) -> str | None:
        with self._read() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str | None) -> None:
        """Set ``key`` to ``value``; ``None`` deletes it."""
        with self._write() as conn:
            if value is None:
                conn.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                conn.execute(_SET_META, (key, value))

    # -- history --

    def start_action(
        self,
        *,
        action: str,
        sig: str,
        release: str,
        stage: str | None,
        compose_id: str | None,
        reason: str,
        revision: str | None,
        author: str | None,
        started_at: datetime,
    ) -> int:
        """Record an action as running; returns its id for :meth:`finish_action`."""
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO history (action, sig, release, stage, compose_id, reason, revision,"
                " author, started_at, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    action,
                    sig,
                    release,
                    stage,
                    compose_id,
                    reason,
                    revision,
                    author,
                    _to_text(started_at),
                    RUNNING,
                ),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def finish_action(
        self,
        action_id: int,
        *,
        result: str,
        error: str | None = None,
        bytes: int = 0,
        files: int = 0,
        finished_at: datetime,
        compose_id: str | None = None,
    ) -> None:
        """Record how an action ended: ``result`` is "ok", "failed" or "blocked".

        ``compose_id`` fills in the compose an action made or published, when it was
        not known at the start (a compose, or a publish of the compose just made).
        """
        if result not in FINISHED_RESULTS:
            raise ValueError(f"result {result!r} is not one of {sorted(FINISHED_RESULTS)}")
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE history SET result = ?, error = ?, bytes = ?, files = ?, finished_at = ?,"
                " compose_id = COALESCE(?, compose_id) WHERE id = ?",
                (result, error, bytes, files, _to_text(finished_at), compose_id, action_id),
            )
            if cursor.rowcount != 1:
                raise StateError(f"state database {self.path} has no action {action_id}")

    def history(self, limit: int | None = None, *, sig: str | None = None) -> list[HistoryEntry]:
        """Actions, newest first; at most ``limit``, only those of ``sig`` if given."""
        where, params = ("WHERE sig = ?", [sig]) if sig is not None else ("", [])
        sql = f"SELECT {_HISTORY_COLUMNS} FROM history {where} ORDER BY id DESC LIMIT ?"  # noqa: S608
        with self._read() as conn:
            rows = conn.execute(sql, [*params, -1 if limit is None else limit]).fetchall()
        return [HistoryEntry.from_row(row) for row in rows]

    def interrupted_actions(self) -> list[HistoryEntry]:
        """Actions still marked running, oldest first.

        Left by a crash only if no other process is applying: hold the apply
        lock before treating them as interrupted.
        """
        sql = f"SELECT {_HISTORY_COLUMNS} FROM history WHERE result = ? ORDER BY id"  # noqa: S608
        with self._read() as conn:
            rows = conn.execute(sql, (RUNNING,)).fetchall()
        return [HistoryEntry.from_row(row) for row in rows]

    def mark_interrupted(self, finished_at: datetime) -> int:
        """Mark every running action failed with error "interrupted"; returns how many."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE history SET result = 'failed', error = 'interrupted', finished_at = ?"
                " WHERE result = ?",
                (_to_text(finished_at), RUNNING),
            )
        return cursor.rowcount

    # -- targets --

    def target(self, sig: str, release: str, stage: str) -> TargetRecord | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT sig, release, stage, compose_id, published_at, revision FROM targets"
                " WHERE sig = ? AND release = ? AND stage = ?",
                (sig, release, stage),
            ).fetchone()
        return None if row is None else TargetRecord.from_row(row)

    def targets(self) -> list[TargetRecord]:
        """Every target, ordered by sig, release and stage."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT sig, release, stage, compose_id, published_at, revision FROM targets"
                " ORDER BY sig, release, stage"
            ).fetchall()
        return [TargetRecord.from_row(row) for row in rows]

    def set_target(self, record: TargetRecord) -> None:
        """Record a completed publish: the target now holds it, and a StageEvent is appended.

        Setting the record the target already holds (same compose and time) is
        a no-op, so re-running a finished publish adds no event.
        """
        with self._write() as conn:
            current = conn.execute(
                "SELECT compose_id, published_at FROM targets"
                " WHERE sig = ? AND release = ? AND stage = ?",
                (record.sig, record.release, record.stage),
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

    def clear_target(self, sig: str, release: str, stage: str) -> None:
        """Forget what a target holds (its stage events stay)."""
        with self._write() as conn:
            conn.execute(
                "DELETE FROM targets WHERE sig = ? AND release = ? AND stage = ?",
                (sig, release, stage),
            )

    def stage_events(self, sig: str, release: str, stage: str) -> list[StageEvent]:
        """Every publish to a target, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT sig, release, stage, compose_id, at FROM stage_events"
                " WHERE sig = ? AND release = ? AND stage = ? ORDER BY id",
                (sig, release, stage),
            ).fetchall()
        return [StageEvent.from_row(row) for row in rows]

    # -- inventories --

    def inventory(self, stage: str, prefix: str = "") -> dict[str, InventoryEntry]:
        """Entries of ``stage`` whose relpath starts with ``prefix`` (a string prefix)."""
        where, params = _under(stage, prefix)
        sql = (
            "SELECT relpath, kind, size, mtime_ns, ino, checksum, ctime_ns FROM inventory"  # noqa: S608 - _under's text is fixed
            f" WHERE {where}"
        )
        with self._read() as conn:
            rows = conn.execute(sql, params).fetchall()
        return {row[0]: InventoryEntry.from_row(row) for row in rows}

    def listing(self, stage: str, prefix: str) -> list[tuple[str, str, int, int, str | None]]:
        """``(path after prefix, kind, size, max(mtime, ctime) in seconds, checksum)`` of each
        entry of ``stage`` under ``prefix``, sorted by path: the rows of a file list."""
        where, params = _under(stage, prefix)
        sql = f"SELECT {_LISTING_ROW} FROM inventory WHERE {where} ORDER BY relpath"  # noqa: S608 - as above
        with self._read() as conn:
            return conn.execute(sql, (len(prefix) + 1, *params)).fetchall()

    def apply_inventory_changes(
        self, stage: str, upserts: Iterable[InventoryEntry], deletes: Iterable[str]
    ) -> None:
        """Delete ``deletes``, then insert or update ``upserts``, in one transaction.

        A path in both ends up present (the upsert is the newer fact).
        """
        deletes, upserts = list(deletes), list(upserts)
        with self._write() as conn:
            conn.executemany(
                "DELETE FROM inventory WHERE stage = ? AND relpath = ?",
                ((stage, relpath) for relpath in deletes),
            )
            conn.executemany(_UPSERT_INVENTORY, (e.to_row(stage) for e in upserts))
            if stage in LISTED_STAGES:
                conn.executemany(
                    _NOTE_LISTING_CHANGE,
                    ((stage, p) for p in chain(deletes, (e.relpath for e in upserts))),
                )

    def replace_inventory(self, stage: str, prefix: str, entries: Iterable[InventoryEntry]) -> None:
        """Make ``entries`` the whole inventory under ``prefix``, in one transaction.

        Every entry must start with ``prefix`` (ValueError otherwise, nothing changed).
        """

        def rows() -> Iterator[tuple[Any, ...]]:
            for entry in entries:
                if not entry.relpath.startswith(prefix):
                    raise ValueError(f"inventory entry {entry.relpath!r} is not under {prefix!r}")
                yield entry.to_row(stage)

        where, params = _under(stage, prefix)
        with self._write() as conn:
            conn.execute(f"DELETE FROM inventory WHERE {where}", params)  # noqa: S608 - as above
            conn.executemany(_UPSERT_INVENTORY, rows())
            if stage in LISTED_STAGES:
                conn.execute(_NOTE_LISTING_CHANGE, (stage, ""))  # unknown changes: whole lists

    # -- what the file lists were last written from --

    def listing_changes(self, stage: str) -> frozenset[str] | None:
        """The paths of ``stage`` (one of :data:`LISTED_STAGES`) whose inventory rows changed
        since :meth:`listing_written`; ``None`` when that is unknown (after
        :meth:`replace_inventory` or an upgrade)."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT relpath FROM listing_changes WHERE stage = ?", (stage,)
            ).fetchall()
        paths = frozenset(r[0] for r in rows)
        return None if "" in paths else paths

    def listing_of(
        self, stage: str, prefix: str, relpaths: Iterable[str]
    ) -> list[tuple[str, str, int, int, str | None]]:
        """The :meth:`listing` rows of those of ``relpaths`` (all under ``prefix``) that
        are in the inventory, in the order given."""
        sql = f"SELECT {_LISTING_ROW} FROM inventory WHERE stage = ? AND relpath = ?"  # noqa: S608 - a constant
        start = len(prefix) + 1
        found: list[tuple[str, str, int, int, str | None]] = []
        with self._read() as conn:
            for relpath in relpaths:
                if not relpath.startswith(prefix):
                    raise ValueError(f"{relpath!r} is not under {prefix!r}")
                row = conn.execute(sql, (start, stage, relpath)).fetchone()
                if row is not None:
                    found.append(row)
        return found

    def listing_written(self, stage: str, digest: str) -> None:
        """The file lists of ``stage`` were written from the inventory as it is now, and
        their content has ``digest``: forget the changes, remember the digest."""
        with self._write() as conn:
            conn.execute("DELETE FROM listing_changes WHERE stage = ?", (stage,))
            conn.execute(_SET_META, (f"{LISTING_DIGEST}:{stage}", digest))

    def listing_digest(self, stage: str) -> str | None:
        """The digest :meth:`listing_written` recorded for ``stage``, if any."""
        return self.get_meta(f"{LISTING_DIGEST}:{stage}")

    # -- pending deletions --

    def add_pending(
        self, stage: str, relpaths: Iterable[str], due_at: datetime, reason: str
    ) -> None:
        """Schedule deletions; a path already pending keeps its earliest due time and reason."""
        due = _to_text(due_at)
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO pending_deletions (stage, relpath, due_at, reason) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (stage, relpath) DO UPDATE SET"
                " due_at = excluded.due_at, reason = excluded.reason"
                " WHERE excluded.due_at < pending_deletions.due_at",
                ((stage, relpath, due, reason) for relpath in relpaths),
            )

    def pending(self, stage: str | None = None) -> list[PendingDeletion]:
        """Pending deletions (of ``stage`` if given), soonest due first."""
        sql = "SELECT id, stage, relpath, due_at, reason FROM pending_deletions"
        params: tuple[str, ...] = ()
        if stage is not None:
            sql += " WHERE stage = ?"
            params = (stage,)
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY due_at, id", params).fetchall()
        return [PendingDeletion.from_row(row) for row in rows]

    def due(self, now: datetime) -> list[PendingDeletion]:
        """Pending deletions whose due time is at or before ``now``, soonest first."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT id, stage, relpath, due_at, reason FROM pending_deletions"
                " WHERE due_at <= ? ORDER BY due_at, id",
                (_to_text(now),),
            ).fetchall()
        return [PendingDeletion.from_row(row) for row in rows]

    def remove_pending(self, ids: Iterable[int]) -> None:
        """Forget pending deletions by id (done, or no longer wanted)."""
        with self._write() as conn:
            conn.executemany("DELETE FROM pending_deletions WHERE id = ?", ((i,) for i in ids))

    def cancel_pending(self, stage: str, relpaths: Iterable[str]) -> None:
        """A path needed again is no longer deleted."""
        with self._write() as conn:
            conn.executemany(
                "DELETE FROM pending_deletions WHERE stage = ? AND relpath = ?",
                ((stage, relpath) for relpath in relpaths),
            )

    # -- statuses --

    def set_statuses(self, statuses: Iterable[TargetStatus]) -> None:
        """Replace every status; :meth:`statuses` returns them in this order.

        Two statuses for the same target raise ValueError (nothing changed).
        """
        with self._write() as conn:
            conn.execute("DELETE FROM statuses")
            try:
                conn.executemany(
                    "INSERT INTO statuses (sig, release, stage, state, desired, actual, reason,"
                    " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (status.to_row() for status in statuses),
                )
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"two statuses for the same target: {exc}") from exc

    def statuses(self) -> list[TargetStatus]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT sig, release, stage, state, desired, actual, reason, updated_at"
                " FROM statuses ORDER BY position"
            ).fetchall()
        return [TargetStatus.from_row(row) for row in rows]

    # -- upstream cache --

    def upstream_cache(self, url: str) -> UpstreamCacheEntry | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT url, etag, last_modified, sha256, fetched_at FROM upstream_cache"
                " WHERE url = ?",
                (url,),
            ).fetchone()
        return None if row is None else UpstreamCacheEntry.from_row(row)

    def set_upstream_cache(self, entry: UpstreamCacheEntry) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO upstream_cache (url, etag, last_modified, sha256, fetched_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (url) DO UPDATE SET etag = excluded.etag,"
                " last_modified = excluded.last_modified, sha256 = excluded.sha256,"
                " fetched_at = excluded.fetched_at",
                entry.to_row(),
            )
