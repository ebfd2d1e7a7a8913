"""quick-fedora-mirror (QFM) file lists on disk: scan a tree, write the lists, read them.

The lists' format (``fullfilelist``, ``fullfiletimelist*``, version 2), and rendering,
patching and parsing them without I/O, are :mod:`reconciler.filelistformat`; its
public names are re-exported here. Scanning records what the format asks of each
entry (lstat, max(mtime, ctime), the SHA1 of each ``repomd.xml``), skipping names
ending in ``.~tmp~`` and the lists themselves in the top directory; writing
replaces each list atomically, and only when its content changed.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

from .errors import UnsafePathError
from .filelistformat import (
    CHECKSUMMED,
    FILELIST,
    KINDS,
    LIST_NAMES,
    TIMELIST,
    TIMELIST_SIG,
    VERSION,
    Entry,
    EntryRow,
    parse_timelist,
    patch_all,
    render_all,
    render_filelist,
    render_timelist,
)
from .fsutil import atomic_write
from .names import TMP_SUFFIX

__all__ = [
    "CHECKSUMMED",
    "FILELIST",
    "KINDS",
    "LIST_NAMES",
    "TIMELIST",
    "TIMELIST_SIG",
    "VERSION",
    "Entry",
    "EntryRow",
    "ListsOnDisk",
    "contents_digest",
    "lists_digest",
    "parse_timelist",
    "patch_all",
    "read_lists",
    "render_all",
    "render_filelist",
    "render_timelist",
    "scan",
    "write_if_changed",
]

_CHUNK = 1 << 20
_NS = 1_000_000_000


# -- scanning -------------------------------------------------------------------------


def scan(top: Path) -> list[Entry]:
    """Every entry under ``top`` (lstat, symlinks not followed), sorted by path.

    Each regular ``repomd.xml`` gets its SHA1. Entries that vanish during the
    walk are left out; other errors propagate.
    """
    with os.scandir(top) as it:  # a missing top is an error, not an empty tree
        children = sorted(it, key=lambda e: e.name)
    entries = list(_walk(children, ""))
    entries.sort()
    return entries


def _walk(children: list[os.DirEntry[str]], prefix: str) -> Iterator[Entry]:
    for child in children:
        name = child.name
        if name.endswith(TMP_SUFFIX) or (not prefix and name in LIST_NAMES):
            continue
        rel = f"{prefix}{name}"
        try:
            info = child.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        kind = _kind(info.st_mode)
        sha1 = None
        if kind == "f" and name == CHECKSUMMED:
            sha1 = _sha1(Path(child.path))
            if sha1 is None:
                continue
        yield Entry(rel, kind, info.st_size, _qfm_time(info), sha1)
        if kind == "d":
            try:
                with os.scandir(child.path) as it:
                    grandchildren = sorted(it, key=lambda e: e.name)
            except FileNotFoundError:
                continue
            yield from _walk(grandchildren, f"{rel}/")


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "l"
    if stat.S_ISDIR(mode):
        return "d"
    return "f"


def _qfm_time(info: os.stat_result) -> int:
    """max(mtime, ctime) in whole seconds, as create-filelist records it."""
    return max(info.st_mtime_ns, info.st_ctime_ns) // _NS


def _sha1(path: Path) -> str | None:
    digest = hashlib.sha1()  # noqa: S324 - the format's checksum, not a security use
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


# -- writing --------------------------------------------------------------------------


def write_if_changed(top: Path, contents: Mapping[str, str]) -> list[str]:
    """Replace each ``top/<name>`` whose content differs, atomically, in mapping order.

    Each changed file is written to a ``.~tmp~`` name, fsynced and renamed over
    the old one; an unchanged file is not touched. Returns the names written.
    """
    for name in contents:
        if not name or "/" in name or name in {".", ".."} or name.endswith(TMP_SUFFIX):
            raise UnsafePathError(f"not a file name for a list: {name!r}")
    _remove_leftovers(top, contents)
    written: list[str] = []
    for name, text in contents.items():
        data = _encode(text)
        path = top / name
        if _current(path) == data:
            continue
        atomic_write(path, data)
        written.append(name)
    return written


def lists_digest(filelist: bytes, timelist: bytes) -> str:
    """What identifies a pair of lists as written (see :func:`read_lists`)."""
    return hashlib.sha256(filelist + b"\0" + timelist).hexdigest()


def contents_digest(contents: Mapping[str, str]) -> str:
    """:func:`lists_digest` of lists about to be written (as :func:`render_all` gives)."""
    return lists_digest(*(_encode(contents[name]) for name in (FILELIST, TIMELIST)))


class ListsOnDisk(NamedTuple):
    """``fullfilelist`` and ``fullfiletimelist`` as they are in a tree, and their digest."""

    filelist: str
    timelist: str
    digest: str  # :func:`lists_digest`


def read_lists(top: Path) -> ListsOnDisk | None:
    """The lists in ``top``; ``None`` if either is missing or not a regular file."""
    filelist, timelist = _current(top / FILELIST), _current(top / TIMELIST)
    if filelist is None or timelist is None:
        return None
    return ListsOnDisk(
        filelist.decode("utf-8", "surrogateescape"),
        timelist.decode("utf-8", "surrogateescape"),
        lists_digest(filelist, timelist),
    )


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _remove_leftovers(top: Path, names: Iterable[str]) -> None:
    """Remove the temporary files of lists whose writer was killed (``.<name>.<pid>.~tmp~``)."""
    prefixes = tuple(f".{name}." for name in names)
    with os.scandir(top) as it:
        for entry in it:
            if entry.name.startswith(prefixes) and entry.name.endswith(TMP_SUFFIX):
                Path(entry.path).unlink(missing_ok=True)


def _current(path: Path) -> bytes | None:
    """The bytes of a regular file (a symlink is replaced, not followed), else None."""
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return None
        return path.read_bytes()
    except FileNotFoundError:
        return None
