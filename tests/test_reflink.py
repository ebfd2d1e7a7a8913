"""Reflinks (issue 16): where the filesystem shares blocks between files, composes and
same-filesystem publishes clone (FICLONE) instead of hardlinking. The trees share
blocks, not inodes: bytes written into one tree's copy reach no other tree.

The world lives on a loop-mounted XFS image made with ``reflink=1`` (root and
``mkfs.xfs`` needed, else skipped with the reason); the fallback to hardlinks, and to
copies across filesystems, is shown on tmpfs.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler import destination, fsutil
from reconciler.composefiles import SourceFile
from reconciler.extents import same_blocks
from reconciler.fsutil import Sharer
from reconciler.publishing import holds_bytes
from reconciler.verifying import verify_tree
from reconciler.vocabulary import LinkKind

from .mounts import tmpfs
from .publish_support import SIG_REL, World, build_world, snapshot, tree_listing
from .test_publish_crash import killed_apply

#: The package sig-data is in compose B at three places (one noarch file).
REL = "x86_64/core-common/Packages/s/sig-data-1.0-1.noarch.rpm"
TWINS = (
    REL,
    "aarch64/core-common/Packages/s/sig-data-1.0-1.noarch.rpm",
    "x86_64/core-infra/Packages/s/sig-data-1.0-1.noarch.rpm",
)
#: FIEMAP_EXTENT_SHARED (linux/fiemap.h): the extent's blocks belong to other files too.
SHARED = 0x2000


@pytest.fixture(autouse=True)
def reflinks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clones as a host has them (conftest turns them off for the other tests)."""
    monkeypatch.delenv(fsutil.REFLINKS_ENV, raising=False)


def _refusal() -> str | None:
    if os.geteuid() != 0:
        return "mounting a loop device needs root"
    if shutil.which("mkfs.xfs") is None:
        return "mkfs.xfs is not installed (xfsprogs)"
    return None


