"""Day one: the reconciler over staging and production trees the old scripts made.

The trees are made with the old tools themselves (``dnf reposync`` of the sample build
system, ``rsync -rlptDSH --chown``, ``find . > fullfilelist``; tests/oldscripts.py).
Then: ``plan`` says what will happen before anything does, ``adopt`` records a
baseline without changing a byte, ``apply`` publishes over them, and nothing the
reconciler did not publish is deleted or changed (with or without ``prune``, which
retires only old packages and metadata); ``dnf`` installs from the result with gpgcheck.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler import testing as su
from reconciler.state import StateDB
from reconciler.vocabulary import Stage

from .clients import dnf_install
from .conftest import REPOS, DesiredState, Upstream, make_desired_state, write_host_config
from .oldscripts import (
    CATEGORY,
    OLD_GID,
    OLD_KEY,
    OLD_UID,
    Seen,
    file_lists,
    old_compose,
    rsync_into,
    snapshot,
)

pytestmark = pytest.mark.skipif(
    shutil.which("dnf") is None or shutil.which("rsync") is None, reason="needs dnf and rsync"
)

SIG = f"{CATEGORY}/9/core"


@dataclass
class OldWorld:
    root: Path
    config: Path
    ds: DesiredState
    cli: Any

    def pin(self, production: str | None) -> None:
        """Write SIG core: keep every version (as the toolkit did), altarch-like images."""
        self.ds.write(compose={"hashed": True, "keep_versions": 0}, production=production)
        doc = yaml.safe_load((self.ds.path / "sigs" / "core.yaml").read_text())
        doc["publish"] = {"unmanaged": ["images"]}
        (self.ds.path / "sigs" / "core.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))

    def run(self, *args: str | Path) -> Any:
        return self.cli(*args, "--config", self.config, "--desired-state", self.ds.path)

    @property
    def production(self) -> Path:
        return self.root / "production"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    def unmanaged_view(self, stage_root: Path) -> dict[str, Seen]:
        """Every file under the SIG's tree (the lists in the category are the reconciler's)."""
        return snapshot(stage_root / SIG)


def _defaults(prune: bool, grace: str) -> str:
    return yaml.safe_dump(
        {
            "upstream": {"base_url": "https://build.invalid/v1/projects"},
            "publish": {"category": CATEGORY, "delete_grace": grace, "prune": prune},
            "promotion": {"require_staged": False},
            "releases": {"9": {"arches": ["x86_64", "aarch64"]}},
        }
    )


def old_world(tmp_path: Path, upstream: Upstream, cli: Any, prune: bool) -> OldWorld:
    root = tmp_path / "host"
    root.mkdir()
    sig_dir = old_compose(upstream.server.base_url, REPOS, tmp_path / "old")
    for stage in ("staging", "production"):
        target = rsync_into(sig_dir, root / stage)
        stray = target / "x86_64" / "core-common" / "NOTES-from-ops.txt"
        stray.write_text("put here by a person\n")
        os.chown(stray, OLD_UID, OLD_GID)
        # a SIG and a release no desired state names (yet): the mirrors must keep them
        for other in ("9/storage/x86_64/storage-common", "8/core/x86_64/core-common"):
            repo = root / stage / CATEGORY / other
            repo.mkdir(parents=True)
            (repo / "repomd-of-another-sig.xml").write_text("not ours\n")
        file_lists(root / stage / CATEGORY)
    ds = make_desired_state(tmp_path / "desired-state", _defaults(prune, "0s"), write=False)
    # no drift check at all: what the first lists name must not wait for one
    config = write_host_config(
        root, upstream.server.base_url, drift_interval=0, drift_deep_interval=0
    )
    world = OldWorld(root, config, ds, cli)
    world.pin(None)
    return world


@pytest.fixture
def world(tmp_path: Path, upstream: Upstream, cli: Any) -> Iterator[OldWorld]:
    yield old_world(tmp_path, upstream, cli, prune=False)


def _compose(world: OldWorld) -> str:
    result = world.run("compose", "core", "9")
    assert result.code == 0, result.err
    cid = re.search(r"SIG-core-9-\d{8}\.\d+", result.out)
    assert cid, result.out
    return cid[0]


def test_a_fresh_host_starts_on_trees_it_did_not_make(world: OldWorld) -> None:
    """No state database, trees made by the old scripts: not "reconciled before"."""
    result = world.run("plan")
    assert result.code == 2, result.err
    assert "compose core 9" in result.out


def test_plan_says_per_target_what_it_will_do_before_anything_happens(world: OldWorld) -> None:
    cid = _compose(world)
    world.pin(cid)
    before = {s: world.unmanaged_view(world.root / s) for s in ("staging", "production")}
    result = world.run("plan")
    assert result.code == 2, result.err
    text = result.out
    for stage in ("staging", "production"):
        assert f"{cid} to {stage}" in text
    files = re.findall(
        r"files: (\d+) to add, (\d+) to replace, (\d+) to take over, (\d+) to pend for "
        r"deletion; (\d+) unmanaged kept \(\+(\d+) covered by publish.unmanaged\)",
        text,
    )
    assert len(files) == 2, text
    for add, replace, take_over, pend, kept, ignored in files:
        # the hashed layout's packages are new names; the old repomd.xml are taken over;
        # nothing the reconciler did not publish is pended without prune
        assert int(add) > 0 and int(replace) == 0 and int(take_over) > 0 and int(pend) == 0
        assert int(kept) > 0 and int(ignored) == 1  # the image, covered by publish.unmanaged
    assert "keep unmanaged aarch64/core-common-debug/" in text  # examples: the first, sorted
    plan = json.loads(world.run("plan", "--format", "json").out)
    assert {p["stage"] for p in plan["previews"]} == {"staging", "production"}
    after = {s: world.unmanaged_view(world.root / s) for s in ("staging", "production")}
    assert after == before, "planning changed nothing"


def test_adopt_records_a_baseline_without_changing_a_byte(world: OldWorld) -> None:
    cid = _compose(world)
    world.pin(cid)
    trees = ("staging", "production", "compose")
    before = {t: snapshot(world.root / t) for t in trees}
    dry = world.run("adopt", "--dry-run")
    assert dry.code == 0, dry.err
    assert "would adopt core 9 production" in dry.out
    assert not list((world.root / "state").glob("state.db")) or _inventory(world) == 0
    result = world.run("adopt")
    assert result.code == 0, result.err
    assert "adopted core 9 staging" in result.out and "adopted core 9 production" in result.out
    assert "1 covered by publish.unmanaged" in result.out
    assert "production outside the desired targets: 2 unmanaged file(s) kept" in result.out
    assert {t: snapshot(world.root / t) for t in trees} == before, "adopt changed a file"
    with StateDB.open(world.root / "state") as state:
        unmanaged = state.unmanaged.entries(Stage.PRODUCTION, f"{SIG}/")
        assert f"{SIG}/x86_64/core-common/NOTES-from-ops.txt" in unmanaged
        assert unmanaged[f"{SIG}/images/Rocky-9-core-rpi.raw.xz"].ignored
        owned = state.inventory.entries(Stage.PRODUCTION, f"{SIG}/")
        assert not set(owned) & set(unmanaged)
    again = world.run("adopt")  # what it owns now is the reconciler's: left as it is
    assert "core 9 production: already managed" in again.out, again.out


def _inventory(world: OldWorld) -> int:
    with StateDB.open(world.root / "state") as state:
        return len(state.inventory.entries(Stage.PRODUCTION))


def _kept_unchanged(before: dict[str, Seen], after: dict[str, Seen], taken: set[str]) -> None:
    """Every file the reconciler did not take over is there, exactly as it was."""
    for rel, seen in before.items():
        if rel in taken:
            continue
        assert after.get(rel) == seen, f"{rel} changed: {seen} -> {after.get(rel)}"


def _publish_over_old_trees(world: OldWorld) -> tuple[str, dict[str, dict[str, Seen]]]:
    cid = _compose(world)
    world.pin(cid)
    before = {s: world.unmanaged_view(world.root / s) for s in ("staging", "production")}
    result = world.run("apply")
    assert result.code == 0, result.out + result.err
    return cid, before


def _taken(world: OldWorld, cid: str) -> set[str]:
    """The compose's files (relative to the SIG dir): the paths a publish may take over."""
    sig_dir = world.root / "compose" / "9" / cid / "compose" / "9" / "core"
    return {str(p.relative_to(sig_dir)) for p in sig_dir.rglob("*") if p.is_file()}


