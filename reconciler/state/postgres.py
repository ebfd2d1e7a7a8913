"""The state in PostgreSQL: one database that every host of the distribution shares.

The repositories run the SQL they run on SQLite (:mod:`.pgsql` changes its placeholders;
the migrations' DDL is translated word by word), through psycopg 3. The schema is the
same, migrated by the same :data:`~.migrations.MIGRATIONS` in one transaction under an
advisory lock (hosts starting at once migrate once); the version and the application
id that SQLite keeps in its header live in the table ``reconciler_schema``.

Transactions: ``write()`` is one transaction (READ COMMITTED), committed on success and
rolled back on any exception; ``read()`` runs each statement on its own, as SQLite's
reads do; ``snapshot()`` is one REPEATABLE READ transaction (an export). A statement
waits at most ``statement_timeout``, a connection at most ``connect_timeout``.

A lost connection (the server restarted, the network cut) fails the transaction it
was in with a :class:`StateError` (PostgreSQL keeps nothing of it), and the next
transaction connects again: once, with no retry loop. Every message names the URL,
which never holds the password (that comes from ``password_file``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg

from ..errors import StateError
from ..hostconfig import StateConfig
from ..vocabulary import Dialect
from .connection import Connection, Cursor
from .migrations import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from .pgcheck import check_database
from .pgsql import is_pragma, translate, translate_ddl

#: pg_advisory_xact_lock(APPLICATION_ID, _MIGRATION_LOCK): the two-key form, so it
#: cannot meet a one-key (bigint) lock such as the leader lease's.
_MIGRATION_LOCK = 1
_MARKER = "reconciler_schema"
_CREATE_MARKER = f"""CREATE TABLE IF NOT EXISTS {_MARKER} (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    application_id BIGINT NOT NULL,
    version BIGINT NOT NULL
)"""


def read_password(config: StateConfig) -> str | None:
    """The first line of ``password_file`` (None: no file configured)."""
    if config.password_file is None:
        return None
    try:
        with Path(config.password_file).open(encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StateError(
            f"state database {config.url}: cannot read the password file"
            f" {config.password_file}: {reason}"
        ) from exc


def _state_error(
    config: StateConfig, exc: psycopg.Error, doing: str, secret: str | None = None
) -> StateError:
    text = str(exc).strip() or type(exc).__name__
    if secret:
        text = text.replace(secret, "***")  # libpq never says it; be sure
    return StateError(f"state database {config.url}: {doing}{text}")


def pg_connect(config: StateConfig, application_name: str) -> psycopg.Connection[Any]:
    """A new autocommit connection to the state database, with the host config's
    deadlines (``connect_timeout``; ``statement_timeout`` on the session) and the password
    read from ``password_file`` now (it may have been rotated). Also for connections of
    their own (the leader lease's heartbeat). Raises :class:`StateError` naming the URL."""
    password = read_password(config)
    timeout_ms = max(1, round(config.statement_timeout * 1000))
    try:
        return psycopg.connect(
            config.url or "",
            password=password,
            connect_timeout=max(2, math.ceil(config.connect_timeout)),  # libpq: at least 2
            application_name=application_name[:63],  # the server's limit
            options=f"-c statement_timeout={timeout_ms}",
            autocommit=True,  # transactions are explicit: write() and snapshot()
        )
    except psycopg.Error as exc:
        raise _state_error(config, exc, "cannot connect: ", password) from exc


class PgConnection:
    """A psycopg connection that takes the repositories' ``?`` spelling."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        return self.raw.execute(translate(sql), tuple(parameters))

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor:
        cursor = self.raw.cursor()
        cursor.executemany(translate(sql), (tuple(p) for p in parameters))
        return cursor

    def execute_ddl(self, sql: str) -> None:
        self.raw.execute(translate_ddl(sql), ())


class PostgresDatabase:
    """One psycopg connection to the shared state database (not shared between threads).

    Use :meth:`connect`.
    """

    dialect = Dialect.POSTGRESQL
    integrity_errors: tuple[type[Exception], ...] = (psycopg.IntegrityError,)

    def __init__(self, config: StateConfig, application_name: str) -> None:
        assert config.url is not None
        self.config = config
        self.url = config.url  # never holds a password (the host config refuses one)
        self._application_name = application_name
        read_password(config)  # a missing or unreadable file fails at once
        self._conn: psycopg.Connection[Any] | None = None
        self._depth = 0  # > 0: inside read(), write() or snapshot() of ours
        self._in_transaction = False  # inside write() or snapshot()

    @property
    def name(self) -> str:
        return self.url

    @classmethod
    def connect(
        cls, config: StateConfig, application_name: str, *, migrate: bool = True
    ) -> PostgresDatabase:
        """Connect, and migrate an older schema (an empty database: the whole schema)
        unless ``migrate`` is false. Raises :class:`StateError` when the server cannot
        be reached or refuses us, the database holds tables of something else, or its
        schema is newer than this code knows."""
        db = cls(config, application_name)
        try:
            if db.schema_version != SCHEMA_VERSION and migrate:
                db._migrate()
        except BaseException:
            db.close()
            raise
        return db

    # -- the connection --

    def _error(self, exc: psycopg.Error) -> StateError:
        lost = self._conn is None or self._conn.closed or self._conn.broken
        return _state_error(self.config, exc, "connection lost: " if lost else "")

    def _connection(self) -> psycopg.Connection[Any]:
        """The open connection, or a new one if there is none or it was lost."""
        if self._conn is not None and not (self._conn.closed or self._conn.broken):
            return self._conn
        self._drop()
        self._conn = pg_connect(self.config, self._application_name)
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            with suppress(psycopg.Error):  # it was lost already
                self._conn.close()
            self._conn = None

    @contextmanager
    def _transaction(self, isolation: str | None) -> Iterator[Connection]:
        """One transaction (``isolation`` None: each statement on its own). Inside a
        transaction, a nested one joins it; inside plain reads, a nested transaction is
        a transaction of its own (as SQLite's BEGIN IMMEDIATE inside reads)."""
        if self._depth and (self._in_transaction or isolation is None):
            assert self._conn is not None
            yield PgConnection(self._conn)
            return
        conn = self._connection()
        self._depth += 1
        try:
            if isolation is None:
                yield PgConnection(conn)
            else:
                self._in_transaction = True
                with conn.transaction():
                    conn.execute(f"SET TRANSACTION {isolation}")
                    yield PgConnection(conn)
        except (psycopg.IntegrityError, psycopg.ProgrammingError, psycopg.InterfaceError):
            if conn.broken:
                self._drop()
                raise StateError(f"state database {self.url}: connection lost") from None
            raise  # a constraint broken or a bug: as on SQLite, raised as it is
        except psycopg.Error as exc:
            error = self._error(exc)
            if conn.broken or conn.closed:
                self._drop()  # the next transaction connects again
            raise error from exc
        finally:
            self._depth -= 1
            if isolation is not None:
                self._in_transaction = False

    def read(self) -> AbstractContextManager[Connection]:
        """Queries, each statement on its own (as SQLite's reads)."""
        return self._transaction(None)

    def write(self) -> AbstractContextManager[Connection]:
        """One write transaction: committed on success, rolled back on any exception."""
        return self._transaction("ISOLATION LEVEL READ COMMITTED")

    def snapshot(self) -> AbstractContextManager[Connection]:
        """One transaction whose reads all see the same state."""
        return self._transaction("ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def clock(self) -> float:
        """Now, by the server's clock (every host agrees on it)."""
        with self.read() as conn:
            row = conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()
        return float(row[0])

    def close(self) -> None:
        self._drop()

    # -- the schema --

    @staticmethod
    def _version(conn: Connection, url: str) -> int:
        """The schema version (0: an empty database); refuses someone else's database
        and a schema newer than this code knows."""
        # one statement, one snapshot: another host's migration committing between two
        # looks made a complete schema without its marker look like someone else's tables
        marked, tables = conn.execute(
            "SELECT count(*) FILTER (WHERE tablename = ?) > 0, count(*) FROM pg_tables"
            " WHERE schemaname = current_schema()",
            (_MARKER,),
        ).fetchone()
        if not marked:
            if tables:
                raise StateError(
                    f"state database {url} holds {tables} tables but is not a reconciler"
                    f" state database (no {_MARKER} table)"
                )
            return 0
        row = conn.execute(f"SELECT application_id, version FROM {_MARKER}").fetchone()  # noqa: S608
        if row is None or int(row[0]) != APPLICATION_ID:
            raise StateError(f"state database {url} is not a reconciler state database")
        version = int(row[1])
        if version > SCHEMA_VERSION:
            raise StateError(
                f"state database {url} has schema version {version}, this reconciler"
                f" knows up to {SCHEMA_VERSION}; upgrade the reconciler"
            )
        return version

    @property
    def schema_version(self) -> int:
        with self.read() as conn:
            return self._version(conn, self.url)

    def _migrate(self) -> None:
        with self.write() as conn:
            assert isinstance(conn, PgConnection)
            # Another host may be migrating: wait for it, then read the version again.
            conn.execute("SELECT pg_advisory_xact_lock(?, ?)", (APPLICATION_ID, _MIGRATION_LOCK))
            version = self._version(conn, self.url)
            for number in range(version, SCHEMA_VERSION):
                for step in MIGRATIONS[number]:
                    if not isinstance(step, str):
                        step(conn)
                    elif not is_pragma(step):  # the application id: in the marker below
                        conn.execute_ddl(step)
            conn.execute_ddl(_CREATE_MARKER)
            conn.execute(
                f"INSERT INTO {_MARKER} (id, application_id, version) VALUES (1, ?, ?)"  # noqa: S608
                " ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                (APPLICATION_ID, SCHEMA_VERSION),
            )

    def reset_identities(self, conn: Connection) -> None:
        """Each identity column's next value above the largest id present (rows were
        inserted with their ids: the identity's sequence did not move)."""
        columns = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND is_identity = 'YES'"
            " ORDER BY table_name"
        ).fetchall()
        for table, column in columns:
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence(?, ?),"  # noqa: S608 - catalog names
                f' coalesce(max("{column}"), 0) + 1, false) FROM "{table}"',
                (table, column),
            )

    def check(self) -> str:
        """The schema version, every table and column, and cheap consistency queries
        (:mod:`.pgcheck`); raises :class:`StateError` naming what is wrong."""
        with self.snapshot() as conn:
            version = self._version(conn, self.url)
            if version != SCHEMA_VERSION:
                raise StateError(
                    f"state database {self.url} has schema version {version}, not"
                    f" {SCHEMA_VERSION}: open it with `reconciler status` to migrate it"
                )
            return check_database(conn, self.url)
