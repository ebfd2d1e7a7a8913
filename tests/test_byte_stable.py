"""Byte-stable metadata (issue 14, item 6): a compose after one package changed in one repo
changes, in production after promotion, that package, that repo's metadata and the file
lists; nothing else (inode, size, mtime and content of every file).

The real sample build system over HTTP, the real command line (``apply``: compose,
stage, promote), real createrepo_c metadata; the trees are compared file by file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from reconciler import testing as su
from reconciler.cli import main
from reconciler.layout import ComposeTree
from reconciler.manifest import read_changes
from reconciler.state import StateDB
from reconciler.vocabulary import Stage

from .conftest import PROJECT_ID, REPOS, DesiredState, make_desired_state, write_host_config

CATEGORY = "mirror/pub/sig"
#: The one repo that changes upstream, and the package that changes in it.
CHANGED_REPO = "x86_64/core-common"
NEW_PACKAGE = "sig-hello-1.1-1.x86_64.rpm"

#: relpath -> (inode, size, mtime_ns, sha256)
Snapshot = dict[str, tuple[int, int, int, str]]


@dataclass
class World:
    root: Path
    config: Path
    ds: DesiredState
    upstream_root: Path

    def apply(self) -> None:
        argv = ["apply", "--config", self.config, "--desired-state", self.ds.path]
        assert main([str(a) for a in argv]) == 0

    def staged(self) -> str:
        with StateDB.open(self.root / "state") as state:
            target = state.targets.get("core", "9", Stage.STAGING)
            assert target is not None and target.compose_id
            return target.compose_id

    @property
    def tree(self) -> ComposeTree:
        return ComposeTree(self.root / "compose", "core", "9")

    @property
    def production(self) -> Path:
        return self.root / "production" / CATEGORY


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """Compose A staged and promoted to production (sig-hello 1.0 everywhere)."""
    root = tmp_path / "world"
    root.mkdir()
    up_root = root / "upstream"
    su.build_upstream(up_root, PROJECT_ID, REPOS, extras_for=["core-common"])
    defaults = {
        "upstream": {"base_url": "https://build.invalid/v1/projects"},
        "publish": {"category": CATEGORY, "delete_grace": "24h"},
        "compose": {"keep_composes": 5},
        "promotion": {"require_staged": True, "min_soak": "0h"},
        "releases": {"9": {"arches": ["x86_64", "aarch64"]}},
    }
    ds = make_desired_state(root / "desired-state", yaml.safe_dump(defaults), write=False)
    with su.UpstreamServer(up_root) as server:
        world = World(root, write_host_config(root, server.base_url), ds, up_root)
        ds.write(production=None)
        world.apply()
        ds.write(production=world.staged())
        world.apply()
        yield world


def snapshot(top: Path) -> Snapshot:
    """Every regular file under ``top``: inode, size, mtime and content digest."""
    out: Snapshot = {}
    for dirpath, _dirs, files in os.walk(top):
        for name in files:
            path = Path(dirpath, name)
            st = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[str(path.relative_to(top))] = (st.st_ino, st.st_size, st.st_mtime_ns, digest)
    return out


def test_one_changed_package_changes_only_its_repo_in_production(world: World) -> None:
    first = world.staged()
    before = snapshot(world.production)
    assert len(list(world.production.glob("9/core/**/repodata/repomd.xml"))) == 8

    su.add_packages(
        su.upstream_repo_dir(world.upstream_root, PROJECT_ID, "core-common", "x86_64"),
        [su.sample_rpm(NEW_PACKAGE)],
    )
    world.apply()  # composes B (the upstream changed) and stages it
    second = world.staged()
    assert second != first
    world.ds.write(production=second)
    world.apply()  # promotes B
    after = snapshot(world.production)

    changed_repo = f"9/core/{CHANGED_REPO}/"
    repomd = f"{changed_repo}repodata/repomd.xml"
    lists = {rel for rel in after if "/" not in rel}  # the files directly under the category
    added = sorted(set(after) - set(before) - lists)  # a new list (-old) is a list change
    gone = sorted(set(before) - set(after))
    differ = {rel for rel in set(before) & set(after) if before[rel] != after[rel]}
    assert not gone, f"superseded files stay until the grace: {gone}"
    new_metadata = [rel for rel in added if rel.startswith(f"{changed_repo}repodata/")]
    assert new_metadata, "the changed repo has new metadata files"
    assert added == sorted([*new_metadata, f"{changed_repo}Packages/s/{NEW_PACKAGE}"])
    assert differ - lists == {repomd}, "nothing else changed: inode, size, mtime, content"
    assert differ & lists, "the file lists say what changed"

    # in the compose: the unchanged repos' repomd.xml are the first compose's inodes, and
    # the second compose's changes name nothing outside the changed repo
    tree = world.tree
    for repomd in sorted(tree.sig_dir(first).glob("**/repodata/repomd.xml")):
        rel = repomd.relative_to(tree.sig_dir(first))
        now = tree.sig_dir(second) / rel
        same = os.stat(repomd).st_ino == os.stat(now).st_ino
        assert same == (not str(rel).startswith(f"{CHANGED_REPO}/")), rel
    changes = read_changes(tree.changes(second), tree.sig_dir(second))
    assert changes is not None and changes.base == first
    outside = [f.rel for f in changes.added if not f.rel.startswith(f"{CHANGED_REPO}/")]
    assert not outside, outside
    assert all(rel.startswith(f"{CHANGED_REPO}/") for rel in changes.removed)
