"""The file systems a bench world's trees live on (``--fs``, ``--cold-only-fs``): the work
dir as it is (``dir``), a loop-mounted XFS image with reflinks (``xfs``, the compose
host's usual file system), a tmpfs (``tmpfs``: no file system effect hides the CPU
work), and the tmpfs of the across-file-systems publish. The bench mounts each and
always unmounts it (and deletes the image) when it is done."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

KINDS = ("dir", "xfs", "tmpfs")


class FsUnavailable(RuntimeError):
    """This file system cannot be set up here (the message says why)."""


@dataclass
class Mounted:
    kind: str
    path: Path
    note: str
    mounted: bool = False
    image: Path | None = None

    def teardown(self) -> None:
        if self.mounted:
            p = subprocess.run(
                ["umount", str(self.path)], capture_output=True, text=True, check=False
            )
            if p.returncode != 0:  # busy (a process still inside): lazy, so nothing stays
                subprocess.run(["umount", "-l", str(self.path)], check=False)
            self.mounted = False
        if self.image is not None:
            self.image.unlink(missing_ok=True)


def available_memory() -> int:
    with Path("/proc/meminfo").open() as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def free_disk(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _mount(args: list[str], target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["mount", *args, str(target)], capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise FsUnavailable(f"mount {' '.join(args)} {target}: {p.stderr.strip()}")


def setup(kind: str, base: Path, size: int) -> Mounted:
    """A file system of ``kind`` for ``size`` bytes of trees, under ``base``."""
    if kind == "dir":
        return Mounted("dir", base, f"the work dir {base} as it is")
    if os.geteuid() != 0:
        raise FsUnavailable(f"{kind}: not root, cannot mount")
    size = size + (512 << 20)
    if kind == "tmpfs":
        if size > available_memory() * 0.7:
            raise FsUnavailable(
                f"tmpfs: {size >> 20} MB do not fit in {available_memory() >> 20} MB of "
                "available memory (raise --scale)"
            )
        mnt = base / "fs-tmpfs"
        _mount(["-t", "tmpfs", "-o", f"size={size}", "bench-tmpfs"], mnt)
        return Mounted("tmpfs", mnt, f"a {size >> 20} MB tmpfs at {mnt}", mounted=True)
    if kind == "xfs":
        if not shutil.which("mkfs.xfs"):
            raise FsUnavailable("xfs: mkfs.xfs not found (apt-get install xfsprogs)")
        image = base / "fs-xfs.img"
        if size > free_disk(base) * 0.9:
            raise FsUnavailable(f"xfs: a {size >> 20} MB image does not fit in {base}")
        # sparse: the image only takes what is written into it
        with image.open("wb") as fh:
            fh.truncate(max(size, 1 << 30))
        p = subprocess.run(
            ["mkfs.xfs", "-q", "-f", "-m", "reflink=1", str(image)],
            capture_output=True,
            text=True,
            check=False,
        )
        if p.returncode != 0:
            image.unlink(missing_ok=True)
            raise FsUnavailable(f"mkfs.xfs {image}: {p.stderr.strip()}")
        mnt = base / "fs-xfs"
        try:
            _mount(["-o", "loop", str(image)], mnt)
        except FsUnavailable:
            image.unlink(missing_ok=True)
            raise
        return Mounted(
            "xfs",
            mnt,
            f"XFS (reflink=1) on a loop-mounted {size >> 20} MB sparse image {image} at {mnt}",
            mounted=True,
            image=image,
        )
    raise FsUnavailable(f"unknown file system kind {kind!r} (one of {', '.join(KINDS)})")


def mount_tmpfs(base: Path, nbytes: int) -> tuple[Path | None, str]:
    """A tmpfs for the across-filesystems publish, or None and why not."""
    if os.geteuid() != 0:
        return None, "across-FS publish skipped: not root, cannot mount a tmpfs"
    avail = available_memory()
    size = int(nbytes * 2.3) + (256 << 20)
    if size > avail * 0.7:
        return None, (
            f"across-FS publish skipped: a {size >> 20} MB tmpfs does not fit in "
            f"{avail >> 20} MB of available memory (raise --scale)"
        )
    mnt = base / "tmpfs"
    mnt.mkdir()
    p = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "bench-tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if p.returncode != 0:
        return None, f"across-FS publish skipped: mount -t tmpfs failed: {p.stderr.strip()}"
    return mnt, f"across-FS: staging on a {size >> 20} MB tmpfs at {mnt}"
