"""A compose's directory: the release directory, the compose ID, ``STATUS``, the log, the
files directly in a directory of it.

The compose ID is productmd's (``SIG-core-9-20261125.0``: UTC date, respin
counting up); it is taken by creating its directory, so two composes never
share one. Called under the release's lock by :mod:`reconciler.composing`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path

from .composefiles import SourceFile
from .composemeta import ComposeOnDisk, list_composes, write_status
from .errors import ComposeError
from .fsutil import READ_ONLY, atomic_write, read_only
from .layout import ComposeTree
from .vocabulary import ComposeStatus


def make_release_dir(tree: ComposeTree) -> None:
    try:
        tree.release_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ComposeError(
            f"{tree.release_dir}: cannot create compose directory: {exc.strerror}"
        ) from exc


def previous_finished(tree: ComposeTree) -> ComposeOnDisk | None:
    """The newest FINISHED compose of the release (what the next one is made on top of)."""
    finished = [c for c in list_composes(tree) if c.status is ComposeStatus.FINISHED]
    return finished[-1] if finished else None


def allocate(tree: ComposeTree, now: datetime) -> tuple[str, str, int]:
    """Create the next compose's directory with ``COMPOSE_ID`` and ``STATUS`` = STARTED;
    return (compose ID, date, respin)."""
    date = now.strftime("%Y%m%d")
    same_day = [c.respin for c in list_composes(tree) if c.date == date]
    respin = max(same_day) + 1 if same_day else 0
    while True:
        cid = tree.compose_id(date, respin)
        cdir = tree.compose_dir(cid)
        try:
            cdir.mkdir()
        except FileExistsError:
            respin += 1
            continue
        except OSError as exc:
            raise ComposeError(f"{cdir}: cannot create compose: {exc.strerror}") from exc
        (cdir / "logs").mkdir()
        atomic_write(cdir / "COMPOSE_ID", f"{cid}\n", READ_ONLY)
        write_status(cdir, ComposeStatus.STARTED)
        return cid, date, respin


@contextmanager
def compose_log(path: Path) -> Iterator[None]:
    """The ``reconciler`` logger also writes to ``path`` (at least INFO) meanwhile."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("reconciler")
    logger.addHandler(handler)
    old_level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()
        with suppress(OSError):
            read_only(path)  # the log of a compose that ended is kept as it is


def files_in(directory: Path, root: Path) -> Iterator[SourceFile]:
    """The regular files directly in ``directory`` (the GPG keys beside repodata/)."""
    with os.scandir(directory) as it:
        for entry in it:
            if entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                rel = str(Path(entry.path).relative_to(root))
                yield SourceFile(rel, root, st.st_size, st.st_mtime_ns)
