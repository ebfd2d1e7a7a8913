"""Whether two files share every block: clones (or links) nobody wrote into since.

FIEMAP (``ioctl(FS_IOC_FIEMAP)``) says where each extent of a file is on its device;
two files whose extents are all at the same places hold the same bytes, known without
reading them. Moved out of :mod:`reconciler.fsutil` (which re-exports it) for room.
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct
from pathlib import Path

#: ``ioctl(fd, FS_IOC_FIEMAP, struct fiemap)`` (linux/fiemap.h): where a file's extents are.
FS_IOC_FIEMAP = 0xC020660B
_FIEMAP = struct.Struct("=QQIIII")  # start, length, flags, mapped, count, reserved
_EXTENT = struct.Struct("=QQQ16xI12x")  # logical, physical, length, flags
_FIEMAP_SYNC, _LAST = 0x1, 0x1  # flush the file first; the last extent
#: Extents whose place says nothing of the bytes: unknown, delayed allocation, encoded
#: (compressed), encrypted, unaligned, inline in metadata, packed into a tail.
_UNSURE = 0x2 | 0x4 | 0x8 | 0x80 | 0x100 | 0x200 | 0x400
_MAX_EXTENTS = 64


def same_blocks(a: Path, b: Path, a_dir: int | None = None) -> bool:
    """Whether the regular files ``a`` and ``b`` are the same size and every extent of
    each is at the same place on one device: clones (or links) that nobody wrote into
    since, so the same bytes, known without reading them. False when not, or unknown
    (no FIEMAP, too many extents, compressed, inline). FIEMAP_FLAG_SYNC writes back a
    file's dirty pages first, so bytes written but not yet on disk count as written.
    ``a`` is a name in the directory ``a_dir`` when given."""
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
        fds = [os.open(a, flags, dir_fd=a_dir), os.open(b, flags)]
    except OSError:
        return False
    try:
        sa, sb = (os.fstat(fd) for fd in fds)
        if not (stat.S_ISREG(sa.st_mode) and stat.S_ISREG(sb.st_mode)):
            return False
        if sa.st_dev != sb.st_dev or sa.st_size != sb.st_size:
            return False
        ea, eb = (_extents(fd) for fd in fds)
    except OSError:
        return False
    finally:
        for fd in fds:
            os.close(fd)
    return ea is not None and ea == eb and (bool(ea) or sa.st_size == 0)


def _extents(fd: int) -> tuple[tuple[int, int, int], ...] | None:
    """(logical, physical, length) of each extent of ``fd``; None when unsure."""
    buf = bytearray(_FIEMAP.size + _EXTENT.size * _MAX_EXTENTS)
    _FIEMAP.pack_into(buf, 0, 0, 2**64 - 1, _FIEMAP_SYNC, 0, _MAX_EXTENTS, 0)
    fcntl.ioctl(fd, FS_IOC_FIEMAP, buf)
    mapped = _FIEMAP.unpack_from(buf)[3]
    out, flags = [], _LAST
    for i in range(mapped):
        logical, physical, length, flags = _EXTENT.unpack_from(buf, _FIEMAP.size + _EXTENT.size * i)
        if flags & _UNSURE:
            return None
        out.append((logical, physical, length))
    if mapped and not flags & _LAST:
        return None  # more extents than asked for: not worth a second call
    return tuple(out)
