"""Durable state: what was applied, what each target holds, what the trees contain,
and what was last learned from outside.

One SQLite file in the state directory (:mod:`.database`: WAL, checks, migrations
from :mod:`.migrations`), or one PostgreSQL database that several hosts share
(:mod:`.postgres`, the same schema and SQL), read and written through one repository
per concern:

==========================  =============================================================
``StateDB.history``         :class:`~.history.History`: every action, why, by whom
``StateDB.targets``         :class:`~.targets.Targets`: what each target holds, its
                            publishes, statuses, unfinished publishes
``StateDB.inventory``       :class:`~.inventory.Inventory`: every published path; what the
                            file lists were written from
``StateDB.unmanaged``       :class:`~.unmanaged.Unmanaged`: what else lies under published
                            SIG directories (kept, listed, reported)
``StateDB.pending``         :class:`~.pending.PendingDeletions`: superseded paths, and when
``StateDB.sources``         :class:`~.sources.Sources`: the desired-state source, upstream
                            validators, drift
``StateDB.mirrors``         :class:`~.mirrors.Mirrors`: every repomd.xml production
                            served and when; what each mirror served at its last check
``StateDB.leases``          :class:`~.leases.Leases`: who leads (publishes), every term
``StateDB.jobs``            :class:`~.jobs.Jobs`: compose jobs, who works them, attempts
==========================  =============================================================

Records (:mod:`.records`) are frozen dataclasses with explicit row conversion.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Self

from ..errors import StateError
from ..facts import DriftFinding, TargetKey, UpstreamCacheEntry
from ..hostconfig import HostConfig
from ..nodes import this_process
from ..vocabulary import Dialect
from .database import BUSY_TIMEOUT_S, REBUILD_HINT, Database, SqliteDatabase
from .history import ActionStart, History
from .inventory import Inventory
from .jobs import ComposeAttempt, ComposeJob, ComposesOfJobs, Jobs
from .leases import LeaderRecord, LeaderTerm, Leases
from .migrations import APPLICATION_ID, SCHEMA_VERSION
from .mirrors import Mirrors
from .pending import PendingDeletions
from .records import (
    HistoryEntry,
    InventoryEntry,
    ListingRow,
    PassRecord,
    PendingDeletion,
    SourceRecord,
    StageEvent,
    TargetRecord,
    TargetStatus,
    UnmanagedEntry,
    UnmanagedSummary,
)
from .sources import Sources
from .targets import Targets
from .unmanaged import Unmanaged


class StateDB:
    """The reconciler's state database: one connection and its repositories.

    Not shared between threads. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, db: Database) -> None:
        """Use :meth:`open`."""
        self._db = db
        self.history = History(db)
        self.targets = Targets(db)
        self.inventory = Inventory(db)
        self.unmanaged = Unmanaged(db)
        self.pending = PendingDeletions(db)
        self.sources = Sources(db)
        self.mirrors = Mirrors(db)
        self.leases = Leases(db)
        self.jobs = Jobs(db)

    @classmethod
    def open(cls, state_dir: Path, *, create: bool = True, check: bool = False) -> StateDB:
        """Open the SQLite file ``state_dir/state.db`` (see :meth:`SqliteDatabase.open`)."""
        return cls(SqliteDatabase.open(state_dir, create=create, check=check))

    @classmethod
    def connect(cls, host: HostConfig, *, create: bool = True, check: bool = False) -> StateDB:
        """Open the state the host config names: its SQLite file (as :meth:`open`), or
        its PostgreSQL database, migrated unless ``create`` is false (an empty database
        gets the whole schema). ``check``: :meth:`check` it first."""
        if host.state.dialect is Dialect.SQLITE:
            return cls.open(host.state_dir, create=create, check=check)
        from .postgres import PostgresDatabase  # psycopg: only where PostgreSQL is used

        db = PostgresDatabase.connect(host.state, this_process(host), migrate=create)
        try:
            if check:
                db.check()
        except BaseException:
            db.close()
            raise
        return cls(db)

    @property
    def name(self) -> str:
        """Where the state is, for messages: the file, or the URL (without a password)."""
        return self._db.name

    @property
    def path(self) -> Path:
        """The SQLite file (StateError on PostgreSQL: use :attr:`name`)."""
        if not isinstance(self._db, SqliteDatabase):
            raise StateError(f"state database {self._db.name} is not a file")
        return self._db.path

    @property
    def schema_version(self) -> int:
        return self._db.schema_version

    @property
    def dialect(self) -> Dialect:
        """Which engine holds the state (SQL that differs between them asks this)."""
        return self._db.dialect

    def clock(self) -> float:
        """Now, in epoch seconds, by the database's clock: the one clock every host that
        shares a PostgreSQL state agrees on (leases, job heartbeats); the local clock
        for SQLite, whose file one host uses."""
        return self._db.clock()

    def check(self) -> str:
        """Check the whole database (SQLite: ``PRAGMA quick_check``; PostgreSQL: the schema
        and cheap consistency queries); raise StateError if damaged, else say what was
        checked."""
        return self._db.check()

    @property
    def database(self) -> Database:
        """The connection itself, for what works on every table (:mod:`.transfer`)."""
        return self._db

    def close(self) -> None:
        """Close the connection (SQLite: the last one to close checkpoints the WAL)."""
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


__all__ = [
    "APPLICATION_ID",
    "BUSY_TIMEOUT_S",
    "REBUILD_HINT",
    "SCHEMA_VERSION",
    "ActionStart",
    "ComposeAttempt",
    "ComposeJob",
    "ComposesOfJobs",
    "DriftFinding",
    "HistoryEntry",
    "InventoryEntry",
    "Jobs",
    "LeaderRecord",
    "LeaderTerm",
    "Leases",
    "ListingRow",
    "Mirrors",
    "PassRecord",
    "PendingDeletion",
    "SourceRecord",
    "StageEvent",
    "StateDB",
    "TargetKey",
    "TargetRecord",
    "TargetStatus",
    "UnmanagedEntry",
    "UnmanagedSummary",
    "UpstreamCacheEntry",
]
