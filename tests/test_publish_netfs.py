"""Publishing onto network storage: every directory is opened once, one name at a time
from the stage root, and the files are placed relative to it (reconciler.dirfds,
reconciler.destination). On NFS, EFS or sshfs each component of a path is a round trip:
a publish that names its files by deep paths pays ten where a name in an open directory
costs one (BENCHMARKS.md, round 7). The walk is also the check that no symlink leads out
of the root.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from reconciler.dirfds import DirHandles
from reconciler.errors import PublishError, UnsafePathError

from .publish_support import CATEGORY, SIG_REL, World, build_world, tree_listing

#: A quoted string argument in a line of strace's output.
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_CALL = re.compile(r"\s*\d+\s+(\w+)\(")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from build_world(tmp_path, grace="1s")


def _deep_calls(world: World, trace: Path) -> list[tuple[str, str]]:
    """(syscall, path) of every traced call that named a path under the production root
    by its full path (the root itself excluded)."""
    prefix = f"{world.production}/"
    calls = []
    for line in trace.read_text(errors="replace").splitlines():
        call = _CALL.match(line)
        for arg in _QUOTED.findall(line):
            if arg.startswith(prefix):
                calls.append((call.group(1) if call else "?", arg.removeprefix(prefix)))
    return calls


def _traced_apply(world: World, trace: Path) -> None:
    cmd = ["strace", "-f", "-qq", "-o", str(trace), "-e", "trace=%file,%desc",
           sys.executable, "-m", "reconciler.cli", "apply",
           "--config", str(world.config), "--desired-state", str(world.ds.path)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_publish_names_no_deep_path_on_the_production_tree(world: World, tmp_path: Path) -> None:
    """The promotion (packages added, metadata replaced, the file lists patched) and the
    pass that deletes what it superseded, traced: no placed, replaced, listed, deleted or
    checked file is named by its path from the root; the one full path left is the
    target directory, opened once by the drift check of every pass (its ``repomd.xml``
    files are stat'ed relative to it). Before the directories were held open, the
    promotion alone named 287 deep paths (a link, a rename, a stat of each prefix)."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    world.pin(world.b)
    trace = tmp_path / "trace.txt"
    _traced_apply(world, trace)
    promoted = _deep_calls(world, trace)
    assert (world.production / SIG_REL).is_dir()
    published = tree_listing(world.production / SIG_REL)
    assert any("sig-data" in p for p in published), "the promotion placed the new package"
    time.sleep(1.1)  # the grace: the next pass deletes what B no longer has
    _traced_apply(world, trace)
    deleted = _deep_calls(world, trace)
    assert not list((world.production / SIG_REL).rglob("sig-tools-*")), "deleted"
    for calls in (promoted, deleted):
        assert calls == [("openat", SIG_REL)], "named by a deep path"


def test_a_symlinked_directory_out_of_the_root_is_refused_by_the_walk(
    world: World, tmp_path: Path
) -> None:
    """A directory deep in the SIG's tree made a symlink to somewhere outside the root:
    the walk of single names meets it with O_NOFOLLOW and refuses it; nothing is written
    outside, and the error names the path."""
    outside = tmp_path / "outside"
    packages = next((world.production / SIG_REL).rglob("Packages"))
    shutil.copytree(packages, outside)
    before = tree_listing(outside)
    shutil.rmtree(packages)
    packages.symlink_to(outside)
    world.pin(world.b)
    assert world.run("apply") == 1
    assert tree_listing(outside) == before, "nothing written through the symlink"
    assert packages.is_symlink()


def test_a_symlink_that_stays_inside_the_root_is_followed(world: World) -> None:
    """As before the walk: a symlinked directory that resolves inside the root (a
    ``9 -> 9.6`` release link of an older layout) is written through."""
    category = world.production / CATEGORY
    (category / "9").rename(category / "9.6")
    (category / "9").symlink_to("9.6")
    world.pin(world.b)
    assert world.run("apply") == 0
    assert (category / "9").is_symlink()
    assert list((category / "9.6" / "core").rglob("sig-data-*.rpm"))


def test_the_delayed_delete_never_follows_a_symlink_out_of_the_root(
    world: World, tmp_path: Path
) -> None:
    """The directory of a pending deletion became a symlink out of the root before the
    grace passed: nothing outside is deleted."""
    world.pin(world.b)
    assert world.run("apply") == 0
    doomed = next((world.production / SIG_REL).rglob("sig-tools-*.rpm"))
    outside = tmp_path / "outside"
    shutil.copytree(doomed.parent, outside)
    shutil.rmtree(doomed.parent)
    doomed.parent.symlink_to(outside)
    time.sleep(1.1)
    world.run("apply")
    assert (outside / doomed.name).is_file(), "not deleted through the symlink"


def test_dir_handles_open_each_directory_once_and_refuse_what_is_unsafe(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "file").write_text("x")
    (tmp_path / "out").mkdir()
    (root / "out").symlink_to(tmp_path / "out")
    (root / "in").symlink_to("a")
    seen: list[tuple[PurePosixPath, bool]] = []
    with DirHandles(root, lambda fd, rel, st, created: seen.append((rel, created))) as handles:
        fd = handles.open("a/b/c/d", create=True)
        assert handles.open("a/b/c/d") == fd, "opened once"
        assert (root / "a/b/c/d").is_dir()
        assert stat.S_IMODE((root / "a/b/c").stat().st_mode) == 0o755
        assert seen == [
            (PurePosixPath("a"), False),
            (PurePosixPath("a/b"), False),
            (PurePosixPath("a/b/c"), True),
            (PurePosixPath("a/b/c/d"), True),
        ]
        with pytest.raises(UnsafePathError, match="resolves outside"):
            handles.open("out/x", create=True)
        assert not (tmp_path / "out" / "x").exists()
        with pytest.raises(PublishError, match="in the way"):
            handles.open("file/x", create=True)
        with pytest.raises(FileNotFoundError):
            handles.open("missing")
        with pytest.raises(UnsafePathError):
            handles.open("../escape")
        assert handles.open("in/b") >= 0 and PurePosixPath("in") in handles.links
    assert handles.opened == []
