"""Small, crash-safe file operations shared by composing and publishing.

Temporary files end in ``.~tmp~`` (mirror clients skip those) and are only
ever renamed into place, so a reader sees the old file or the new one.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import shutil
import stat
import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from .names import TMP_SUFFIX
from .vocabulary import LinkKind

log = logging.getLogger(__name__)

#: The mode of every file a compose writes or links, and of every published file: where
#: packages are hardlinked they are one inode in every tree, so a writable file would be
#: writable everywhere.
READ_ONLY = 0o444
#: The mode of every directory of a compose and of a published tree.
DIR_MODE = 0o755


def tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def lexists(name: Path, dir_fd: int | None = None) -> bool:
    """Whether ``name`` (relative to ``dir_fd`` when given) exists; symlinks not followed."""
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _unlink(name: Path, dir_fd: int | None) -> None:
    with suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: Path,
    data: bytes | str,
    mode: int = 0o644,
    before_rename: Callable[[int], None] | None = None,
    dir_fd: int | None = None,
) -> None:
    """Write ``data`` to a temporary file, fsync it, and rename it over ``path``.

    ``mode`` is set whatever the umask; ``before_rename(fd)`` runs on the written file
    before it gets its name (a chown: the file is never seen with another owner).
    With ``dir_fd`` (:class:`~reconciler.dirfds.DirHandles`), ``path`` is a name in
    that directory: no path is looked up on the way (network storage).
    """
    raw = data.encode() if isinstance(data, str) else data
    tmp = tmp_name(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    fd = os.open(tmp, flags, mode, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(raw)
            fh.flush()
            if before_rename is not None:
                before_rename(fh.fileno())
            os.fsync(fh.fileno())
        os.replace(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        _unlink(tmp, dir_fd)
        raise
    if dir_fd is None:
        fsync_dir(path.parent)
    else:
        os.fsync(dir_fd)


def read_only(path: Path, st: os.stat_result | None = None) -> None:
    """Make the file (or directory) ``path`` read-only (0444; directories 0755) unless it
    is already: a chmod changes the inode's ctime, which the mirrors' file lists show."""
    st = st or path.lstat()
    want = DIR_MODE if stat.S_ISDIR(st.st_mode) else READ_ONLY
    if stat.S_IMODE(st.st_mode) != want and not stat.S_ISLNK(st.st_mode):
        path.chmod(want)


def read_only_dirs(top: Path) -> None:
    """Every directory under ``top`` (and ``top``) gets :data:`DIR_MODE` where it has not."""
    for dirpath, _dirs, _files in os.walk(top):
        read_only(Path(dirpath))


def copy_fsync(src: Path, dst: Path, mode: int = READ_ONLY, dst_dir: int | None = None) -> str:
    """Copy ``src`` to a new ``dst`` (``mode``; relative to ``dst_dir`` when given) with
    its mtime, fsync it; return the sha1 of the bytes."""
    sha1 = hashlib.sha1()  # noqa: S324 - the file lists' format asks for SHA1
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    fd = os.open(dst, flags, mode, dir_fd=dst_dir)
    with src.open("rb") as fin, os.fdopen(fd, "wb") as fout:
        while chunk := fin.read(1 << 20):
            sha1.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fchmod(fout.fileno(), mode)
        st = os.fstat(fin.fileno())
        os.utime(fout.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
        os.fsync(fout.fileno())
    return sha1.hexdigest()


def swap_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` atomically (temporary link + rename): never absent."""
    tmp = tmp_name(link)
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(link)
    fsync_dir(link.parent)


