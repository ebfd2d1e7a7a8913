"""Open directories under one root, each reached once by a walk of single names.

On network storage (NFS, EFS, sshfs) every component of a path is a round trip to the
server, so ``stat("/srv/production/mirror/pub/sig/9/core/x86_64/os/Packages/a/a.rpm")``
costs ten of them where ``fstatat(dir_fd, "a.rpm")`` costs one. :class:`DirHandles` opens
each directory a publish writes to once, ``openat(parent_fd, name, O_DIRECTORY |
O_NOFOLLOW)`` from the root down, and the callers link, rename, stat, unlink and fsync
relative to those descriptors (``dir_fd=``). The walk is also the safety check that
``Path.resolve()`` made (one stat per prefix, each a deep path): a component that is a
symlink is refused with ``O_NOFOLLOW``, and only then looked at: one that resolves out
of the root raises :class:`~reconciler.errors.UnsafePathError`; one that stays inside
is followed, as before.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from types import TracebackType

from .errors import PublishError, UnsafePathError
from .fsutil import DIR_MODE, inside

#: Flags of every directory opened: never through a symlink, never inherited by a child.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: ``visit(fd, rel, st, created)``: called once for each directory the first time it is
#: opened (``st``: its fstat; ``created``: made by this walk): a publish's policy.
Visit = Callable[[int, PurePosixPath, os.stat_result, bool], None]


class DirHandles:
    """Descriptors of the directories under ``root`` that were asked for, opened once each.

    :meth:`open` gives the descriptor of a directory relative to the root (creating the
    missing ones with ``create``, mode :data:`~reconciler.fsutil.DIR_MODE`); ``visit``
    sees each directory once. :attr:`links` holds the components that were symlinks
    inside the root (followed). Use as a context manager: every descriptor is closed.
    """

    def __init__(self, root: Path, visit: Visit | None = None) -> None:
        self.root = root
        self.visit = visit
        self.links: set[PurePosixPath] = set()
        self._fds: dict[PurePosixPath, int] = {}
        self._root_fd: int | None = None

    def __enter__(self) -> DirHandles:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every descriptor (the handles can be used again: they reopen)."""
        fds = [*self._fds.values(), *([] if self._root_fd is None else [self._root_fd])]
        self._fds.clear()
        self._root_fd = None
        self.links.clear()
        for fd in fds:
            os.close(fd)

    def forget(self, rel: PurePosixPath) -> None:
        """Close ``rel``'s descriptor and those under it (removed or replaced since)."""
        for key in [k for k in self._fds if k == rel or rel in k.parents]:
            os.close(self._fds.pop(key))
            self.links.discard(key)

    @property
    def opened(self) -> list[PurePosixPath]:
        """The directories opened so far (relative to the root), sorted."""
        return sorted(self._fds)

    def root_fd(self) -> int:
        if self._root_fd is None:
            self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return self._root_fd

    def open(self, rel: PurePosixPath | str, create: bool = False) -> int:
        """The descriptor of the directory ``rel`` (relative to the root; "" or "." is the
        root). FileNotFoundError when a component is missing and not ``create``;
        UnsafePathError for a symlink out of the root; PublishError for a component that
        is no directory."""
        rel = PurePosixPath(rel)
        if rel.is_absolute() or ".." in rel.parts:
            raise UnsafePathError(f"{self.root / rel}: not a path inside {self.root}")
        if rel == PurePosixPath("."):
            return self.root_fd()
        fd = self._fds.get(rel)
        if fd is not None:
            return fd
        parent = self.open(rel.parent, create)
        fd, created = self._open_at(parent, rel, create)
        self._fds[rel] = fd
        if self.visit is not None:
            self.visit(fd, rel, os.fstat(fd), created)
        return fd

    def _open_at(self, parent: int, rel: PurePosixPath, create: bool) -> tuple[int, bool]:
        name = rel.name
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent), False
        except FileNotFoundError:
            if not create:
                raise
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            return self._not_a_dir(parent, rel), False
        try:
            os.mkdir(name, DIR_MODE, dir_fd=parent)
        except FileExistsError:  # made meanwhile (or a dangling symlink): look again
            return self._open_at(parent, rel, create=False)
        return os.open(name, _DIR_FLAGS, dir_fd=parent), True

    def _not_a_dir(self, parent: int, rel: PurePosixPath) -> int:
        """``rel`` is a symlink (followed when it stays inside the root) or in the way."""
        path = self.root / rel
        st = os.stat(rel.name, dir_fd=parent, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            raise PublishError(f"{path} is in the way: it should be a directory")
        if not inside(self.root, path):
            raise UnsafePathError(
                f"{path} is a symlink that resolves outside {self.root}; "
                "refusing to write through it"
            )
        self.links.add(rel)
        return os.open(rel.name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=parent)

    def lstat(self, rel: PurePosixPath) -> os.stat_result:
        """The lstat of ``rel`` (a file or directory under the root), relative to its
        parent's descriptor."""
        return os.stat(rel.name, dir_fd=self.open(rel.parent), follow_symlinks=False)