def _old_repo_files(view: dict[str, Seen]) -> set[str]:
    """Old packages and metadata: what prune may retire (not keys, images, strays)."""
    return {r for r in view if "/Packages/" in f"/{r}" or "/repodata/" in f"/{r}"}


def test_apply_over_old_trees_keeps_everything_it_did_not_publish(
    world: OldWorld, tmp_path: Path
) -> None:
    cid, before = _publish_over_old_trees(world)
    taken = _taken(world, cid)
    assert world.run("apply").code == 0  # grace 0s: the delete pass has run too
    for stage in ("staging", "production"):
        after = world.unmanaged_view(world.root / stage)
        _kept_unchanged(before[stage], after, taken)
        stray = after["x86_64/core-common/NOTES-from-ops.txt"]
        assert (stray.uid, stray.gid) == (OLD_UID, OLD_GID)
    lists = (world.production / CATEGORY / "fullfilelist").read_text()
    # a quick-fedora-mirror client deletes what the lists do not name
    assert "9/core/images/Rocky-9-core-rpi.raw.xz" in lists
    assert "9/core/x86_64/core-common/NOTES-from-ops.txt" in lists
    assert "9/storage/x86_64/storage-common/repomd-of-another-sig.xml" in lists
    assert "8/core/x86_64/core-common/repomd-of-another-sig.xml" in lists
    timelist = (world.production / CATEGORY / "fullfiletimelist-sig").read_text()
    assert "9/storage/x86_64/storage-common/repomd-of-another-sig.xml" in timelist
    for other in ("9/storage", "8/core"):  # and the reconciler left them alone
        assert (world.production / CATEGORY / other).is_dir()
    status = json.loads(world.cli("status", "--format", "json", "--config", world.config).out)
    prod = next(r for r in status if r["stage"] == "production")
    assert prod["actual"] == cid and prod["state"] == "Synced"
    # what the old scripts left is reported (the image, covered by publish.unmanaged, not)
    assert prod["unmanaged"]["files"] > 0
    assert not any("images/" in e for e in prod["unmanaged"]["examples"])
    repo = world.production / SIG / "x86_64" / "core-common"
    done = dnf_install(tmp_path / "dnf", repo.as_uri(), su.SAMPLE_KEY, "sig-hello")
    assert done.returncode == 0, done.stderr
    assert world.cli("verify", world.production / CATEGORY).code == 0


