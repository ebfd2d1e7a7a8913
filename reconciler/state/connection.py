"""What the repositories run their SQL on, whichever engine holds the state: SQLite's own
connection and cursors, or :mod:`.postgres`'s, which take the same ``?`` spelling."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol


class Cursor(Protocol):
    """What a statement returns, on either engine."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What ``read()`` and ``write()`` yield: SQLite's connection, or a PostgreSQL one that
    takes the same ``?`` spelling."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...
    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...
