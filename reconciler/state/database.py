"""The state database's connection: opening, sanity checks, migration, transactions.

:class:`Database` is what the repositories use: ``read()`` and ``write()`` yield a
:class:`Connection` (``execute``, ``executemany``, cursors with ``fetchone``, ``fetchall``,
``rowcount``) whatever the engine; the SQL they run is spelled so that SQLite and
PostgreSQL both take it, ``?`` placeholders included (:mod:`.postgres` holds the
PostgreSQL implementation). This module is the SQLite one, for a single host:

One SQLite file, ``<state_dir>/state.db``, in WAL mode with ``synchronous=NORMAL``:
a committed transaction survives a ``kill -9`` of the process (a power loss may
lose the last transactions, never the file). Every write is one transaction,
so a crash leaves either all of it or none of it.

Opening is cheap: it reads the header and the schema and checks that the file
is as long as its header says, but does not read every page. :meth:`Database.check`
runs SQLite's ``quick_check`` over the whole file (``open(..., check=True)`` does it
on open); damage found later, by any query, is reported the same way.
"""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from ..errors import StateError
from ..layout import StateLayout
from ..vocabulary import Dialect
from .connection import Connection
from .migrations import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION

BUSY_TIMEOUT_S = 30.0
#: What ``PRAGMA quick_check`` says of a sound file (SQLite's word, not a result of ours).
_QUICK_CHECK_SOUND = "ok"
REBUILD_HINT = (
    "run `reconciler state rebuild` to rebuild what can be rebuilt from the trees (history is lost)"
)


class Database(Protocol):
    """One connection to the state database, whichever engine holds it. Not shared
    between threads."""

    @property
    def dialect(self) -> Dialect: ...
    @property
    def name(self) -> str:
        """Where the state is, for messages: the file, or the URL (never a password)."""
        ...

    @property
    def integrity_errors(self) -> tuple[type[Exception], ...]:
        """The engine's exceptions for a broken constraint (a unique key twice)."""
        ...

    @property
    def schema_version(self) -> int: ...
    def clock(self) -> float: ...
    def read(self) -> AbstractContextManager[Connection]: ...
    def write(self) -> AbstractContextManager[Connection]: ...
    def snapshot(self) -> AbstractContextManager[Connection]:
        """Reads that all see one consistent state (an export)."""
        ...

    def reset_identities(self, conn: Connection) -> None:
        """After rows were inserted with their ids (an import): new rows get higher ones."""
        ...

    def check(self) -> str:
        """Check the whole database; raise :class:`StateError` if damaged, else say what
        was checked."""
        ...

    def close(self) -> None: ...


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


