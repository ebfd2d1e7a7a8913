"""Small, crash-safe file operations shared by composing and publishing.

Temporary files end in ``.~tmp~`` (mirror clients skip those) and are only
ever renamed into place, so a reader sees the old file or the new one.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from .names import TMP_SUFFIX

#: The mode of every file a compose writes or links, and of every published file: a
#: package is one inode in every tree, so a writable file would be writable everywhere.
READ_ONLY = 0o444
#: The mode of every directory of a compose and of a published tree.
DIR_MODE = 0o755


def tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


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
) -> None:
    """Write ``data`` to a temporary file, fsync it, and rename it over ``path``.

    ``mode`` is set whatever the umask; ``before_rename(fd)`` runs on the written file
    before it gets its name (a chown: the file is never seen with another owner).
    """
    raw = data.encode() if isinstance(data, str) else data
    tmp = tmp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(raw)
            fh.flush()
            if before_rename is not None:
                before_rename(fh.fileno())
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


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


def copy_fsync(src: Path, dst: Path, mode: int = READ_ONLY) -> str:
    """Copy ``src`` to a new ``dst`` (``mode``) with its mtime, fsync it; return the sha1
    of the bytes."""
    sha1 = hashlib.sha1()  # noqa: S324 - the file lists' format asks for SHA1
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with src.open("rb") as fin, os.fdopen(fd, "wb") as fout:
        while chunk := fin.read(1 << 20):
            sha1.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fchmod(fout.fileno(), mode)
        os.fsync(fout.fileno())
    st = src.stat()
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
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


def link_or_copy(src: Path, dst: Path) -> bool:
    """Hardlink ``src`` to ``dst``; copy via a temporary name across filesystems.

    Returns True for a hardlink. ``dst`` must not exist.
    """
    try:
        os.link(src, dst, follow_symlinks=False)
        return True
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
    tmp = tmp_name(dst)
    copy_file(src, tmp)
    tmp.replace(dst)
    return False


#: sendfile(2) between two files is Linux's; elsewhere the bytes go through a buffer.
_NO_SENDFILE = frozenset({errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP})


def copy_file(src: Path, dst: Path) -> None:
    """Copy the regular file ``src`` to ``dst`` with its mode and times (as ``rsync -pt``).

    Extended attributes are not copied (nor does ``rsync`` without ``-X``): the copy
    takes the labels of where it lands. Neither name may be a symlink. ``dst`` is
    created or truncated, and removed again if the copy fails (a full disk, say).
    About 8 system calls a file, where :func:`shutil.copy2` makes some 17.
    """
    fd_in = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd_in)
        fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            _copy_bytes(fd_in, fd_out, st.st_size)
            os.fchmod(fd_out, st.st_mode & 0o7777)
            os.utime(fd_out, ns=(st.st_atime_ns, st.st_mtime_ns))
        except BaseException:
            os.close(fd_out)
            dst.unlink(missing_ok=True)
            raise
        os.close(fd_out)
    finally:
        os.close(fd_in)


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
