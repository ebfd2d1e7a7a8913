"""Where a publish writes: the stage root's directories held open, and what a publish
gives each one (:class:`Destination`); the owner it gives (:class:`Owner`), the root's
lock, and the facts a publish reads of a placed file (:func:`entry_for`,
:func:`holds_bytes`).

Every directory a publish writes to is opened once from the root down, one name at a
time (:class:`~reconciler.dirfds.DirHandles`), and every file in it is placed, stat'ed,
renamed and fsynced relative to that descriptor: on network storage each component of a
path is a round trip, so a deep path costs ten where a name in an open directory costs
one (BENCHMARKS.md, round 7). The walk refuses a symlink out of the root as it goes.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .checksums import hash_file
from .composefiles import SourceFile
from .dirfds import DirHandles
from .errors import LockHeldError, PublishError
from .extents import same_blocks
from .names import TMP_SUFFIX
from .state import InventoryEntry
from .vocabulary import InventoryKind

#: A chown of one file already chosen: ``(uid, gid)``.
_Chown = Callable[[int, int], None]


def entry_for(relpath: str, st: os.stat_result, checksum: str | None = None) -> InventoryEntry:
    kind = (
        InventoryKind.DIR
        if stat.S_ISDIR(st.st_mode)
        else InventoryKind.LINK
        if stat.S_ISLNK(st.st_mode)
        else InventoryKind.FILE
    )
    return InventoryEntry(relpath, kind, st.st_size, st.st_mtime_ns, st.st_ino, checksum,
                          st.st_ctime_ns)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Owner:
    """``publish.owner`` and ``publish.group``: what a publish gives every file it places
    and every directory it creates or publishes (None: leave that id as it is)."""

    uid: int | None = None
    gid: int | None = None

    def give(self, path: Path, dir_fd: int | None = None, shown: Path | None = None) -> None:
        """Give ``path`` (not followed; a name in ``dir_fd`` when given) the owner and
        group unless it has them (then its ctime, which the mirrors' lists carry, stays);
        PublishError naming both (and ``shown``, else ``path``) if not."""
        if self.uid is None and self.gid is None:
            return
        st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
        self._give(st, lambda uid, gid: os.chown(path, uid, gid, dir_fd=dir_fd,
                                                 follow_symlinks=False), shown or path)  # fmt: skip

    def give_fd(self, fd: int, st: os.stat_result, shown: Path) -> None:
        """:meth:`give` to the open file or directory ``fd`` (``st``: its fstat)."""
        if self.uid is not None or self.gid is not None:
            self._give(st, lambda uid, gid: os.fchown(fd, uid, gid), shown)

    def _give(self, st: os.stat_result, chown: _Chown, shown: Path) -> None:
        uid = st.st_uid if self.uid is None else self.uid
        gid = st.st_gid if self.gid is None else self.gid
        if (st.st_uid, st.st_gid) == (uid, gid):
            return
        try:
            chown(uid, gid)
        except OSError as exc:
            raise PublishError(
                f"{shown}: cannot give it owner {self.uid} and group {self.gid} "
                f"(publish.owner, publish.group): {exc.strerror}"
            ) from exc


@contextmanager
def root_lock(root: Path) -> Iterator[None]:
    """An exclusive flock on the stage root directory itself: one publisher per tree."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeldError(f"another publish to {root} is running") from None
        yield
    finally:
        os.close(fd)


class Destination:
    """The directories of ``root`` one publish to ``target`` writes to, each opened once.

    :meth:`dir` gives a directory's descriptor, creating what is missing (mode 0755, the
    publish's owner); a directory of the target that exists gets the owner too, and one
    made group- or world-writable by an older version loses those bits. With ``sweep``,
    leftover ``.~tmp~`` files of an interrupted publish are removed from each directory
    asked for. :meth:`entries` are the inventory entries of every directory opened (and
    their parents up to the root). Use as a context manager (descriptors closed).
    """

    def __init__(self, root: Path, target: Path, owner: Owner) -> None:
        self.root, self.owner = root, owner
        self.sweep = True
        self._target = PurePosixPath(target.relative_to(root))
        self._handles = DirHandles(root, self._visit)
        self._asked: set[PurePosixPath] = set()

    def __enter__(self) -> Destination:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reset()

    def reset(self) -> None:
        """Close every descriptor: the next :meth:`dir` looks at each directory again."""
        self._handles.close()
        self._asked.clear()

    def rel(self, path: Path) -> PurePosixPath:
        return PurePosixPath(path.relative_to(self.root))

    def dir(self, directory: Path) -> int:
        """The descriptor of ``directory`` (under the root), created if missing;
        UnsafePathError for a symlink out of the root on the way."""
        rel = self.rel(directory)
        fd = self._handles.open(rel, create=True)
        if rel not in self._asked:
            self._asked.add(rel)
            if self.sweep:
                with os.scandir(fd) as it:
                    for entry in it:
                        if entry.name.endswith(TMP_SUFFIX) and entry.is_file(follow_symlinks=False):
                            os.unlink(entry.name, dir_fd=fd)
        return fd

    def _visit(self, fd: int, rel: PurePosixPath, st: os.stat_result, created: bool) -> None:
        if rel in self._handles.links:
            return  # a symlink inside the root, followed: neither it nor its target is ours
        shown = self.root / rel
        if created:
            self.owner.give_fd(fd, st, shown)
            return
        if st.st_mode & 0o022:  # made by an older version
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~0o022)
        if rel == self._target or self._target in rel.parents:
            self.owner.give_fd(fd, st, shown)  # a directory of the SIG's tree: published by us

    def entries(self) -> list[InventoryEntry]:
        """Inventory entries of the directories opened, and their parents up to the root."""
        out = []
        for rel in self._handles.opened:
            st = self._handles.lstat(rel) if rel in self._handles.links else os.fstat(
                self._handles.open(rel)
            )  # fmt: skip
            out.append(entry_for(str(rel), st))
        return out


def holds_bytes(
    dst: Path, src: SourceFile, suspect: bool = False, dir_fd: int | None = None
) -> bool:
    """Whether ``dst`` (a name in ``dir_fd`` when given) holds ``src``'s bytes: the same
    inode does (a hardlink), and so does a clone that shares every block with it still
    (nobody wrote into either: known without reading them), unless drift named it (bytes
    written in place are in the compose's inode too); then, and for another inode (a
    copy, a clone written into), its digest decides (the manifest's, else the compose
    copy's)."""
    try:
        st = os.stat(dst, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_size != src.size:
        return False
    if not suspect and (st.st_ino == src.path.stat().st_ino or same_blocks(dst, src.path, dir_fd)):
        return True
    if src.sha256 is not None:
        return hash_file(dst, dir_fd=dir_fd) == src.sha256
    return not suspect and hash_file(dst, dir_fd=dir_fd) == hash_file(src.path)


def same_inode(src: Path, dst: Path, dir_fd: int | None = None) -> bool:
    """Whether ``dst`` (not followed; a name in ``dir_fd``) is ``src``'s inode."""
    try:
        sa, sb = src.stat(), os.stat(dst, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def syncfs(path: Path) -> None:
    """Flush the filesystem holding ``path`` (syncfs(2)); all filesystems if unavailable."""
    import ctypes  # only when copies were made

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if getattr(libc, "syncfs", None) is None or libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)
