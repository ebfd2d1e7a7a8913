"""Publishing a compose into a staging or production tree without breaking a mirror.

DESIGN.md section 6, in this order:

1. add the packages and other files the new metadata needs (hardlink from the
   compose when on the same filesystem, else copy to a ``.~tmp~`` name and
   rename); delete nothing;
2. add the new metadata files (their names carry their checksums);
3. replace each ``repodata/repomd.xml`` by rename (write, fsync, rename);
4. (file lists: written by the caller after this returns);
5. files no longer needed become pending deletions, due after ``delete_grace``;
   :func:`delete_due` removes them on a later pass.

Only what differs from the state's inventory of the target is touched, so the
work is proportional to the change, not to the tree.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath

from .errors import PublishError, UnsafePathError
from .fsutil import TMP_SUFFIX, fsync_dir, inside, tmp_name
from .state import InventoryEntry, StateDB

log = logging.getLogger(__name__)

REPOMD = "repodata/repomd.xml"


@dataclass(frozen=True)
class SourceFile:
    rel: str  # relative to the published SIG directory
    path: Path
    size: int
    mtime_ns: int
    ino: int

    @property
    def is_repomd(self) -> bool:
        return self.rel == REPOMD or self.rel.endswith(f"/{REPOMD}")

    @property
    def is_metadata(self) -> bool:
        return "/repodata/" in f"/{self.rel}"

    @property
    def phase(self) -> int:
        """1: packages and other files, 2: metadata files, 3: repomd.xml."""
        return 3 if self.is_repomd else 2 if self.is_metadata else 1


@dataclass
class PublishStats:
    files: int = 0
    bytes: int = 0
    pending: int = 0
    deleted: int = 0


def scan_source(root: Path) -> Iterator[SourceFile]:
    """Every regular file under a compose's SIG directory (symlinks are not published)."""
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        base = Path(dirpath)
        for name in sorted(files):
            if name.endswith(TMP_SUFFIX):
                continue
            path = base / name
            st = path.lstat()
            if not path.is_file() or path.is_symlink():
                continue
            yield SourceFile(
                str(path.relative_to(root)), path, st.st_size, st.st_mtime_ns, st.st_ino
            )


class Publisher:
    """Publishes one compose SIG directory to one target directory of a stage root."""

    def __init__(self, state: StateDB, stage: str, stage_root: Path, prefix: PurePosixPath) -> None:
        self.state, self.stage, self.stage_root = state, stage, stage_root
        self.prefix = prefix  # e.g. mirror/pub/sig/9/core, relative to stage_root
        self.target = stage_root.joinpath(*prefix.parts)
        self.stats = PublishStats()

    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}"

    def _safe_dir(self, directory: Path) -> None:
        """Create ``directory``; refuse one that resolves outside the stage root."""
        directory.mkdir(parents=True, exist_ok=True)
        if not inside(self.stage_root, directory):
            raise UnsafePathError(
                f"{directory} resolves outside {self.stage_root}; refusing to write"
            )

    def _place(self, src: SourceFile) -> InventoryEntry:
        dst = self.target / src.rel
        self._safe_dir(dst.parent)
        if dst.is_symlink():
            raise UnsafePathError(f"{dst} is a symlink; refusing to write through it")
        tmp = tmp_name(dst)
        tmp.unlink(missing_ok=True)
        if src.is_repomd:
            _copy_fsync(src.path, tmp)
        else:
            try:
                os.link(src.path, tmp, follow_symlinks=False)
            except OSError:
                _copy_fsync(src.path, tmp)
        tmp.replace(dst)
        if src.is_repomd:
            fsync_dir(dst.parent)
        st = dst.lstat()
        self.stats.files += 1
        self.stats.bytes += st.st_size
        return InventoryEntry(self._key(src.rel), "f", st.st_size, st.st_mtime_ns, st.st_ino, None)

    def publish(self, source: Path, grace: timedelta, now: datetime) -> PublishStats:
        if not source.is_dir():
            raise PublishError(f"{source}: the compose to publish is missing")
        self._safe_dir(self.target)
        inventory = self.state.inventory(self.stage, f"{self.prefix}/")
        files = list(scan_source(source))
        wanted = {self._key(f.rel) for f in files}
        changed = [f for f in files if not _current(inventory.get(self._key(f.rel)), f)]
        self.state.cancel_pending(self.stage, [self._key(f.rel) for f in files])
        for phase in (1, 2, 3):
            batch = [self._place(f) for f in changed if f.phase == phase]
            self.state.apply_inventory_changes(self.stage, batch, [])
        gone = sorted(set(inventory) - wanted)
        if gone:
            self.state.add_pending(self.stage, gone, now + grace, "superseded")
            self.stats.pending = len(gone)
        log.info(
            "published %s to %s: %d files changed, %d pending deletion",
            source,
            self.target,
            self.stats.files,
            len(gone),
        )
        return self.stats


def _current(entry: InventoryEntry | None, src: SourceFile) -> bool:
    return entry is not None and entry.size == src.size and entry.mtime_ns == src.mtime_ns


def _copy_fsync(src: Path, dst: Path) -> None:
    with src.open("rb") as fin, open(dst, "xb") as fout:  # noqa: PTH123
        while chunk := fin.read(1 << 20):
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    st = src.stat()
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def delete_due(state: StateDB, stage: str, stage_root: Path, now: datetime) -> int:
    """Delete the pending deletions of ``stage`` whose grace has passed; prune empty dirs."""
    due = [p for p in state.due(now) if p.stage == stage]
    removed: list[str] = []
    for item in due:
        rel = PurePosixPath(item.relpath)
        if rel.is_absolute() or ".." in rel.parts:
            continue
        path = stage_root.joinpath(*rel.parts)
        if not inside(stage_root, path.parent):
            log.warning("not deleting %s: it resolves outside %s", path, stage_root)
            continue
        path.unlink(missing_ok=True)
        removed.append(item.relpath)
        _prune_empty_dirs(path.parent, stage_root)
    state.apply_inventory_changes(stage, [], removed)
    state.remove_pending([p.id for p in due])
    return len(removed)


def _prune_empty_dirs(directory: Path, stop: Path) -> None:
    while directory != stop and stop in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent
