"""A publish's change set is pure: golden cases (tests/golden/changeset/*.yaml) and
properties. Each case gives the compose's files and what the target holds (its
inventory, the composes' changes, or for a repair what is in the tree) and the pending
deletions; it expects the steps in the order a publish makes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.changeset import ChangeSet, FromInventory, change_set
from reconciler.composefiles import SourceFile
from reconciler.state.records import InventoryEntry
from reconciler.vocabulary import ChangeKind, InventoryKind, PublishBasis, PublishPhase

from .changeset_support import PREFIX, SOURCE, entry, make_change_set

GOLDEN = sorted((Path(__file__).parent / "golden" / "changeset").glob("*.yaml"))


@pytest.mark.parametrize("case_file", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden(case_file: Path) -> None:
    case: dict[str, Any] = yaml.safe_load(case_file.read_text())
    result = make_change_set(case)
    expect = case["expect"]
    assert result.describe() == expect["steps"], case["description"]
    assert result.basis is PublishBasis(case.get("basis", "inventory"))
    placed = {c.path.removeprefix(PREFIX): c.file for c in result.places}
    for rel, (size, mtime) in expect.get("placed", {}).items():
        f = placed[rel]
        assert f is not None and (f.size, f.mtime_ns) == (size, mtime), (rel, f)
    inventory = case.get("inventory") or {}
    assert not any(inventory.get(p.removeprefix(PREFIX)) == "dir" for p in result.pend), (
        "directories are never pended"
    )


def test_there_are_golden_cases_for_each_kind_of_step() -> None:
    assert len(GOLDEN) >= 10
    kinds = set()
    for case_file in GOLDEN:
        kinds |= {c.kind for c in make_change_set(yaml.safe_load(case_file.read_text())).steps}
    assert kinds == set(ChangeKind)


@pytest.mark.parametrize(
    ("basis", "how"),
    [
        ("inventory", "against the whole inventory"),
        ("tree", "against the tree"),
        ("changes", "from the changes of 1 compose(s)"),
    ],
)
def test_the_log_says_what_the_compose_was_compared_with(basis: str, how: str) -> None:
    case = {"basis": basis, "changes": [{"base": "SIG-core-9-20261101.0"}]}
    assert make_change_set(case).how == how


# --- properties -----------------------------------------------------------------

RELS = [
    "x86_64/core-common/Packages/a/a.rpm",
    "x86_64/core-common/Packages/b/b.rpm",
    "x86_64/core-common/repodata/p1-primary.xml.gz",
    "x86_64/core-common/repodata/p2-primary.xml.gz",
    "x86_64/core-common/repodata/repomd.xml",
    "x86_64/core-infra/Packages/c/c.rpm",
    "x86_64/core-infra/repodata/repomd.xml",
    "metadata/KEY",
]
DIRS = ["x86_64", "x86_64/core-common", "x86_64/core-infra/repodata"]
stamp = st.tuples(st.integers(1, 3), st.integers(1, 3))
world_st = st.fixed_dictionaries(
    {
        "files": st.dictionaries(st.sampled_from(RELS), stamp),
        "inventory": st.dictionaries(st.sampled_from(RELS + DIRS), stamp),
        "pending": st.lists(st.sampled_from([*RELS, "/mirror/pub/sig/9/other/x.rpm"])),
    }
)


def _inventory(raw: dict[str, tuple[int, int]]) -> dict[str, InventoryEntry]:
    return {PREFIX + rel: entry(rel, "dir" if rel in DIRS else list(v)) for rel, v in raw.items()}


def _files(world: dict[str, Any]) -> tuple[SourceFile, ...]:
    return tuple(SourceFile(rel, SOURCE, s, m) for rel, (s, m) in world["files"].items())


def _decide(world: dict[str, Any]) -> tuple[ChangeSet, dict[str, InventoryEntry], set[str]]:
    files = _files(world)
    inventory = _inventory(world["inventory"])
    pending = {p[1:] if p.startswith("/") else PREFIX + p for p in world["pending"]}
    return change_set(PREFIX, FromInventory(files, inventory), pending), inventory, pending


@settings(max_examples=300, deadline=None)
@given(world=world_st)
def test_publishing_again_after_acting_changes_nothing(world: dict[str, Any]) -> None:
    result, inventory, pending = _decide(world)
    for change in result.places:  # a simulated act: the inventory then holds the file
        assert change.file is not None
        f = change.file
        inventory[change.path] = InventoryEntry(
            change.path, InventoryKind.FILE, f.size, f.mtime_ns, 1, None, f.mtime_ns
        )
    pending = (pending - set(result.cancel)) | set(result.pend)
    again = change_set(PREFIX, FromInventory(_files(world), inventory), pending)
    assert again.places == () and again.cancel == ()
    assert set(again.pend) == set(result.pend), "still superseded, pended again (kept due)"


@settings(max_examples=300, deadline=None)
@given(world=world_st)
def test_the_order_is_mirror_safe_and_nothing_is_both_placed_and_pended(
    world: dict[str, Any],
) -> None:
    result, inventory, pending = _decide(world)
    phases = [c.phase for c in result.steps if c.phase is not None]
    assert phases == sorted(phases), "packages, then metadata, then repomd.xml"
    placed = {c.path for c in result.places}
    wanted = {PREFIX + rel for rel in world["files"]}
    assert not placed & set(result.pend)
    assert not wanted & set(result.pend), "nothing the compose has is deleted"
    assert set(result.cancel) == wanted & pending
    assert all(inventory[p].kind is not InventoryKind.DIR for p in result.pend)
    for change in result.places:
        known = change.path in inventory
        assert change.kind is (ChangeKind.REPLACE if known else ChangeKind.PLACE)
    assert all(c.phase in PublishPhase for c in result.places)


# --- unmanaged paths: kept, unless prune retires them -------------------------------

UNMANAGED = [
    *RELS,
    "x86_64/core-common/Packages/o/old-0.1-1.x86_64.rpm",
    "x86_64/core-common/repodata/old-primary.xml.gz",
    "x86_64/core-common/RPM-GPG-KEY-Rocky-SIG-Core",
    "x86_64/core-gone/Packages/g/gone-1.0-1.x86_64.rpm",
    "x86_64/core-common/Packages",
    "images/rpi/image.raw.xz",
    "stray.txt",
]
unmanaged_st = st.dictionaries(
    st.sampled_from(UNMANAGED), st.sampled_from(["file", "dir", "link", "ignored"])
)


def _is_prunable(rel: str, files: dict[str, Any]) -> bool:
    repos = {f.removesuffix("/repodata/repomd.xml") for f in files if f.endswith("/repomd.xml")}
    return any(rel.startswith((f"{r}/Packages/", f"{r}/repodata/")) for r in repos)


@settings(max_examples=300, deadline=None)
@given(world=world_st, found=unmanaged_st, prune=st.booleans(), tree=st.booleans())
def test_an_unmanaged_path_is_retired_only_by_prune_and_only_in_a_repo_it_publishes(
    world: dict[str, Any], found: dict[str, str], prune: bool, tree: bool
) -> None:
    case = {
        "basis": "tree" if tree else "inventory",
        "files": {rel: list(v) for rel, v in world["files"].items()},
        "inventory": {
            rel: ("dir" if rel in DIRS else list(v)) for rel, v in world["inventory"].items()
        },
        "unmanaged": {rel: kind for rel, kind in found.items() if rel not in world["inventory"]},
        "tree": {"present": list(found)},
        "prune": prune,
    }
    result = make_change_set(case)
    inventory = {PREFIX + rel for rel in case["inventory"]}
    for path in result.pend:
        if path in inventory:
            continue  # superseded: the reconciler published it
        rel = path.removeprefix(PREFIX)
        assert prune, f"{rel}: pended without prune, and the inventory does not record it"
        assert path in result.adopt
        assert case["unmanaged"][rel] in ("file", "link"), "never a directory or an ignored file"
        assert rel not in world["files"], "never what the compose has"
        assert _is_prunable(rel, world["files"]), f"{rel}: not in a published repo's dirs"
    assert set(result.adopt) <= set(result.pend)
    if not prune:
        assert result.adopt == ()
