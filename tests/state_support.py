"""Opening a state on either backend in tests: SQLite in a directory, PostgreSQL in a
fresh database of the session's throwaway cluster (tests/pgcluster.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reconciler.hostconfig import StateConfig
from reconciler.state import StateDB
from reconciler.state.postgres import PostgresDatabase

BACKENDS = ["sqlite", "postgresql"]


def pg_config(cluster: Any, database: str | None = None, **extra: Any) -> StateConfig:
    """The ``state:`` section of a fresh database (or ``database``) of ``cluster``."""
    name = database or cluster.new_database()
    settings: dict[str, Any] = {"password_file": cluster.password_file, **extra}
    return StateConfig(url=cluster.url(name), **settings)


def pg_open(config: StateConfig) -> StateDB:
    return StateDB(PostgresDatabase.connect(config, "tests:0"))


def open_backend(backend: str, tmp_path: Path, request: Any) -> StateDB:
    """A new, empty state on ``backend`` (the cluster is started only when needed)."""
    if backend == "sqlite":
        return StateDB.open(tmp_path / "state")
    return pg_open(pg_config(request.getfixturevalue("pg_cluster")))
