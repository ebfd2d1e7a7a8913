"""quick-fedora-mirror (QFM) file lists on disk: scan a tree, write the lists, read them.

The lists' format (``fullfilelist``, ``imagelist-sig``, ``fullfiletimelist*``, version
2), and rendering, patching and parsing them without I/O, are
:mod:`reconciler.filelistformat`; its public names are re-exported here. Scanning
records what the format asks of each entry (lstat, max(mtime, ctime), the SHA1 of each
``repomd.xml``), skipping names ending in ``.~tmp~`` and the lists themselves in the top
directory; writing replaces each list atomically, and only when its content changed,
keeping the previous ``fullfiletimelist-sig`` as ``fullfiletimelist-sig-old`` and giving
every list the configured owner and group (``chown 10004:10005`` in the toolkit's
``sync-sig-file-list.sh``).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import suppress
from pathlib import Path
from typing import NamedTuple

from .errors import PublishError, UnsafePathError
from .filelistformat import (
    CHECKSUMMED,
    FILELIST,
    IMAGELIST_SIG,
    KEPT_OLD,
    KINDS,
    LIST_NAMES,
    NEVER_LISTED,
    TIMELIST,
    TIMELIST_SIG,
    TIMELIST_SIG_OLD,
    TIMELIST_VAULT,
    UNLISTED,
    VERSION,
    Entry,
    EntryRow,
    image_suffixes,
    is_image,
    parse_timelist,
    patch_all,
    render_all,
    render_filelist,
    render_imagelist,
    render_timelist,
)
from .fsutil import atomic_write
from .names import TMP_SUFFIX

__all__ = [
    "CHECKSUMMED",
    "FILELIST",
    "IMAGELIST_SIG",
    "KEPT_OLD",
    "KINDS",
    "LIST_NAMES",
    "NEVER_LISTED",
    "TIMELIST",
    "TIMELIST_SIG",
    "TIMELIST_SIG_OLD",
    "TIMELIST_VAULT",
    "UNLISTED",
    "VERSION",
    "Entry",
    "EntryRow",
    "ListsOnDisk",
    "contents_digest",
    "file_sha1",
    "image_suffixes",
    "is_image",
    "lists_digest",
    "parse_timelist",
    "patch_all",
    "read_lists",
    "render_all",
    "render_filelist",
    "render_imagelist",
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
        if name.endswith(TMP_SUFFIX) or (not prefix and name in NEVER_LISTED):
            continue
        rel = f"{prefix}{name}"
        try:
            info = child.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        kind = _kind(info.st_mode)
        sha1 = None
        if kind == "f" and name == CHECKSUMMED:
            sha1 = file_sha1(Path(child.path))
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


def file_sha1(path: Path, dir_fd: int | None = None) -> str | None:
    """The SHA1 of a file's bytes (the checksum the lists give each ``repomd.xml``; a
    name in ``dir_fd`` when given); ``None`` when it is gone."""
    digest = hashlib.sha1()  # noqa: S324 - the format's checksum, not a security use
    try:
        with os.fdopen(os.open(path, os.O_RDONLY, dir_fd=dir_fd), "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


# -- writing --------------------------------------------------------------------------


def write_if_changed(
    top: Path,
    contents: Mapping[str, str],
    *,
    owner: int | None = None,
    group: int | None = None,
    top_fd: int | None = None,
) -> list[str]:
    """Replace each ``top/<name>`` whose content differs, atomically, in mapping order.

    Each changed file is written to a ``.~tmp~`` name, given ``owner`` and ``group``
    (``None``: the writer's), fsynced and renamed over the old one; an unchanged file
    keeps its inode and mtime (only a wrong owner or group is corrected). Before a
    list of :data:`KEPT_OLD` changes, its previous content is kept, the same way, under
    the old name. Returns the names written. ``top_fd``: ``top`` open already
    (:class:`~reconciler.dirfds.DirHandles`): every file is reached by its name in it.
    """
    for name in contents:
        if not name or "/" in name or name in {".", ".."} or name.endswith(TMP_SUFFIX):
            raise UnsafePathError(f"not a file name for a list: {name!r}")
    if top_fd is None:
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return write_if_changed(top, contents, owner=owner, group=group, top_fd=fd)
        finally:
            os.close(fd)
    at = _At(top, top_fd)
    _remove_leftovers(at, [*contents, *KEPT_OLD.values()])
    ids = (-1 if owner is None else owner, -1 if group is None else group)
    written: list[str] = []
    for name, text in contents.items():
        data = _encode(text)
        current = _current(at, name)
        kept = KEPT_OLD.get(name)
        if (
            current not in {data, None}
            and kept is not None
            and _replace(at, kept, current, ids, _current(at, kept))
        ):
            written.append(kept)
        if _replace(at, name, data, ids, current):
            written.append(name)
    for kept in KEPT_OLD.values():
        if _current(at, kept) is not None:
            _own(at, kept, ids)  # also the one kept by an earlier run
    return written


class _At(NamedTuple):
    """A directory of lists: its path (for messages) and its open descriptor."""

    top: Path
    fd: int


def _replace(at: _At, name: str, data: bytes, ids: tuple[int, int], current: bytes | None) -> bool:
    """Make ``name`` a regular file holding ``data``, owned as ``ids`` say; True if it
    was written (``current``: what :func:`_current` read of it)."""
    path = at.top / name
    if current == data:
        _own(at, name, ids)
        return False

    def own(fd: int) -> None:  # before the rename: the list is never seen with another owner
        if ids != (-1, -1):
            _chown(path, ids, lambda: os.fchown(fd, *ids))

    # world-readable whatever the umask: mirrors read it
    atomic_write(Path(name), data, 0o644, own, dir_fd=at.fd)
    return True


def _own(at: _At, name: str, ids: tuple[int, int]) -> None:
    """Give the regular file ``name`` the owner and group of ``ids`` (-1: keep) where
    it has others (a chown changes the ctime: not done without need)."""
    if ids == (-1, -1):
        return
    info = os.stat(name, dir_fd=at.fd, follow_symlinks=False)
    if ids[0] in {-1, info.st_uid} and ids[1] in {-1, info.st_gid}:
        return
    _chown(at.top / name, ids, lambda: os.chown(name, *ids, dir_fd=at.fd, follow_symlinks=False))


def _chown(path: Path, ids: tuple[int, int], change: Callable[[], None]) -> None:
    try:
        change()
    except OSError as exc:
        want = ":".join("-" if i == -1 else str(i) for i in ids)
        raise PublishError(f"cannot give the file list {path} owner {want}: {exc}") from exc


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


def read_lists(
    top: Path, top_fd: int | None = None, timelist_name: str = TIMELIST
) -> ListsOnDisk | None:
    """The lists in ``top`` (open as ``top_fd`` when given; the time list under
    ``timelist_name``: the vault's is ``fullfiletimelist-vault``); ``None`` if either is
    missing or not a regular file."""
    if top_fd is None:
        try:
            fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return read_lists(top, fd, timelist_name)
        finally:
            os.close(fd)
    at = _At(top, top_fd)
    filelist, timelist = _current(at, FILELIST), _current(at, timelist_name)
    if filelist is None or timelist is None:
        return None
    return ListsOnDisk(
        filelist.decode("utf-8", "surrogateescape"),
        timelist.decode("utf-8", "surrogateescape"),
        lists_digest(filelist, timelist),
    )


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _remove_leftovers(at: _At, names: Iterable[str]) -> None:
    """Remove the temporary files of lists whose writer was killed (``.<name>.<pid>.~tmp~``)."""
    prefixes = tuple(f".{name}." for name in names)
    with os.scandir(at.fd) as it:
        for entry in it:
            if entry.name.startswith(prefixes) and entry.name.endswith(TMP_SUFFIX):
                with suppress(FileNotFoundError):
                    os.unlink(entry.name, dir_fd=at.fd)


def _current(at: _At, name: str) -> bytes | None:
    """The bytes of a regular file (a symlink is replaced, not followed), else None."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=at.fd)
    except (FileNotFoundError, OSError) as exc:
        if isinstance(exc, FileNotFoundError) or exc.errno in (errno.ELOOP, errno.ENXIO):
            return None  # gone, a symlink (O_NOFOLLOW), a socket
        raise
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return fh.read()
