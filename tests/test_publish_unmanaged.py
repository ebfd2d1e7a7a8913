"""Publishing over a tree the old scripts made (issue 14): the reconciler owns exactly
what it published. Everything else under a SIG's tree is unmanaged: kept as it is
(inode, size, mtime, content, owner), reported with counts and examples (status,
``verify --drift``, metrics), never drift; only ``prune`` retires the old packages and
metadata of the repos it publishes. ``publish.owner``/``group`` go to what it places.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.retiring import delete_due
from reconciler.running import Loop
from reconciler.specfile import load_host_config
from reconciler.state import StateDB
from reconciler.verifying import verify_tree
from reconciler.vocabulary import InventoryKind, Stage

from .publish_support import (
    IMAGE,
    OLD_KEY,
    OTHER_ID,
    SIG_REL,
    STRAYS,
    World,
    build_adopted_world,
    build_world,
    snapshot,
)

REPOMD = "repodata/repomd.xml"
PACKAGE = "x86_64/core-common/Packages/s/sig-hello-1.1-1.x86_64.rpm"  # B's, in the old tree


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from build_adopted_world(tmp_path)


def old_only(world: World) -> set[str]:
    """The files of the old tree that compose B does not have: A's packages and metadata."""
    a = {str(p.relative_to(world.compose_sig_dir(world.a))) for p in _files(world, world.a)}
    b = {str(p.relative_to(world.compose_sig_dir(world.b))) for p in _files(world, world.b)}
    return a - b


def _files(world: World, cid: str) -> list[Path]:
    return [p for p in world.compose_sig_dir(cid).rglob("*") if p.is_file()]


def changed(before: dict[str, object], after: dict[str, object]) -> set[str]:
    return {rel for rel in before.keys() & after.keys() if before[rel] != after[rel]}


