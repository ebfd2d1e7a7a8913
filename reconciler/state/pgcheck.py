"""``state check`` on PostgreSQL: SQLite's ``quick_check`` reads every page; PostgreSQL
keeps its own pages sound, so what is checked is what could be wrong above them:

- every table and column the migrations make is there (:mod:`.tables`);
- every text column sorts bytewise (``COLLATE "C"``), as SQLite's do (the file lists
  and every ORDER BY depend on it);
- the sequence of every id the database hands out is ahead of the ids present (an
  import that left it behind would make the next insert fail);
- the stages, results and states stored are ones this code knows.

Each is one cheap query per table or column; nothing reads a whole large table but the
value checks, which read only small tables.
"""

from __future__ import annotations

from enum import StrEnum

from ..errors import StateError
from ..vocabulary import JobState, Result, Stage, TargetState
from .connection import Connection
from .tables import schema_tables

#: The ids the database hands out (their inserts leave them out); the other identity
#: columns (positions, terms) are always given by the code.
_HANDED_OUT = (
    ("history", "id"),
    ("stage_events", "id"),
    ("pending_deletions", "id"),
    ("statuses", "position"),
    ("compose_jobs", "id"),
)
#: (table, column, the values it may hold); NULL is allowed where the column allows it.
_KNOWN_VALUES: tuple[tuple[str, str, type[StrEnum]], ...] = (
    ("history", "result", Result),
    ("history", "stage", Stage),
    ("targets", "stage", Stage),
    ("stage_events", "stage", Stage),
    ("statuses", "stage", Stage),
    ("statuses", "state", TargetState),
    ("compose_jobs", "state", JobState),
)


def _columns(conn: Connection) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for table, column in conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema()"
    ):
        found.setdefault(str(table), set()).add(str(column))
    return found


def _check_tables(conn: Connection, url: str) -> int:
    found = _columns(conn)
    problems = []
    columns = 0
    for table in schema_tables():
        have = found.get(table.name)
        if have is None:
            problems.append(f"table {table.name} is missing")
            continue
        missing = sorted(set(table.columns) - have)
        if missing:
            problems.append(f"table {table.name} lacks column(s) {', '.join(missing)}")
        columns += len(table.columns)
    unsorted = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND data_type = 'text'"
        " AND coalesce(collation_name, '') <> 'C' ORDER BY table_name, column_name"
    ).fetchall()
    problems.extend(f'{t}.{c} does not sort bytewise (not COLLATE "C")' for t, c in unsorted)
    if problems:
        raise StateError(f"state database {url}: " + "; ".join(problems))
    return columns


def _check_identities(conn: Connection, url: str) -> int:
    behind = []
    for table, column in _HANDED_OUT:
        sequence = conn.execute("SELECT pg_get_serial_sequence(?, ?)", (table, column)).fetchone()[
            0
        ]
        if sequence is None:
            behind.append(f"{table}.{column} is not an identity column")
            continue
        last, called = conn.execute(f"SELECT last_value, is_called FROM {sequence}").fetchone()  # noqa: S608 - a catalog name
        largest = conn.execute(f'SELECT max("{column}") FROM "{table}"').fetchone()[0]  # noqa: S608
        following = int(last) + 1 if called else int(last)
        if largest is not None and following <= int(largest):
            behind.append(f"{table}.{column} (next {following}, largest present {largest})")
    if behind:
        raise StateError(
            f"state database {url}: identity sequences behind their rows: {'; '.join(behind)}"
        )
    return len(_HANDED_OUT)


def _check_values(conn: Connection, url: str) -> None:
    unknown: list[str] = []
    for table, column, enum in _KNOWN_VALUES:
        values = [member.value for member in enum]
        marks = ", ".join("?" * len(values))
        rows = conn.execute(
            f'SELECT DISTINCT "{column}" FROM "{table}"'  # noqa: S608 - names of our own
            f' WHERE "{column}" NOT IN ({marks}) ORDER BY 1 LIMIT 5',
            values,
        ).fetchall()
        unknown.extend(f"{table}.{column} = {row[0]!r}" for row in rows)
    if unknown:
        raise StateError(f"state database {url}: values this code does not know: {unknown}")


def check_database(conn: Connection, url: str) -> str:
    """Run every check; raise :class:`StateError` naming what is wrong, else say what
    was checked."""
    columns = _check_tables(conn, url)
    identities = _check_identities(conn, url)
    _check_values(conn, url)
    return (
        f"{len(schema_tables())} tables and their {columns} columns as the migrations make"
        f" them, text sorted bytewise; {identities} identity sequences ahead of their rows;"
        f" the stages, results and states stored are known"
    )
