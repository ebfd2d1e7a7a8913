"""Progress display: a rich bar on a terminal, nothing otherwise."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.progress import TaskID


class Reporter(Protocol):
    def start(self, label: str, total_bytes: int) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    def stop(self) -> None: ...


class NullReporter:
    """Reports nothing (not a terminal, or quiet)."""

    def start(self, label: str, total_bytes: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def stop(self) -> None:
        pass


class BarReporter:
    """A byte progress bar on stderr."""

    def __init__(self) -> None:
        from rich.progress import (  # rich is slow to import: only for a bar on a terminal
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task: TaskID | None = None

    def start(self, label: str, total_bytes: int) -> None:
        self._progress.start()
        self._task = self._progress.add_task(label, total=total_bytes)

    def advance(self, nbytes: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, nbytes)

    def stop(self) -> None:
        self._progress.stop()


def reporter_for_terminal() -> Reporter:
    return BarReporter() if sys.stderr.isatty() else NullReporter()


__all__ = ["BarReporter", "NullReporter", "Reporter", "reporter_for_terminal"]
