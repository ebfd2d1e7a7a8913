"""Every table of the current schema, its columns and its primary key, as the migrations
make them: read from an in-memory SQLite database they built (milliseconds), so that the
list never drifts from the migrations. ``state check`` compares a PostgreSQL state with
it, and ``state export``/``import`` move exactly these tables."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from functools import cache

from .migrations import MIGRATIONS


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]  # the primary key's columns: a stable order for the rows


@cache
def schema_tables() -> tuple[Table, ...]:
    """The tables of the schema the code knows, by name."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for steps in MIGRATIONS:
            for step in steps:
                if isinstance(step, str):
                    conn.execute(step)
                else:
                    step(conn)
        names = [
            str(row[0])
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        tables = []
        for name in names:
            info = conn.execute(f"PRAGMA table_info({name})").fetchall()  # names of our own
            columns = tuple(str(row[1]) for row in info)
            key = tuple(str(row[1]) for row in sorted(info, key=lambda r: int(r[5])) if row[5])
            tables.append(Table(name, columns, key or columns))
        return tuple(tables)
    finally:
        conn.close()
