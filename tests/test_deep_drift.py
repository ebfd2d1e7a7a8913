"""Content drift: one in-place write into a published package (issue 13, item 2).

A package is one inode hardlinked into the composes, staging and production. Bytes
written into it in place (``dd conv=notrunc``, the mtime put back) change every tree
at once, and a stat sees nothing. The deep check hashes what is published and
compares it with the compose's manifest; the repair never re-links the damaged
inode: it takes the bytes from a copy whose checksum is right (another tree, else
the upstream), writes them as a new inode and puts that into every tree that shared
the damaged one; with no good copy anywhere the target is Failed, naming the path.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler import testing as su
from reconciler.cli import main
from reconciler.filelists import render_all
from reconciler.publishing import entry_for
from reconciler.state import StateDB
from reconciler.verifying import verify_tree
from reconciler.vocabulary import Stage

from .clients import dnf_install
from .conftest import PROJECT_ID, write_host_config
from .publish_support import CATEGORY, SIG_REL, World, build_world

REL = "x86_64/core-common/Packages/s/sig-data-1.0-1.noarch.rpm"
#: The same package (one inode) at every place it is in a compose.
TWINS = (
    REL,
    "aarch64/core-common/Packages/s/sig-data-1.0-1.noarch.rpm",
    "x86_64/core-infra/Packages/s/sig-data-1.0-1.noarch.rpm",
)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """Staging and production both hold compose B: its packages are one inode in all three."""
    for w in build_world(tmp_path):
        w.pin(w.b)
        assert w.run("apply") == 0
        yield w


def places(world: World, rels: tuple[str, ...] = TWINS) -> list[Path]:
    """Every path of the package in compose B, staging and production."""
    roots = (world.compose_sig_dir(world.b), world.staging / SIG_REL, world.production / SIG_REL)
    return [root / rel for root in roots for rel in rels]


def expected_sha256(rel: str = REL) -> str:
    """What the upstream metadata says (the sample RPM's bytes)."""
    return hashlib.sha256(su.sample_rpm(Path(rel).name).read_bytes()).hexdigest()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def corrupt_in_place(world: World, path: Path, restore_mtime: bool = True) -> int:
    """What ``dd if=... of=path conv=notrunc`` does (then ``touch -r`` to hide it).

    A link to the damaged inode is kept beside the trees (``world.root/evidence``): its
    inode number cannot be reused, and :func:`assert_repaired` checks that nothing
    wrote into it (a repair never does).
    """
    st = path.stat()
    with path.open("r+b") as fh:  # root writes through 0444, as dd run by root would
        fh.seek(st.st_size // 2)
        original = fh.read(64)
        fh.seek(st.st_size // 2)
        fh.write(bytes(b ^ 0xFF for b in original))
    if restore_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size
    os.link(path, world.root / "evidence")
    return st.st_ino


def deep_due(world: World, interval: int = 1) -> None:
    """The host config with a deep check every ``interval`` s, and that much time passed."""
    write_host_config(
        world.root, world.server.base_url, drift_interval=0, drift_deep_interval=interval
    )
    time.sleep(interval + 0.1)


def status(world: World, capsys: pytest.CaptureFixture[str], stage: str) -> dict[str, str]:
    capsys.readouterr()
    assert main(["status", "--format", "json", "--config", str(world.config)]) == 0
    rows = json.loads(capsys.readouterr().out)
    return next(r for r in rows if r["stage"] == stage)  # type: ignore[no-any-return]


def assert_repaired(world: World, damaged_ino: int) -> None:
    want = expected_sha256()
    evidence = world.root / "evidence"
    assert evidence.stat().st_ino == damaged_ino and sha256(evidence) != want
    assert evidence.stat().st_nlink == 1, "no tree links the damaged inode any more"
    for path in places(world):
        assert sha256(path) == want, path
        assert path.stat().st_ino != damaged_ino, f"{path}: the damaged inode is still linked"
        assert path.stat().st_mode & 0o777 == 0o444
    assert verify_tree(world.production).ok
    assert verify_tree(world.staging / SIG_REL).ok
    assert world.run("verify", world.production) == 0
    assert world.run("verify", world.compose_sig_dir(world.b)) == 0
    assert world.run("verify", "--drift", "--deep") == 0
    top = world.production / CATEGORY  # the mirrors' lists follow the new inodes' times
    with StateDB.open(world.root / "state") as state:
        rows = state.inventory.listing(Stage.PRODUCTION, f"{CATEGORY}/")
        # and what the reconciler did not publish (the stray file): mirrors keep it
        rows += state.unmanaged.listing(Stage.PRODUCTION, f"{CATEGORY}/")
    listed = render_all(sorted(rows))
    assert {name: (top / name).read_text() for name in listed} == listed


def test_only_the_deep_check_sees_bytes_changed_in_place(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    target = world.production / SIG_REL / REL
    corrupt_in_place(world, target)
    assert all(sha256(p) != expected_sha256() for p in places(world)), "one inode"
    capsys.readouterr()
    assert world.run("verify", "--drift") == 0, "size, mtime and inode are unchanged"
    assert world.run("verify", "--drift", "--deep") == 1
    out = capsys.readouterr().out
    for rel in TWINS:  # every place the damaged inode is published (in both targets)
        assert f"corrupt: {SIG_REL}/{rel}" in out
    assert "core 9 production: 3 path(s) drifted" in out
    assert "core 9 staging: 3 path(s) drifted" in out
    assert world.run("verify", "--drift") == 1, "a stat check keeps what the deep one found"


def test_an_apply_with_the_deep_check_due_repairs_from_the_upstream(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every local copy is the damaged inode: the bytes come from the upstream again. A
    file nobody published, beside the damaged one, is no concern of the repair."""
    damaged = corrupt_in_place(world, world.production / SIG_REL / REL)
    stray = (world.production / SIG_REL / REL).with_name("stray-0.1-1.noarch.rpm")
    stray.write_bytes(b"not published by the reconciler")
    os.chown(stray, 4321, 4321)
    kept = stray.stat()
    deep_due(world)
    with StateDB.open(world.root / "state") as state:
        checked = state.sources.drift_deep_checked_at()
    assert world.run("plan") == 2, "plan sees it (a repair is due)"
    with StateDB.open(world.root / "state") as state:
        assert state.sources.drift_deep_checked_at() == checked, "plan records nothing"
    world.server.reset_counts()
    assert world.run("apply") == 0
    assert [p for p in world.server.requests if p.endswith(Path(REL).name)], "downloaded"
    assert_repaired(world, damaged)
    for stage in ("production", "staging"):
        assert status(world, capsys, stage)["state"] == "Synced"
    now = stray.stat()
    assert (now.st_ino, now.st_mtime_ns, now.st_uid) == (kept.st_ino, kept.st_mtime_ns, 4321)
    assert stray.read_bytes() == b"not published by the reconciler"
    assert status(world, capsys, "production")["unmanaged"]["files"] == 1  # type: ignore[index]


def test_the_repair_takes_a_good_copy_from_another_tree(world: World) -> None:
    """Production holds its own copy (as on another filesystem), intact; the compose
    and staging share the damaged inode: the repair copies production's bytes."""
    prod = world.production / SIG_REL / REL
    separate = prod.with_name(prod.name + ".copy")
    separate.write_bytes(prod.read_bytes())
    os.utime(separate, ns=(prod.stat().st_atime_ns, prod.stat().st_mtime_ns))
    separate.chmod(0o444)
    separate.replace(prod)
    with StateDB.open(world.root / "state") as state:  # as a publish across devices records it
        key = f"{SIG_REL}/{REL}"
        state.inventory.apply_changes(Stage.PRODUCTION, [entry_for(key, prod.lstat())], [])
    damaged = corrupt_in_place(world, world.staging / SIG_REL / REL)
    assert sha256(prod) == expected_sha256()
    deep_due(world)
    world.server.reset_counts()
    assert world.run("apply") == 0
    assert not [p for p in world.server.requests if p.endswith(".rpm")], "nothing downloaded"
    assert_repaired(world, damaged)


def test_a_stat_drift_repair_never_relinks_the_damaged_inode(world: World) -> None:
    """dd without hiding it: the mtime changed, the stat check sees it. The repair used to
    re-link the same corrupted inode (it is the compose's) and call the target Synced."""
    damaged = corrupt_in_place(world, world.production / SIG_REL / REL, restore_mtime=False)
    assert world.run("verify", "--drift") == 1
    assert world.run("apply") == 0
    assert_repaired(world, damaged)


def test_no_good_copy_anywhere_fails_the_target_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Production holds compose A, staging B: a package only A has (staging still holds
    it, pending deletion: the same inode) is damaged, and the upstream dropped it."""
    rel = "x86_64/core-common/Packages/s/sig-tools-2.0-1.x86_64.rpm"
    for world in build_world(tmp_path):
        prod = world.production / SIG_REL / rel
        damaged = corrupt_in_place(world, prod)
        assert (world.staging / SIG_REL / rel).stat().st_ino == damaged
        for path in world.upstream_root.rglob(prod.name):
            world.server.fail("/" + str(path.relative_to(world.upstream_root)), 404)
        world.server.fail(f"/{PROJECT_ID}/repo/core-common/x86_64/Packages/{prod.name}", 404)
        deep_due(world)
        assert world.run("apply") == 1
        row = status(world, capsys, "production")
        assert row["state"] == "Failed", row
        assert f"{SIG_REL}/{rel}" in row["reason"] or str(prod) in row["reason"], row
        assert prod.stat().st_ino == damaged, "nothing was re-linked"
        capsys.readouterr()
        assert world.run("verify", "--drift", "--deep") == 1
        assert f"corrupt: {SIG_REL}/{rel}" in capsys.readouterr().out


def test_an_upstream_that_no_longer_serves_it_fails_the_repair(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    damaged = corrupt_in_place(world, world.production / SIG_REL / REL)
    for path in world.upstream_root.rglob(Path(REL).name):
        world.server.fail("/" + str(path.relative_to(world.upstream_root)), 404)
    deep_due(world)
    assert world.run("apply") == 1
    rows = [status(world, capsys, stage) for stage in ("staging", "production")]
    assert all(r["state"] == "Failed" for r in rows), rows
    assert any(f"{SIG_REL}/{t}" in r["reason"] for r in rows for t in TWINS), rows
    assert not any(r["state"] == "Synced" for r in rows)
    assert all(p.stat().st_ino == damaged for p in places(world)), "nothing was re-linked"
    world.server.clear_faults()
    assert world.run("apply") == 0  # the upstream serves it again: repaired
    assert_repaired(world, damaged)


def test_a_compose_with_a_v1_manifest_is_checked_against_its_metadata(world: World) -> None:
    """Composes made before manifests carried checksums: the deep check and the repair
    take the checksums from the compose's repository metadata instead."""
    manifest = world.root / "compose" / "9" / world.b / "compose" / "metadata"
    manifest /= "reconciler-files.tsv"
    lines = manifest.read_text().splitlines()
    v1 = ["# reconciler compose manifest v1: relpath<TAB>size<TAB>mtime_ns"]
    v1 += ["\t".join(line.split("\t")[:3]) for line in lines[1:]]
    manifest.write_text("\n".join(v1) + "\n")
    damaged = corrupt_in_place(world, world.production / SIG_REL / REL)
    assert world.run("verify", "--drift") == 0
    assert world.run("verify", "--drift", "--deep") == 1
    assert world.run("apply") == 0
    assert_repaired(world, damaged)


@pytest.mark.skipif(not Path("/usr/bin/dnf").exists(), reason="dnf is not installed")
def test_dnf_installs_the_repaired_package_from_production(world: World, tmp_path: Path) -> None:
    corrupt_in_place(world, world.production / SIG_REL / REL)
    deep_due(world)
    assert world.run("apply") == 0
    with su.UpstreamServer(world.production) as server:
        proc = dnf_install(
            tmp_path / "client",
            f"{server.base_url}/{SIG_REL}/x86_64/core-common",
            world.production / SIG_REL / "x86_64/core-common" / su.SAMPLE_KEY.name,
            "sig-data",
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
