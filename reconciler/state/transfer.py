"""A whole state as a file, to move it between backends (``state export`` and ``state
import``): SQLite to PostgreSQL when a host joins a shared state, and back.

The format (``reconciler-state`` version 1) is JSON lines, UTF-8:

1. a header: ``{"format": "reconciler-state", "version": 1, "schema": 9, "from": "sqlite"}``
   (``schema``: the state's schema version; an import needs the same one);
2. for each table of the schema (:mod:`.tables`), by name: a line
   ``{"table": NAME, "columns": [...], "rows": N}``, then its ``N`` rows, one JSON
   array each, the values in the order of ``columns``, the rows in the order of the
   primary key (text compared bytewise, on both backends, so that an export of an
   imported state is the same file);
3. a last line ``{"end": true, "tables": T, "rows": R}``: a file cut short is refused.

Values are what the columns hold: text, integers, floats (written so that they read
back exactly) and null. An export reads one consistent snapshot; an import is one
transaction that refuses a state that already holds something (unless ``replace``),
a file of another schema version, and anything malformed, naming the line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from ..errors import StateError
from .connection import Connection
from .database import Database
from .migrations import SCHEMA_VERSION
from .tables import Table, schema_tables

FORMAT = "reconciler-state"
FORMAT_VERSION = 1
_BATCH = 1000


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)  # "trigger", "position": keywords somewhere


def export_state(db: Database, out: TextIO) -> int:
    """Write every row of every table to ``out``; returns how many rows."""
    tables = schema_tables()
    total = 0
    with db.snapshot() as conn:
        header = {"format": FORMAT, "version": FORMAT_VERSION, "from": db.dialect.value}
        header["schema"] = db.schema_version
        out.write(json.dumps(header) + "\n")
        for table in tables:
            rows = conn.execute(
                f"SELECT {_quoted(table.columns)} FROM {table.name}"  # noqa: S608 - our names
                f" ORDER BY {_quoted(table.key)}"
            ).fetchall()
            meta = {"table": table.name, "columns": list(table.columns), "rows": len(rows)}
            out.write(json.dumps(meta) + "\n")
            for row in rows:
                out.write(json.dumps(list(row), ensure_ascii=False) + "\n")
            total += len(rows)
    out.write(json.dumps({"end": True, "tables": len(tables), "rows": total}) + "\n")
    return total


class _Lines:
    """The file's lines, parsed, with their numbers for messages."""

    def __init__(self, lines: Iterable[str], name: str) -> None:
        self._lines: Iterator[tuple[int, str]] = enumerate(lines, 1)
        self.name = name
        self.number = 0

    def error(self, what: str) -> StateError:
        return StateError(f"{self.name}:{self.number}: {what}")

    def next(self) -> Any:
        try:
            self.number, line = next(self._lines)
        except StopIteration:
            raise self.error("the file ends early (cut short?)") from None
        try:
            return json.loads(line)
        except ValueError as exc:
            raise self.error(f"not JSON: {exc}") from exc


def _holds_something(conn: Connection) -> str | None:
    """The first table that holds a row (a new state's one empty ``source`` row aside)."""
    for table in schema_tables():
        if table.name == "source":
            row = conn.execute(
                "SELECT 1 FROM source WHERE good_revision IS NOT NULL"
                " OR applied_revision IS NOT NULL OR checkout_revision IS NOT NULL"
            ).fetchone()
        else:
            row = conn.execute(f"SELECT 1 FROM {table.name} LIMIT 1").fetchone()  # noqa: S608
        if row is not None:
            return table.name
    return None


def _read_header(lines: _Lines) -> None:
    header = lines.next()
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise lines.error(f"not a {FORMAT} file (no header)")
    if header.get("version") != FORMAT_VERSION:
        raise lines.error(f"{FORMAT} version {header.get('version')!r} is not {FORMAT_VERSION}")
    schema = header.get("schema")
    if not isinstance(schema, int) or schema > SCHEMA_VERSION:
        raise lines.error(
            f"the state has schema version {schema!r}, this reconciler knows up to"
            f" {SCHEMA_VERSION}: import it with a newer reconciler"
        )
    if schema != SCHEMA_VERSION:
        raise lines.error(
            f"the state has schema version {schema}, not {SCHEMA_VERSION}: open it with this"
            " reconciler first (that migrates it), then export it again"
        )


def _import_table(conn: Connection, lines: _Lines, table: Table) -> int:
    meta = lines.next()
    if not isinstance(meta, dict) or meta.get("table") != table.name:
        raise lines.error(f"expected the table {table.name}, found {meta!r:.200}")
    if meta.get("columns") != list(table.columns):
        raise lines.error(
            f"table {table.name}: columns {meta.get('columns')} are not {list(table.columns)}"
        )
    count = meta.get("rows")
    if not isinstance(count, int) or count < 0:
        raise lines.error(f"table {table.name}: no row count")
    sql = (
        f"INSERT INTO {table.name} ({_quoted(table.columns)})"  # noqa: S608 - our names
        f" VALUES ({', '.join('?' * len(table.columns))})"
    )
    batch: list[list[Any]] = []
    for _ in range(count):
        row = lines.next()
        if not isinstance(row, list) or len(row) != len(table.columns):
            raise lines.error(f"table {table.name}: not a row of {len(table.columns)} values")
        if any(isinstance(v, (dict, list, bool)) for v in row):
            raise lines.error(f"table {table.name}: a value is not text, a number or null")
        batch.append(row)
        if len(batch) >= _BATCH:
            conn.executemany(sql, batch)
            batch = []
    if batch:
        conn.executemany(sql, batch)
    return count


def import_state(db: Database, lines: Iterable[str], name: str, *, replace: bool = False) -> int:
    """Make the file's rows the whole state, in one transaction; returns how many rows.

    ``name`` (the file) is used in messages. Refuses a state that holds something unless
    ``replace``; nothing changes when anything is refused.
    """
    source = _Lines(lines, name)
    _read_header(source)
    total = 0
    with db.write() as conn:
        held = _holds_something(conn)
        if held is not None and not replace:
            raise StateError(
                f"state database {db.name} is not empty (table {held} has rows):"
                " import only into a new state, or pass --replace to replace it"
            )
        for table in schema_tables():
            conn.execute(f"DELETE FROM {table.name}")  # noqa: S608 - our names
        for table in schema_tables():
            total += _import_table(conn, source, table)
        end = source.next()
        if not isinstance(end, dict) or end.get("end") is not True or end.get("rows") != total:
            raise source.error(f"expected the end line with {total} rows, found {end!r:.200}")
        db.reset_identities(conn)
    return total
