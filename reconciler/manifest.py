"""The file manifest of a compose: every file of its SIG directory, with size and mtime.

Written once when a compose finishes (composes are immutable afterwards), so
that publishing knows the compose without walking it: a publish then costs
filesystem calls in proportion to what changed, not to the size of the tree.
Composes without a manifest (made by older versions) are walked instead.

A compose made on top of a previous one also writes its *changes*: the files
added or changed (size or mtime) and the files gone, relative to that
compose's manifest. Publishing a compose over a target that holds an earlier
compose of the same chain then reads only the changes, not the manifest and
the target's whole inventory.

This module reads and writes them; the records and the pure operations on them
are in :mod:`reconciler.composefiles`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from .composefiles import REPOMD, Changes, SourceFile, combine, diff
from .errors import PublishError
from .fsutil import atomic_write
from .names import COMPOSE_ID_RE, TMP_SUFFIX

HEADER = "# reconciler compose manifest v1: relpath<TAB>size<TAB>mtime_ns\n"
CHANGES_HEADER = (
    "# reconciler compose changes v1: +<TAB>relpath<TAB>size<TAB>mtime_ns | -<TAB>relpath\n"
)
CHANGES_BASE = "base\t"

#: The records live in :mod:`reconciler.composefiles` (pure); here for the readers.
__all__ = [
    "CHANGES_HEADER",
    "HEADER",
    "REPOMD",
    "Changes",
    "SourceFile",
    "combine",
    "diff",
    "read_changes",
    "read_manifest",
    "scan_source",
    "write_changes",
    "write_manifest",
]


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
    """The files of a manifest, or None when there is none (or it is unreadable, or of
    another format: the caller then walks the compose).

    A manifest of this format with a line that does not parse (or a path that leaves
    the compose) is damage, not an old format: :class:`PublishError` names the file and
    the line, and the publish of that compose fails.
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith(HEADER):
        return None
    lines = text[len(HEADER) :].split("\n")
    if lines[-1]:  # every line ends with a newline: a last one without is a cut-off file
        raise PublishError(f"{path}:{len(lines) + 1}: damaged compose manifest: cut off")
    files = []
    for number, line in enumerate(lines[:-1], start=2):
        fields = line.split("\t")
        try:
            rel, size, mtime = fields
            entry = SourceFile(rel, root, int(size), int(mtime))
        except ValueError:
            entry = None
        if entry is None or not _safe_rel(rel):
            raise PublishError(
                f"{path}:{number}: damaged compose manifest: expected "
                f"relpath<TAB>size<TAB>mtime_ns, got {line[:120]!r}"
            )
        files.append(entry)
    return files


def _safe_rel(rel: str) -> bool:
    return (
        bool(rel)
        and not rel.startswith("/")
        and "/../" not in f"/{rel}/"
        and ("/./" not in f"/{rel}/")
    )


def write_changes(path: Path, changes: Changes) -> None:
    lines = [CHANGES_HEADER, f"{CHANGES_BASE}{changes.base}\n"]
    lines += [f"+\t{f.rel}\t{f.size}\t{f.mtime_ns}\n" for f in changes.added]
    lines += [f"-\t{rel}\n" for rel in changes.removed]
    atomic_write(path, "".join(lines))


def read_changes(path: Path, root: Path) -> Changes | None:
    """The changes file at ``path`` (files relative to ``root``), or None when there is none
    or it is unreadable or malformed (the caller then compares whole trees)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    lines = text.splitlines()
    if len(lines) < 2 or f"{lines[0]}\n" != CHANGES_HEADER or not lines[1].startswith(CHANGES_BASE):
        return None
    added: list[SourceFile] = []
    removed: list[str] = []
    try:
        for line in lines[2:]:
            sign, rel, *rest = line.split("\t")
            if not _safe_rel(rel):
                return None
            if sign == "+" and len(rest) == 2:
                added.append(SourceFile(rel, root, int(rest[0]), int(rest[1])))
            elif sign == "-" and not rest:
                removed.append(rel)
            else:
                return None
    except ValueError:
        return None
    base = lines[1][len(CHANGES_BASE) :]
    if not COMPOSE_ID_RE.fullmatch(base):
        return None
    return Changes(base, tuple(added), tuple(removed))
