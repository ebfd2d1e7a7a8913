"""Crash safety: SIGKILL a promotion at many file operations; the tree stays valid and the
next pass converges to the same tree as an uninterrupted run.

The kill is real: strace's syscall tampering delivers SIGKILL to the reconciler right
after its Nth link or rename (or fsync), with no test hook in the product's code.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.filelists import TIMELIST_SIG, UNLISTED, parse_timelist
from reconciler.verifying import verify_tree

from .publish_support import CATEGORY, World, build_world, tree_listing

LISTS = tuple(UNLISTED)
pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from build_world(tmp_path_factory.mktemp("crash"))


def snapshot(world: World, dest: Path) -> None:
    for name in ("production", "state"):
        shutil.copytree(world.root / name, dest / name, symlinks=True)


def restore(world: World, saved: Path) -> None:
    for name in ("production", "state"):
        shutil.rmtree(world.root / name)
        shutil.copytree(saved / name, world.root / name, symlinks=True)


def content(world: World) -> dict[str, tuple[int, str]]:
    listing = tree_listing(world.production)
    return {k: v for k, v in listing.items() if not k.endswith(LISTS)}


def killed_apply(world: World, syscalls: str, n: int) -> int:
    cmd = [
        "strace", "-qq", "-o", "/dev/null", "-e", f"trace={syscalls}",
        "-e", f"inject={syscalls}:signal=SIGKILL:when={n}",
        sys.executable, "-m", "reconciler.cli", "apply", "--config", str(world.config),
        "--desired-state", str(world.ds.path),
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, timeout=120, check=False).returncode


#: The promotion does about 37 links (most packages are linked straight to their name),
#: 12 renames (temporary copies of repomd.xml, the file lists) and 22 fsyncs; the GPG keys
#: and unchanged metadata files are the same inodes in both composes (nothing to replace).
CRASH_POINTS = (
    [("link,linkat", n) for n in (1, 2, 3, 5, 8, 11, 14, 17, 20, 23, 26, 29, 32, 34, 36)]
    + [("rename,renameat,renameat2", n) for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)]
    + [("fsync,fdatasync", n) for n in (1, 2, 3, 4, 6, 8, 12, 16, 20)]
)


def test_sigkill_at_every_kind_of_file_operation(world: World, tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    world.pin(world.b)
    snapshot(world, saved)
    assert world.run("apply") == 0
    reference = content(world)
    assert any("sig-data" in k for k in reference) and any("sig-tools" in k for k in reference)

    crashed = 0
    for syscalls, n in CRASH_POINTS:
        restore(world, saved)
        code = killed_apply(world, syscalls, n)
        if code in (-9, 137):
            crashed += 1
        else:
            assert code == 0, (syscalls, n, code)
        report = verify_tree(world.production)
        assert report.ok, (syscalls, n, [str(p) for p in report.problems])
        assert world.run("apply") == 0, (syscalls, n)
        assert content(world) == reference, (syscalls, n)
        assert not list(world.production.rglob("*.~tmp~")), (syscalls, n)
        lists = world.production / CATEGORY
        entries, sums = parse_timelist((lists / TIMELIST_SIG).read_text())
        assert {e.path for e in entries if e.kind == "f"} == {
            k.removeprefix(f"{CATEGORY}/") for k in reference
        }, (syscalls, n)
        assert sums, "repomd.xml checksums are listed"
    print(f"crash points: {crashed} of {len(CRASH_POINTS)} runs killed mid-publish")
    assert crashed >= 30, f"only {crashed} runs were actually killed"


def test_sigkill_between_deleting_due_files_and_rewriting_the_lists(tmp_path: Path) -> None:
    """Due files were deleted and their pending deletions cleared before the file lists
    were rewritten: a kill in between left the lists naming deleted files until the next
    production publish. The lists are rewritten on the next pass now."""
    for world in build_world(tmp_path, grace="2s"):
        world.pin(world.b)
        assert world.run("apply") == 0
        lists = world.production / CATEGORY
        listed_before = {e.path for e in parse_timelist((lists / TIMELIST_SIG).read_text())[0]}
        time.sleep(2.5)  # the superseded files of world.a are due
        env = {**os.environ, "RECONCILER_CACHE_DIR": ""}  # no cache writes (renames) either
        cmd = [
            "strace", "-qq", "-o", "/dev/null", "-e", "trace=rename,renameat,renameat2",
            "-e", "inject=rename,renameat,renameat2:signal=SIGKILL:when=1",
            sys.executable, "-m", "reconciler.cli", "apply", "--config", str(world.config),
            "--desired-state", str(world.ds.path),
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, timeout=120, check=False, env=env)
        assert done.returncode in (-9, 137), done.stderr
        on_disk = {
            str(p.relative_to(lists)) for p in lists.rglob("*") if p.is_file() or p.is_symlink()
        }
        stale = {e.path for e in parse_timelist((lists / TIMELIST_SIG).read_text())[0]}
        assert stale == listed_before and stale - on_disk, "killed after deleting, before listing"
        assert world.run("apply") == 0
        entries = parse_timelist((lists / TIMELIST_SIG).read_text())[0]
        listed = {e.path for e in entries if e.kind == "f"}
        files = {
            str(p.relative_to(lists))
            for p in lists.rglob("*")
            if p.is_file() and p.name not in LISTS
        }
        assert listed == files, (listed - files, files - listed)
