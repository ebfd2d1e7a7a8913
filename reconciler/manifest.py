"""The file manifest of a compose: every file of its SIG directory, with size and mtime.

Written once when a compose finishes (composes are immutable afterwards), so
that publishing knows the compose without walking it: a publish then costs
filesystem calls in proportion to what changed, not to the size of the tree.
Composes without a manifest (made by older versions) are walked instead.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .fsutil import TMP_SUFFIX, atomic_write

HEADER = "# reconciler compose manifest v1: relpath<TAB>size<TAB>mtime_ns\n"
REPOMD = "repodata/repomd.xml"


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One file of a compose's SIG directory (``root``); ``rel`` is relative to it."""

    rel: str
    root: Path
    size: int
    mtime_ns: int

    @property
    def path(self) -> Path:
        return self.root / self.rel

    @property
    def is_repomd(self) -> bool:
        return self.rel == REPOMD or self.rel.endswith(f"/{REPOMD}")

    @property
    def phase(self) -> int:
        """Publication order: 1 packages and other files, 2 metadata files, 3 repomd.xml."""
        if self.is_repomd:
            return 3
        return 2 if "/repodata/" in f"/{self.rel}" else 1


def scan_source(top: Path, root: Path | None = None) -> Iterator[SourceFile]:
    """Every regular file under ``top`` (a walk; symlinks and temporary files skipped),
    relative to ``root`` (default: ``top``)."""
    root = root or top
    for dirpath, dirs, files in os.walk(top):
        dirs.sort()
        base = Path(dirpath)
        for name in sorted(files):
            if name.endswith(TMP_SUFFIX):
                continue
            path = base / name
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                yield SourceFile(str(path.relative_to(root)), root, st.st_size, st.st_mtime_ns)


def write_manifest(path: Path, files: Iterable[SourceFile]) -> None:
    lines = [HEADER, *(f"{f.rel}\t{f.size}\t{f.mtime_ns}\n" for f in files)]
    atomic_write(path, "".join(lines))


def read_manifest(path: Path, root: Path) -> list[SourceFile] | None:
    """The files of a manifest, or None when there is none (or it is unreadable)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    if not text.startswith(HEADER):
        return None
    files = []
    for line in text[len(HEADER) :].splitlines():
        rel, size, mtime = line.split("\t")
        if not rel or rel.startswith("/") or "/../" in f"/{rel}/" or "/./" in f"/{rel}/":
            return None
        files.append(SourceFile(rel, root, int(size), int(mtime)))
    return files
