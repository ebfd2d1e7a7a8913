"""The file manifest of a compose: every file of its SIG directory, with size, mtime and
the sha256 its bytes must hash to.

Written once when a compose finishes (composes are immutable afterwards), so
that publishing knows the compose without walking it: a publish then costs
filesystem calls in proportion to what changed, not to the size of the tree.
Composes without a manifest (made by older versions) are walked instead.

A compose made on top of a previous one also writes its *changes*: the files
added or changed (size or mtime) and the files gone, relative to that
compose's manifest. Publishing a compose over a target that holds an earlier
compose of the same chain then reads only the changes, not the manifest and
the target's whole inventory.

Format v2 (written since issue 13): ``relpath<TAB>size<TAB>mtime_ns<TAB>sha256`` a line
(``-`` for a checksum not known). v1 manifests (no checksum column) are still read:
their files have no ``sha256``, and the deep drift check and the repair take the
checksums from the compose's repository metadata instead
(:func:`reconciler.checksums.expected_sums`). Both files are written read-only.

This module reads and writes them; the records and the pure operations on them
are in :mod:`reconciler.composefiles`.
"""

from __future__ import annotations

import io
import os
import re
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from .composefiles import REPOMD, Changes, SourceFile, combine, diff
from .errors import PublishError
from .fsutil import READ_ONLY, atomic_write
from .names import COMPOSE_ID_RE, TMP_SUFFIX

HEADER = "# reconciler compose manifest v2: relpath<TAB>size<TAB>mtime_ns<TAB>sha256\n"
#: The format before checksums (still read).
HEADER_V1 = "# reconciler compose manifest v1: relpath<TAB>size<TAB>mtime_ns\n"
_NO_SUM = "-"
_SHA256 = re.compile("[0-9a-f]{64}")
CHANGES_HEADER = (
    "# reconciler compose changes v1: +<TAB>relpath<TAB>size<TAB>mtime_ns | -<TAB>relpath\n"
)
CHANGES_BASE = "base\t"

#: The records live in :mod:`reconciler.composefiles` (pure); here for the readers.
__all__ = [
    "CHANGES_HEADER",
    "HEADER",
    "HEADER_V1",
    "REPOMD",
    "Changes",
    "SourceFile",
    "combine",
    "diff",
    "read_changes",
    "read_manifest",
    "scan_source",
    "source_files",
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


def source_files(sig_dir: Path, manifest: Path | None) -> list[SourceFile]:
    """The files of a compose's SIG directory: its manifest's, else a walk of it."""
    listed = read_manifest(manifest, sig_dir) if manifest is not None else None
    return listed if listed is not None else list(scan_source(sig_dir))


def write_manifest(path: Path, files: Iterable[SourceFile]) -> None:
    # Encoded line by line into one buffer: a list of 100,000 lines, joined, then
    # encoded, held three copies of the manifest (and 100,000 objects) at the compose's
    # peak of memory.
    buf = io.BytesIO()
    buf.write(HEADER.encode())
    for f in files:
        buf.write(f"{f.rel}\t{f.size}\t{f.mtime_ns}\t{f.sha256 or _NO_SUM}\n".encode())
    atomic_write(path, buf.getvalue(), READ_ONLY)


def read_manifest(path: Path, root: Path) -> list[SourceFile] | None:
    """The files of a manifest (v2, or v1 without checksums), or None when there is none
    (or it is unreadable, or of another format: the caller then walks the compose).

    A manifest of these formats with a line that does not parse (or a path that leaves
    the compose) is damage, not an old format: :class:`PublishError` names the file and
    the line, and the publish of that compose fails.
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    header = next((h for h in (HEADER, HEADER_V1) if text.startswith(h)), None)
    if header is None:
        return None
    columns = 4 if header == HEADER else 3
    lines = text[len(header) :].split("\n")
    if lines[-1]:  # every line ends with a newline: a last one without is a cut-off file
        raise PublishError(f"{path}:{len(lines) + 1}: damaged compose manifest: cut off")
    files = []
    for number, line in enumerate(lines[:-1], start=2):
        entry = _entry(line.split("\t"), columns, root)
        if entry is None or not _safe_rel(entry.rel):
            raise PublishError(
                f"{path}:{number}: damaged compose manifest: expected "
                f"{header[header.index(':') + 2 : -1]}, got {line[:120]!r}"
            )
        files.append(entry)
    return files


def _entry(fields: list[str], columns: int, root: Path) -> SourceFile | None:
    if len(fields) != columns:
        return None
    sha256 = fields[3] if columns == 4 and fields[3] != _NO_SUM else None
    if sha256 is not None and not _SHA256.fullmatch(sha256):
        return None
    try:
        return SourceFile(fields[0], root, int(fields[1]), int(fields[2]), sha256)
    except ValueError:
        return None


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
    atomic_write(path, "".join(lines), READ_ONLY)


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
