"""The copy that publishing uses across filesystems: bytes, mode and times, nothing else."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from reconciler import fsutil
from reconciler.fsutil import clone_or_link, copy_file
from reconciler.vocabulary import LinkKind

from .mounts import needs_root, tmpfs


def make_source(path: Path, size: int = 300_000, mode: int = 0o640) -> Path:
    path.write_bytes(os.urandom(size))
    path.chmod(mode)
    os.utime(path, ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321))
    return path


def assert_same_file(src: Path, dst: Path) -> None:
    s, d = src.lstat(), dst.lstat()
    assert dst.read_bytes() == src.read_bytes()
    assert (s.st_dev, s.st_ino) != (d.st_dev, d.st_ino)  # a copy, not a link
    assert d.st_mode == s.st_mode
    assert d.st_mtime_ns == s.st_mtime_ns  # the file lists carry mtimes


@pytest.mark.parametrize(("size", "mode"), [(0, 0o644), (1, 0o600), (300_000, 0o640)])
def test_copy_keeps_bytes_mode_and_times(tmp_path: Path, size: int, mode: int) -> None:
    src = make_source(tmp_path / "a.rpm", size, mode)
    copy_file(src, tmp_path / "b.rpm")
    assert_same_file(src, tmp_path / "b.rpm")


def test_copy_truncates_a_stale_temporary_file(tmp_path: Path) -> None:
    src = make_source(tmp_path / "a.rpm", 1000)
    stale = tmp_path / "b.rpm"
    stale.write_bytes(b"x" * 5000)  # left by a crashed process with the same pid
    copy_file(src, stale)
    assert_same_file(src, stale)


def test_copy_neither_reads_nor_writes_through_a_symlink(tmp_path: Path) -> None:
    src = make_source(tmp_path / "a.rpm", 1000)
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "dst").symlink_to(victim)
    with pytest.raises(OSError) as caught:
        copy_file(src, tmp_path / "dst")
    assert caught.value.errno == errno.ELOOP
    assert victim.read_text() == "keep me"
    (tmp_path / "src-link").symlink_to(src)
    with pytest.raises(OSError):
        copy_file(tmp_path / "src-link", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_copy_without_sendfile_goes_through_a_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fake: Linux always has sendfile between files, other systems do not."""

    def unsupported(*args: object) -> int:
        raise OSError(errno.EINVAL, "sendfile to a file is not supported here")

    monkeypatch.setattr(fsutil.os, "sendfile", unsupported)
    src = make_source(tmp_path / "a.rpm", 3_000_000)
    copy_file(src, tmp_path / "b.rpm")
    assert_same_file(src, tmp_path / "b.rpm")


@needs_root
def test_copy_to_another_filesystem_and_clone_or_link(tmp_path: Path) -> None:
    src = make_source(tmp_path / "a.rpm", 2_000_000, 0o644)
    with tmpfs(tmp_path / "other", "size=16m") as other:
        copy_file(src, other / "b.rpm")
        assert_same_file(src, other / "b.rpm")
        assert clone_or_link(src, other / "c.rpm") is LinkKind.COPY
        assert_same_file(src, other / "c.rpm")
        assert not list(other.glob("*.~tmp~"))
        # tmpfs shares no blocks: the same inode, as before reflinks
        assert clone_or_link(other / "b.rpm", other / "d.rpm") is LinkKind.HARDLINK
        assert (other / "d.rpm").stat().st_ino == (other / "b.rpm").stat().st_ino


@needs_root
def test_a_full_disk_fails_the_copy_and_leaves_nothing(tmp_path: Path) -> None:
    src = make_source(tmp_path / "a.rpm", 3_000_000)
    with tmpfs(tmp_path / "small", "size=1m") as small:
        with pytest.raises(OSError) as caught:
            copy_file(src, small / "b.rpm")
        assert caught.value.errno == errno.ENOSPC
        assert list(small.iterdir()) == []