@pytest.fixture
def xfs(tmp_path: Path) -> Iterator[Path]:
    """An XFS filesystem with reflinks, loop-mounted (and unmounted afterwards)."""
    refusal = _refusal()
    if refusal is not None:
        pytest.skip(refusal)
    image, mnt = tmp_path / "xfs.img", tmp_path / "xfs"
    subprocess.run(["truncate", "-s", "1G", str(image)], check=True)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
        image.unlink()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def extent_flags(path: Path) -> list[int]:
    """The flags of each extent of ``path`` (``xfs_io -c "fiemap -v"``)."""
    out = subprocess.run(
        ["xfs_io", "-r", "-c", "fiemap -v", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split() for line in out.splitlines()[2:]]
    return [int(row[-1], 16) for row in rows if row and "hole" not in row]


def places(world: World, rel: str = REL) -> dict[str, Path]:
    return {
        "compose": world.compose_sig_dir(world.b) / rel,
        "staging": world.staging / SIG_REL / rel,
        "production": world.production / SIG_REL / rel,
    }


def assert_clones(paths: list[Path]) -> None:
    """One file each (no hardlinks), the same bytes, mode, owner and mtime, and blocks
    shared with the others."""
    stats = [p.stat() for p in paths]
    assert len({s.st_ino for s in stats}) == len(paths), "an inode of its own each"
    assert all(s.st_nlink == 1 for s in stats), paths
    assert len({sha256(p) for p in paths}) == 1
    want = {(s.st_size, s.st_mtime_ns, stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid) for s in stats}
    assert len(want) == 1, want
    assert stat.S_IMODE(stats[0].st_mode) == 0o444
    for p in paths:
        flags = extent_flags(p)
        assert flags and all(f & SHARED for f in flags), (p, flags)


@pytest.fixture
def world(xfs: Path) -> Iterator[World]:
    """Compose, staging and production roots on the XFS image: compose A in production,
    B in staging."""
    yield from build_world(xfs)


def promote(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """B to production too (logging at INFO): it says how it publishes."""
    world.pin(world.b)
    capsys.readouterr()
    assert world.run("apply", "-v") == 0
    said = capsys.readouterr().err
    assert f"to {world.production / SIG_REL} from the changes of" in said, said
    assert " files changed (clones (reflink))" in said


def test_publishes_clone_and_a_write_reaches_one_tree(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    promote(world, capsys)
    for rel in TWINS:
        assert_clones(list(places(world, rel).values()))
    # compose B took from compose A what did not change (a GPG key): a clone too
    key = next((world.compose_sig_dir(world.b) / "x86_64/core-common").glob("RPM-GPG-KEY-*"))
    old = world.compose_sig_dir(world.a) / key.relative_to(world.compose_sig_dir(world.b))
    assert_clones([old, key])

    good = sha256(places(world)["compose"])
    prod = places(world)["production"]
    with prod.open("r+b") as fh:  # root writes through 0444
        fh.seek(100)
        fh.write(b"\0not the package\0")
    assert sha256(prod) != good
    for name in ("compose", "staging"):
        assert sha256(places(world)[name]) == good, f"{name}'s copy is intact"
    for twin in TWINS[1:]:
        assert sha256(places(world, twin)["production"]) == good, "its twin is intact"

    capsys.readouterr()
    assert world.run("verify", world.production) == 1
    assert f"{prod}: " in capsys.readouterr().out
    assert world.run("verify", world.staging) == 0
    assert world.run("verify", "--drift") == 1, "its mtime changed"
    assert world.run("apply") == 0, "the repair"
    assert sha256(prod) == good
    assert_clones(list(places(world).values()))
    assert world.run("verify", world.production) == 0
    assert world.run("verify", "--drift", "--deep") == 0


def test_a_compose_takes_the_previous_composes_files_as_clones(world: World) -> None:
    """A compose with nothing changed upstream takes every package, its repodata and
    the keys from the previous compose: clones, and the twins within it too."""
    assert world.run("compose", "core", "9") == 0
    c = max((world.root / "compose" / "9").glob("SIG-core-9-*"), key=lambda p: p.name).name
    assert c not in (world.a, world.b)
    new, old = world.compose_sig_dir(c), world.compose_sig_dir(world.b)
    files = sorted(p.relative_to(old) for p in old.rglob("*") if p.is_file())
    assert sum(1 for f in files if f.suffix == ".rpm") >= 10
    for rel in files:
        assert_clones([old / rel, new / rel])
    assert_clones([new / rel for rel in TWINS])


def test_a_second_pass_with_nothing_changed_clones_nothing(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    promote(world, capsys)
    trees = (world.staging, world.production, world.compose_sig_dir(world.b))
    before = [snapshot(t) for t in trees]
    ctimes = [{p: p.stat().st_ctime_ns for p in t.rglob("*")} for t in trees]
    assert world.run("apply") == 0
    assert [snapshot(t) for t in trees] == before, "not an inode, byte or mtime changed"
    assert [{p: p.stat().st_ctime_ns for p in t.rglob("*")} for t in trees] == ctimes
    assert world.run("verify", "--drift", "--deep") == 0


def test_a_clone_never_replaces_a_name_and_keeps_the_source_attributes(xfs: Path) -> None:
    src = xfs / "a.rpm"
    src.write_bytes(os.urandom(200_000))
    os.chown(src, 4321, 4322)
    src.chmod(0o444)
    os.utime(src, ns=(1_600_000_000_123_456_789, 1_600_000_000_987_654_321))
    sharer = Sharer()
    assert sharer.new(src, xfs / "b.rpm") is LinkKind.CLONE
    assert sharer.kind is LinkKind.CLONE and sharer.unsynced
    assert_clones([src, xfs / "b.rpm"])
    assert (xfs / "b.rpm").stat().st_uid == 4321
    taken = xfs / "c.rpm"
    taken.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        sharer.new(src, taken)
    assert taken.read_bytes() == b"someone else's"
    assert sorted(p.name for p in xfs.iterdir()) == ["a.rpm", "b.rpm", "c.rpm"], "no tmp left"
    leftover = fsutil.tmp_name(xfs / "e.rpm")  # a crashed process with our pid left it
    leftover.write_bytes(b"half a clone")
    assert sharer.new(src, xfs / "e.rpm") is LinkKind.CLONE and not leftover.exists()
    durable = Sharer(durable=True)
    assert durable.temp(src, xfs / ".d.~tmp~") is LinkKind.CLONE and not durable.unsynced


def counting_ioctl(monkeypatch: pytest.MonkeyPatch, fail: int | None = None) -> list[int]:
    """Count FICLONE calls (each failing with ``fail`` when given)."""
    calls: list[int] = []
    real = fsutil.fcntl.ioctl

    def ioctl(fd: int, request: int, arg: Any = 0) -> Any:
        if request == fsutil.FICLONE:
            calls.append(fd)
            if fail is not None:
                raise OSError(fail, os.strerror(fail))
        return real(fd, request, arg)

    monkeypatch.setattr(fsutil.fcntl, "ioctl", ioctl)
    return calls


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting tmpfs needs root")
def test_without_reflinks_it_hardlinks_as_before_deciding_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """tmpfs shares no blocks: hardlinks (one inode), decided by the first file; the rest
    of the pair's files are not asked again. Across filesystems: copies, whole, with the
    source's mode and mtime. Each kind is logged once per tree pair."""
    caplog.set_level(logging.INFO, logger="reconciler")
    monkeypatch.setattr(logging.getLogger("reconciler"), "propagate", True)
    with tmpfs(tmp_path / "t", "size=16m") as t, tmpfs(tmp_path / "u", "size=16m") as u:
        src = t / "a.rpm"
        src.write_bytes(os.urandom(100_000))
        src.chmod(0o444)
        calls = counting_ioctl(monkeypatch)
        label = f"publishing to {t}"
        first = Sharer(label)
        assert first.new(src, t / "b.rpm") is LinkKind.HARDLINK
        assert first.new(src, t / "c.rpm") is LinkKind.HARDLINK
        assert first.temp(src, t / ".e.~tmp~") is LinkKind.HARDLINK
        assert len(calls) == 1, "asked once"
        names = ("a.rpm", "b.rpm", "c.rpm", ".e.~tmp~")
        assert {(t / n).stat().st_ino for n in names} == {src.stat().st_ino}
        assert not first.unsynced and first.counts[LinkKind.HARDLINK] == 3
        assert f"{label} hardlinks (no reflinks here) (Operation not supported)" in caplog.text
        assert Sharer(label).new(src, t / "d.rpm") is LinkKind.HARDLINK  # the next publish
        assert caplog.text.count(label) == 1, "logged once"
        across = Sharer(f"publishing to {u}")
        assert across.new(src, u / "a.rpm") is LinkKind.COPY
        assert across.unsynced and not list(u.glob("*.~tmp~"))
        got, want = (u / "a.rpm").stat(), src.stat()
        assert (got.st_mtime_ns, got.st_mode) == (want.st_mtime_ns, want.st_mode)
        assert got.st_ino != want.st_ino and (u / "a.rpm").read_bytes() == src.read_bytes()
        said = f"publishing to {u} copies instead of hardlinking (Invalid cross-device link)"
        assert said in caplog.text
        assert not same_blocks(src, u / "a.rpm")


def test_a_pair_that_stops_cloning_falls_back_to_hardlinks(
    xfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clones were decided, and the filesystem refuses them now (remounted, say): the
    file is hardlinked, and the rest are not asked to clone again."""
    src = xfs / "a.rpm"
    src.write_bytes(b"x" * 10_000)
    sharer = Sharer()
    assert sharer.new(src, xfs / "b.rpm") is LinkKind.CLONE
    calls = counting_ioctl(monkeypatch, fail=errno.EOPNOTSUPP)
    assert sharer.new(src, xfs / "c.rpm") is LinkKind.HARDLINK
    assert (xfs / "c.rpm").stat().st_ino == src.stat().st_ino
    assert sharer.kind is LinkKind.HARDLINK and len(calls) == 1
    assert sharer.new(src, xfs / "d.rpm") is LinkKind.HARDLINK
    assert len(calls) == 1
    assert not list(xfs.glob("*.~tmp~"))


def test_a_file_refused_alone_decides_nothing(xfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One file the filesystem will not clone (EINVAL: a swap file, say) is hardlinked; the
    next file is cloned."""
    src = xfs / "a.rpm"
    src.write_bytes(b"x" * 10_000)
    sharer = Sharer()
    with monkeypatch.context() as m:
        counting_ioctl(m, fail=errno.EINVAL)
        assert sharer.new(src, xfs / "b.rpm") is LinkKind.HARDLINK
    assert sharer.kind is None
    assert sharer.new(src, xfs / "c.rpm") is LinkKind.CLONE
    assert sharer.kind is LinkKind.CLONE


def test_a_clone_nobody_wrote_into_is_known_without_reading_it(
    xfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clone is another inode, yet the same file while it shares every block with the
    compose's: a publish recognises it (found in place, a repair's unsuspected paths,
    an adoption) by where its blocks are, not by hashing it. Written into, it is
    hashed, and is not the same file."""
    compose, published = xfs / "compose", xfs / "production"
    compose.mkdir()
    published.mkdir()
    data = os.urandom(1_500_000)
    (compose / "p.rpm").write_bytes(data)
    src = SourceFile("p.rpm", compose, len(data), 0, hashlib.sha256(data).hexdigest())
    dst = published / "p.rpm"
    assert Sharer().new(src.path, dst) is LinkKind.CLONE
    copy = published / "copy.rpm"
    copy.write_bytes(data)
    assert same_blocks(src.path, dst) and same_blocks(dst, src.path)
    assert not same_blocks(src.path, copy), "the same bytes elsewhere: not known so"
    hashed: list[Path] = []
    real_hash = destination.hash_file

    def counting_hash(path: Path, algo: str = "sha256", dir_fd: int | None = None) -> str:
        hashed.append(path)
        return real_hash(path, algo, dir_fd)

    monkeypatch.setattr(destination, "hash_file", counting_hash)
    assert holds_bytes(dst, src) and hashed == []
    assert holds_bytes(dst, src, suspect=True) and hashed == [dst], "drift named it: hashed"
    with dst.open("r+b") as fh:
        fh.seek(700_000)
        fh.write(b"written in place")
    assert not same_blocks(src.path, dst)
    assert not holds_bytes(dst, src)
    assert hashlib.sha256(src.path.read_bytes()).hexdigest() == src.sha256


def test_reflinks_off_hardlinks_where_clones_would_work(
    xfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = xfs / "a.rpm"
    src.write_bytes(b"x" * 10_000)
    monkeypatch.setenv(fsutil.REFLINKS_ENV, "off")
    assert Sharer().new(src, xfs / "b.rpm") is LinkKind.HARDLINK
    assert (xfs / "b.rpm").stat().st_ino == src.stat().st_ino


#: A clone gets its name by link(2) of its temporary name, which is then unlinked: a kill
#: before, between and after them, early and late in the promotion, and at a rename.
CRASH_POINTS = (("link,linkat", 1), ("link,linkat", 12), ("unlink,unlinkat", 1),
                ("unlink,unlinkat", 12), ("rename,renameat,renameat2", 2))  # fmt: skip


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_sigkill_while_cloning_leaves_production_valid(world: World, tmp_path: Path) -> None:
    """Production valid at every kill, and the next pass ends where an uninterrupted one
    does: the same bytes, clones (one link each), no temporary name left."""
    saved = tmp_path / "saved"
    world.pin(world.b)
    for name in ("production", "state"):
        shutil.copytree(world.root / name, saved / name, symlinks=True)
    assert world.run("apply") == 0
    reference = tree_listing(world.production / SIG_REL)
    for syscalls, n in CRASH_POINTS:
        for name in ("production", "state"):
            shutil.rmtree(world.root / name)
            shutil.copytree(saved / name, world.root / name, symlinks=True)
        assert killed_apply(world, syscalls, n) in (-9, 137), (syscalls, n)
        report = verify_tree(world.production)
        assert report.ok, (syscalls, n, [str(p) for p in report.problems])
        assert world.run("apply") == 0, (syscalls, n)
        assert tree_listing(world.production / SIG_REL) == reference, (syscalls, n)
        assert not list(world.production.rglob("*.~tmp~")), (syscalls, n)
        for rel in TWINS:
            assert_clones(list(places(world, rel).values()))