class SqliteDatabase:
    """One SQLite connection to the state database: opening, checks, migration,
    transactions. The repositories (:mod:`.history`, :mod:`.targets`, ...) share it.

    Not shared between threads.
    """

    dialect = Dialect.SQLITE
    integrity_errors: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        """Use :meth:`open`."""
        self.path = path
        self._conn = conn

    @property
    def name(self) -> str:
        return os.fspath(self.path)

    @staticmethod
    def clock() -> float:
        """Now, epoch seconds: one host uses the file, so its clock is the clock."""
        return time.time()

    # -- opening and closing --

    @classmethod
    def open(cls, state_dir: Path, *, create: bool = True, check: bool = False) -> SqliteDatabase:
        """Open ``state_dir/state.db``, creating the directory (0o750) and file if ``create``.

        Migrates an older schema. Raises :class:`StateError` when the file is
        missing (``create=False``), not a SQLite database, damaged, locked for
        longer than the busy timeout, or of a newer schema than this code knows.
        ``check=True`` also runs ``PRAGMA quick_check``, which reads the whole file.
        """
        path = StateLayout(Path(state_dir)).database
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
        with self.read() as conn:
            conn.execute("PRAGMA foreign_keys = ON")
            mode = self._wal(conn)
            if str(mode).lower() != "wal":
                raise StateError(f"state database {self.path} cannot use WAL mode (mode {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
            version = self._header_version(conn)
            self._check_length(conn)
        if version < SCHEMA_VERSION:
            self._migrate()

    def _wal(self, conn: Connection) -> str:
        """Put the file in WAL mode (once: it stays so) and return the mode it is in.

        Switching needs the file to itself, and SQLite answers "locked" at once, without
        its busy handler, while another connection holds it: several processes opening
        a new state together (``run`` and ``worker`` starting on one host) met that.
        So the switch is tried again until the busy timeout, as any other wait is."""
        mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while mode.lower() != "wal":
            try:  # an answer other than "wal" (a filesystem without it) is the caller's
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                busy = getattr(exc, "sqlite_errorname", "").startswith("SQLITE_BUSY")
                if not busy or time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)
        return mode

    def _header_version(self, conn: Connection) -> int:
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

    def _check_length(self, conn: Connection) -> None:
        """A file shorter than its pages (and not made up by the WAL) was truncated.

        Other processes may write meanwhile (``status`` while ``run`` works): the page
        count is read first, then the WAL's size, then the file's. Every page committed
        before the count is in the file or in the WAL; the file only grows, and a WAL
        is only removed once the file holds all of it. So the file and the WAL, measured
        in that order, cover the count unless the file lost pages. (The checkpoint's own
        frame counts cannot be used: a commit between it and the count makes them stale,
        and a third of the opens during writes then looked truncated.)
        """
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # moves what it can into the file
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        expected = pages * page_size
        wal = self.path.with_name(self.path.name + "-wal")
        try:
            in_wal = wal.stat().st_size if wal.exists() else 0
            have = self.path.stat().st_size
        except FileNotFoundError:  # the WAL went between exists() and stat(): all in the file
            have, in_wal = self.path.stat().st_size, 0
        except OSError as exc:
            raise StateError(f"state database {self.path}: {exc}") from exc
        slack = 65536 if expected > 2**30 else 0  # the lock-byte page is never written
        if expected > have + in_wal + slack:
            raise _damaged(self.path, f"{expected} bytes of pages, file has {have}: truncated")

    def _migrate(self) -> None:
        with self.write() as conn:
            # Read again inside the write lock: another process may have migrated meanwhile.
            version = self._header_version(conn)
            for number in range(version, SCHEMA_VERSION):
                for step in MIGRATIONS[number]:
                    if isinstance(step, str):
                        conn.execute(step)
                    else:
                        step(conn)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def check(self) -> str:
        """Run ``PRAGMA quick_check`` over the whole file; raise :class:`StateError` if damaged."""
        with self.read() as conn:
            problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check(5)")]
        if problems != [_QUICK_CHECK_SOUND]:
            raise _damaged(self.path, "; ".join(problems))
        return "quick_check of every page: sound"

    @staticmethod
    def reset_identities(conn: Connection) -> None:
        """Nothing to do: SQLite's next rowid (and AUTOINCREMENT's counter) follows the
        largest id present."""

    def close(self) -> None:
        """Close the connection (the last one to close checkpoints the WAL)."""
        self._conn.close()

    @property
    def schema_version(self) -> int:
        with self.read() as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    # -- transactions --

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """Queries; SQLite errors become :class:`StateError` (bugs still raise as they are)."""
        try:
            yield self._conn
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise
        except sqlite3.Error as exc:
            raise _state_error(self.path, exc) from exc

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction: committed on success, rolled back on any exception.

        ``BEGIN IMMEDIATE`` takes the write lock up front, so a transaction that
        reads before it writes waits for the busy timeout instead of failing
        with SQLITE_BUSY when another process wrote meanwhile.
        """
        with self.read() as _, self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            yield self._conn

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read transaction: its first read fixes what every later one sees (WAL)."""
        with self.read() as _, self._conn:
            self._conn.execute("BEGIN DEFERRED")
            yield self._conn