def run_out(world: World, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = world.run(*args)
    return code, capsys.readouterr().out


def production_status(world: World, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    from reconciler.cli import main

    capsys.readouterr()
    assert main(["status", "--format", "json", "--config", str(world.config)]) == 0
    rows = json.loads(capsys.readouterr().out)
    return next(r for r in rows if r["stage"] == "production")  # type: ignore[no-any-return]


def test_publishing_over_an_old_tree_keeps_everything_it_did_not_publish(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    old = world.production / SIG_REL
    before = snapshot(old)
    stale = old_only(world)
    assert any("/Packages/" in r for r in stale) and any("/repodata/" in r for r in stale)
    unmanaged = stale | {OLD_KEY, *STRAYS}
    world.pin(world.b)
    assert world.run("apply") == 0
    after = snapshot(old)
    assert set(after) == set(before), "nothing deleted, nothing left beside"
    repomds = {rel for rel in before if rel.endswith(REPOMD)}
    assert changed(before, after) == repomds, "only A's repomd.xml files were replaced"
    for rel in repomds:
        assert (old / rel).read_bytes() == (world.compose_sig_dir(world.b) / rel).read_bytes()
    # B's files were in the tree with the same bytes: kept as they were (no inode, mtime
    # or owner change: mirrors fetch nothing again), and the inventory's from now on
    assert before[PACKAGE][3] == OTHER_ID
    with StateDB.open(world.root / "state") as state:
        inventory = state.inventory.entries(Stage.PRODUCTION, f"{SIG_REL}/")
        rows = state.unmanaged.entries(Stage.PRODUCTION, f"{SIG_REL}/")
    assert inventory[f"{SIG_REL}/{PACKAGE}"].ino == before[PACKAGE][0]
    assert {k for k, e in rows.items() if e.kind is InventoryKind.FILE and not e.ignored} == {
        f"{SIG_REL}/{rel}" for rel in unmanaged
    }, "known from the walk right after the first publish"
    assert rows[f"{SIG_REL}/{IMAGE}"].ignored
    assert verify_tree(world.production).ok

    # a drift check: no drift, the unmanaged files reported apart (the image not at all)
    code, out = run_out(world, capsys, "verify", "--drift")
    assert code == 0, out
    assert "core 9 production: no drift" in out
    assert f"unmanaged (kept, not drift): {len(unmanaged)} file(s)" in out
    assert "images" not in out and "unexpected" not in out
    row = production_status(world, capsys)
    assert row["unmanaged"]["files"] == len(unmanaged)  # type: ignore[index]
    assert row["unmanaged"]["bytes"] == sum(before[r][1] for r in unmanaged)  # type: ignore[index]
    assert not any("images" in e for e in row["unmanaged"]["examples"])  # type: ignore[index]

    # a repair (a published package deleted by hand) restores it and touches nothing else
    (old / PACKAGE).unlink()
    assert world.run("verify", "--drift") == 1
    assert world.run("apply") == 0
    assert (old / PACKAGE).is_file()
    assert changed(before, snapshot(old)) == repomds | {PACKAGE}
    # and the delete pass (grace 0, and again long after) deletes nothing unmanaged
    with StateDB.open(world.root / "state") as state:
        pending = {p.relpath for p in state.pending.all(Stage.PRODUCTION)}
        delete_due(state, Stage.PRODUCTION, world.production, datetime.now(UTC) + timedelta(9))
    assert not pending & {f"{SIG_REL}/{rel}" for rel in unmanaged | {IMAGE}}
    after = snapshot(old)
    assert set(after) == set(before)
    assert changed(before, after) == repomds | {PACKAGE}
    from reconciler.cli import main

    capsys.readouterr()
    assert main(["status", "--config", str(world.config)]) == 0
    out = capsys.readouterr().out
    assert f"unmanaged in core 9 production (kept, not drift): {len(unmanaged)} file(s)" in out


def test_prune_retires_only_the_old_packages_and_metadata(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for world in build_adopted_world(tmp_path, prune=True):
        old = world.production / SIG_REL
        before = snapshot(old)
        stale = old_only(world)
        assert all("/Packages/" in r or "/repodata/" in r for r in stale), stale
        world.pin(world.b)
        assert world.run("apply") == 0  # grace 0: retired at the end of the same apply
        after = snapshot(old)
        assert set(before) - set(after) == stale, "A's old packages and metadata, only"
        assert set(after) <= set(before)
        repomds = {rel for rel in before if rel.endswith(REPOMD)}
        assert changed(before, after) == repomds
        for rel in (IMAGE, OLD_KEY, *STRAYS):
            assert after[rel] == before[rel], rel
        assert verify_tree(world.production).ok
        code, out = run_out(world, capsys, "verify", "--drift")
        assert code == 0, out
        assert "unmanaged (kept, not drift): 3 file(s)" in out
        for rel in (OLD_KEY, *STRAYS):
            assert f"    {SIG_REL}/{rel}\n" in out


def test_the_metrics_count_each_targets_unmanaged_files(world: World) -> None:
    world.pin(world.b)
    loop = Loop(load_host_config(world.config), world.ds.path)
    assert loop.one_pass()
    metrics = loop.metrics.render().decode()
    unmanaged = len(old_only(world)) + 1 + len(STRAYS)
    assert (
        f'reconciler_unmanaged_files{{release="9",sig="core",stage="production"}} {unmanaged}.0'
        in metrics
    )
    assert 'reconciler_unmanaged_files{release="9",sig="core",stage="staging"} 0.0' in metrics


def test_publish_owner_and_group_go_to_what_a_publish_places(tmp_path: Path) -> None:
    for world in build_adopted_world(tmp_path, owner=10004, group=10005):
        staged = world.staging / SIG_REL
        for path in (staged, *staged.rglob("*")):  # published by the reconciler alone
            st = path.lstat()
            assert (st.st_uid, st.st_gid) == (10004, 10005), path
        old = world.production / SIG_REL
        before = snapshot(old)
        world.pin(world.b)
        assert world.run("apply") == 0
        after = snapshot(old)
        for rel, stat in after.items():
            if rel.endswith(REPOMD):  # placed: a new inode, given the owner
                assert stat[3:5] == (10004, 10005), rel
                for parent in Path(rel).parents:  # the directories it was published in
                    st = (old / parent).lstat()
                    assert (st.st_uid, st.st_gid) == (10004, 10005), parent
            else:  # kept as it was, or not the reconciler's at all
                assert stat == before[rel], rel


CHOWN_AS_NOBODY = """
import os, sys
from pathlib import Path
from reconciler.errors import PublishError
from reconciler.publishing import Owner
os.setgid(65534)
os.setuid(65534)
try:
    Owner(10004, 10005).give(Path(sys.argv[1]))
except PublishError as exc:
    print(exc)
"""


def test_a_chown_that_fails_is_a_publish_error_naming_the_path_and_the_ids() -> None:
    # a user who may not chown (root may): in a folder that user can reach
    with tempfile.TemporaryDirectory() as top:
        Path(top).chmod(0o755)
        path = Path(top) / "file"
        path.write_text("x")
        proc = subprocess.run(
            [sys.executable, "-c", CHOWN_AS_NOBODY, str(path)],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).parent.parent,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"{path}: cannot give it owner 10004 and group 10005")
        assert "Operation not permitted" in proc.stdout
        assert (path.stat().st_uid, path.stat().st_gid) == (0, 0)


def test_unexpected_drift_an_older_version_recorded_is_neither_reported_nor_repaired(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database written before unmanaged paths were told apart holds UNEXPECTED findings:
    they still read, but nothing plans a repair for them, and the file stays."""
    from reconciler.facts import DriftFinding, TargetKey
    from reconciler.vocabulary import DriftKind

    for world in build_world(tmp_path):
        stray = world.production / SIG_REL / "x86_64/core-common/Packages/s/stray.rpm"
        stray.write_bytes(b"a human's")
        key = TargetKey(Stage.PRODUCTION, "core", "9")
        with StateDB.open(world.root / "state") as state:
            finding = DriftFinding(str(stray.relative_to(world.production)), DriftKind.UNEXPECTED)
            state.sources.set_drift(key, [finding])
            assert state.sources.drift(key) == (finding,)
        code, out = run_out(world, capsys, "plan")
        assert code == 0, out
        assert world.run("apply") == 0
        assert stray.read_bytes() == b"a human's"
        with StateDB.open(world.root / "state") as state:
            assert not any(p.relpath.endswith("stray.rpm") for p in state.pending.all())
        assert production_status(world, capsys)["state"] == "Synced"


def test_prune_set_later_retires_the_old_files_at_the_next_publish(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """Prune turned on after the adoption: the next publish (of a compose made on top of
    the one published, so its changes could be read) compares every file instead, and
    retires A's old packages and metadata then."""
    import yaml

    old = world.production / SIG_REL
    world.pin(world.b)
    assert world.run("apply") == 0
    stale = old_only(world)
    assert all((old / rel).is_file() for rel in stale)
    defaults = world.ds.path / "defaults.yaml"
    doc = yaml.safe_load(defaults.read_text())
    doc["publish"]["prune"] = True
    defaults.write_text(yaml.safe_dump(doc))
    compose = {**world.ds.release["compose"], "refresh": 1}
    world.ds.write(production=world.b, compose=compose)
    assert world.run("apply") == 0
    c = world.staged()
    assert c != world.b
    world.ds.write(production=c, compose=compose)
    capsys.readouterr()
    assert world.run("apply", "-v") == 0
    assert "against the whole inventory" in capsys.readouterr().err
    assert not [rel for rel in stale if (old / rel).exists()]
    for rel in (IMAGE, OLD_KEY, *STRAYS):
        assert (old / rel).is_file(), rel
    assert verify_tree(world.production).ok