def inside(root: Path, path: Path) -> bool:
    """True when ``path`` resolves (following symlinks) to somewhere under ``root``."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


#: ``ioctl(dst_fd, FICLONE, src_fd)`` (linux/fs.h): ``dst`` shares ``src``'s blocks until
#: one of them is written (copy on write): XFS with ``reflink=1``, btrfs, bcachefs.
FICLONE = 0x40049409
#: What a clone answers when the pair of filesystems cannot share blocks (no reflink
#: support, an ioctl the filesystem lacks, two filesystems, an old kernel): decided once.
_NO_CLONES = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOTTY, errno.ENOSYS, errno.EXDEV})
#: ... and when it will not clone this one file (a swap file, a DAX or realtime one).
_NOT_THIS_CLONE = frozenset({errno.EINVAL, errno.EPERM, errno.ETXTBSY})
#: What link(2) answers when the pair cannot hardlink (two mounts; a filesystem without
#: links, or protected_hardlinks), and for this one file (too many links already).
_NO_LINKS = frozenset({errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP})
_NOT_THIS_LINK = frozenset({errno.EMLINK})
#: What each kind falls back to, in the order tried.
_ORDER = (LinkKind.CLONE, LinkKind.HARDLINK, LinkKind.COPY)
#: ``RECONCILER_REFLINKS=off`` in the environment: never clone, hardlink as before
#: reflinks (a filesystem whose clones misbehave; tests that count on shared inodes).
REFLINKS_ENV = "RECONCILER_REFLINKS"
#: The kind last logged for each label: a tree pair is logged once per process, and again
#: only when what it does changes (a filesystem remounted, a root moved).
_logged: dict[str, LinkKind] = {}
_log_lock = threading.Lock()


class Sharer:
    """Gives files of one tree names in another (compose reuse, publishing): a clone
    (reflink: an inode of its own sharing the source's blocks, so that an edit of one copy
    cannot reach the others) where the filesystem can, else a hardlink (one inode), else
    a copy. Each keeps the source's bytes, mode, owner and mtime, as a hardlink would.

    One sharer serves one pair of trees (one publish, one compose): the first file that
    the pair's filesystems refuse a kind for decides, and the rest go straight to what
    worked. The decision is not kept beyond the sharer: the next publish asks again
    (one failed system call), so a filesystem remounted or made anew is seen at once.
    A file the decided kind fails for (a mount point inside a tree, say) takes the next
    kind, and a refusal of the whole pair moves the decision on. ``RECONCILER_REFLINKS=off``
    starts at hardlinks. ``label`` ("publishing to X"), when given, is logged with the
    kind once per process (again if it changes).
    ``durable``: each clone or copy is fsynced before it gets its name; otherwise
    :attr:`unsynced` says one was made, and the caller flushes the filesystem before
    anything names it (as publishing's copies always did).
    """

    def __init__(self, label: str = "", hint: str = "", durable: bool = False) -> None:
        self.label, self.hint, self.durable = label, hint, durable
        self.counts: dict[LinkKind, int] = dict.fromkeys(LinkKind, 0)
        self.unsynced = False
        self._kind: LinkKind | None = None
        self._order = _ORDER[1:] if os.environ.get(REFLINKS_ENV) == "off" else _ORDER
        self._why = ""  # why the pair refused the kinds before the decided one
        self._lock = threading.Lock()

    @property
    def kind(self) -> LinkKind | None:
        """The kind decided (None: nothing shared yet)."""
        return self._kind

    def new(
        self,
        src: Path,
        dst: Path,
        prepare: Callable[[Path], None] | None = None,
        dst_dir: int | None = None,
    ) -> LinkKind:
        """Give ``src`` the new name ``dst``; FileExistsError (nothing changed) when taken.

        The name appears whole: a hardlink is one link(2); a clone or a copy is made at a
        ``.~tmp~`` name, given ``prepare`` (an owner), and then linked to ``dst`` and
        its temporary name removed. link(2), unlike rename(2), never replaces a name
        that exists (an adopted tree's file, one placed by a publish that was
        interrupted): it fails, atomically. The extra name lives for two system calls;
        a crash between them leaves a ``.~tmp~`` name that the next pass sweeps, which
        removes nothing published. renameat2(RENAME_NOREPLACE) would be one call, but
        Python has no binding for it and not every filesystem has it. A hardlink gets
        ``prepare`` after it has its name (it is the source's inode anyway). With
        ``dst_dir``, ``dst`` is a name in that open directory (and so is what ``prepare``
        is given): nothing is looked up by path there (network storage).
        """
        decisive = True  # every kind tried before was refused by the pair, not the file
        for kind in self._kinds():
            try:
                if kind is LinkKind.HARDLINK:
                    os.link(src, dst, follow_symlinks=False, dst_dir_fd=dst_dir)
                    if prepare is not None:
                        prepare(dst)
                else:
                    if kind is LinkKind.COPY and lexists(dst, dst_dir):  # spare a useless copy
                        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
                    tmp = tmp_name(dst)
                    try:
                        self._make(kind, src, tmp, dst_dir)
                    except FileExistsError:  # left by an earlier process with our pid
                        os.unlink(tmp, dir_fd=dst_dir)
                        self._make(kind, src, tmp, dst_dir)
                    try:
                        if prepare is not None:
                            prepare(tmp)
                        _name_new(tmp, dst, dst_dir)
                    except BaseException:
                        _unlink(tmp, dst_dir)
                        raise
            except OSError as exc:
                if isinstance(exc, FileExistsError):
                    raise
                decisive &= self._refused(kind, exc)
                continue
            return self._done(kind, decisive)
        raise AssertionError("a copy is never refused")  # pragma: no cover

    def temp(self, src: Path, tmp: Path, dst_dir: int | None = None) -> LinkKind:
        """``src`` at the temporary name ``tmp`` (removed first if left over; relative to
        ``dst_dir`` when given), which the caller renames over the name it replaces."""
        _unlink(tmp, dst_dir)
        decisive = True
        for kind in self._kinds():
            try:
                self._make(kind, src, tmp, dst_dir)
            except OSError as exc:
                decisive &= self._refused(kind, exc)
                continue
            return self._done(kind, decisive)
        raise AssertionError("a copy is never refused")  # pragma: no cover

    def _make(self, kind: LinkKind, src: Path, dst: Path, dst_dir: int | None) -> None:
        if kind is LinkKind.HARDLINK:
            os.link(src, dst, follow_symlinks=False, dst_dir_fd=dst_dir)
        elif kind is LinkKind.CLONE:
            clone_file(src, dst, self.durable, dst_dir)
        else:
            copy_file(src, dst, self.durable, dst_dir)

    def _kinds(self) -> tuple[LinkKind, ...]:
        """The kinds to try, the decided one first."""
        kind = self._kind
        return self._order if kind is None else _ORDER[_ORDER.index(kind) :]

    def _refused(self, kind: LinkKind, exc: OSError) -> bool:
        """``kind`` cannot do it here: True when the pair of filesystems refuses it (then a
        decided ``kind`` moves on), False when only this file is refused; ``exc`` raised
        again when it is no refusal (a missing source, a full disk)."""
        if kind is LinkKind.CLONE:
            pair, one = _NO_CLONES, _NOT_THIS_CLONE
        elif kind is LinkKind.HARDLINK:
            pair, one = _NO_LINKS, _NOT_THIS_LINK
        else:
            raise exc
        if exc.errno in pair:
            with self._lock:
                self._why = exc.strerror or str(exc)
                if self._kind is kind:  # decided before: the filesystem changed since
                    self._decide(_ORDER[_ORDER.index(kind) + 1])
            return True
        if exc.errno in one:
            return False
        raise exc

    def _done(self, kind: LinkKind, decisive: bool) -> LinkKind:
        with self._lock:
            self.counts[kind] += 1
            self.unsynced |= kind is not LinkKind.HARDLINK and not self.durable
            if self._kind is None and decisive:
                self._decide(kind)
        return kind

    def _decide(self, kind: LinkKind) -> None:
        self._kind = kind
        with _log_lock:
            if not self.label or _logged.get(self.label) is kind:
                return
            _logged[self.label] = kind
        why = f" ({self._why})" if self._why else ""
        if kind is LinkKind.CLONE:
            log.info("%s clones (reflink): the trees share blocks, not inodes", self.label)
        elif kind is LinkKind.HARDLINK:
            log.info("%s hardlinks (no reflinks here)%s", self.label, why)
        else:
            log.warning("%s copies instead of hardlinking%s%s", self.label, why, self.hint)


def clone_or_link(src: Path, dst: Path) -> LinkKind:
    """``src`` at the new name ``dst`` (FileExistsError when taken): a clone, else a
    hardlink, else a copy (:meth:`Sharer.new`)."""
    return Sharer().new(src, dst)


def _name_new(tmp: Path, dst: Path, dir_fd: int | None = None) -> None:
    """Give the finished ``tmp`` the name ``dst`` unless ``dst`` exists (FileExistsError)."""
    try:
        os.link(tmp, dst, follow_symlinks=False, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as exc:
        if isinstance(exc, FileExistsError) or exc.errno not in _NO_LINKS | _NOT_THIS_LINK:
            raise
        # No links on this filesystem: check, then rename. Only this process writes the
        # tree (the caller holds its lock), so no name can appear in between.
        if lexists(dst, dir_fd):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst)) from None
        os.rename(tmp, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return
    os.unlink(tmp, dir_fd=dir_fd)


def _new_file_from(
    src: Path,
    dst: Path,
    flags: int,
    durable: bool,
    dst_dir: int | None,
    fill: Callable[[int, int, os.stat_result], None],
) -> None:
    """Make ``dst`` (opened with ``flags``) from ``src``: ``fill`` gives it its bytes and
    mode, then it gets ``src``'s times and, when ``durable``, an fsync. Neither name may
    be a symlink; ``dst`` (relative to ``dst_dir`` when given) is removed again if any
    step fails."""
    fd_in = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd_in)
        fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | flags, 0o600,
                         dir_fd=dst_dir)  # fmt: skip
        try:
            fill(fd_in, fd_out, st)
            os.utime(fd_out, ns=(st.st_atime_ns, st.st_mtime_ns))
            if durable:
                os.fsync(fd_out)
        except BaseException:
            os.close(fd_out)
            _unlink(dst, dst_dir)
            raise
        os.close(fd_out)
    finally:
        os.close(fd_in)


def _clone_into(fd_in: int, fd_out: int, st: os.stat_result) -> None:
    fcntl.ioctl(fd_out, FICLONE, fd_in)
    with suppress(PermissionError):  # not root: the clone is ours, as a copy is
        os.fchown(fd_out, st.st_uid, st.st_gid)
    os.fchmod(fd_out, stat.S_IMODE(st.st_mode))  # after the chown, which clears setuid


def clone_file(src: Path, dst: Path, durable: bool = False, dst_dir: int | None = None) -> None:
    """Make the new file ``dst`` share ``src``'s blocks (FICLONE), with its mode, owner and
    times, as a hardlink would show them (the mirrors' lists and the inventory compare
    size and mtime); fsynced when ``durable``. OSError (``dst`` removed) when the
    filesystem cannot clone; neither name may be a symlink. ``dst`` is relative to
    ``dst_dir`` when given."""
    _new_file_from(src, dst, os.O_EXCL, durable, dst_dir, _clone_into)


#: sendfile(2) between two files is Linux's; elsewhere the bytes go through a buffer.
_NO_SENDFILE = frozenset({errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP})


def _copy_into(fd_in: int, fd_out: int, st: os.stat_result) -> None:
    _copy_bytes(fd_in, fd_out, st.st_size)
    os.fchmod(fd_out, stat.S_IMODE(st.st_mode))


def copy_file(src: Path, dst: Path, durable: bool = False, dst_dir: int | None = None) -> None:
    """Copy the regular file ``src`` to ``dst`` with its mode and times (as ``rsync -pt``).

    Extended attributes are not copied (nor does ``rsync`` without ``-X``): the copy
    takes the labels of where it lands. Neither name may be a symlink. ``dst`` is
    created or truncated, and removed again if the copy fails (a full disk, say); fsynced
    when ``durable``; relative to ``dst_dir`` when given. About 8 system calls a file,
    where :func:`shutil.copy2` makes 17.
    """
    _new_file_from(src, dst, os.O_TRUNC, durable, dst_dir, _copy_into)


def _copy_bytes(fd_in: int, fd_out: int, size: int) -> None:
    offset = 0
    try:
        while offset < size:
            sent = os.sendfile(fd_out, fd_in, offset, size - offset)
            if sent == 0:
                break  # the source shrank meanwhile: copy what there is
            offset += sent
        return
    except OSError as exc:
        if offset or exc.errno not in _NO_SENDFILE:
            raise
    with open(fd_in, "rb", closefd=False) as reader, open(fd_out, "wb", closefd=False) as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)
