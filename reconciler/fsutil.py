"""Small, crash-safe file operations shared by composing and publishing.

Temporary files end in ``.~tmp~`` (mirror clients skip those) and are only
ever renamed into place, so a reader sees the old file or the new one.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

TMP_SUFFIX = ".~tmp~"


def tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Write ``data`` to a temporary file, fsync it, and rename it over ``path``."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = tmp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


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
    shutil.copy2(src, tmp, follow_symlinks=False)
    tmp.replace(dst)
    return False