def test_prune_retires_only_old_packages_and_metadata(
    tmp_path: Path, upstream: Upstream, cli: Any
) -> None:
    world = old_world(tmp_path, upstream, cli, prune=True)
    cid, before = _publish_over_old_trees(world)
    taken = _taken(world, cid)
    assert world.run("apply").code == 0  # grace 0s: what prune pended is deleted now
    for stage in ("staging", "production"):
        after = world.unmanaged_view(world.root / stage)
        old = _old_repo_files(before[stage]) - taken
        assert old, "the old tree had packages and metadata the compose does not name"
        assert not old & after.keys(), "prune retired the old packages and metadata"
        kept = {r: s for r, s in before[stage].items() if r not in old}
        _kept_unchanged(kept, after, taken)
        assert f"x86_64/core-common/{OLD_KEY}" in after
        assert "images/Rocky-9-core-rpi.raw.xz" in after
        assert "x86_64/core-common/NOTES-from-ops.txt" in after
    repo = world.production / SIG / "x86_64" / "core-common"
    done = dnf_install(tmp_path / "dnf", repo.as_uri(), su.SAMPLE_KEY, "sig-hello")
    assert done.returncode == 0, done.stderr


def test_a_lost_database_is_still_refused_once_this_reconciler_composed(world: OldWorld) -> None:
    _compose(world)
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (world.root / "state" / name).unlink(missing_ok=True)
    result = world.run("plan")
    assert result.code == 1 and "reconciled before" in result.err
    assert "reconciler-files.tsv" in result.err
