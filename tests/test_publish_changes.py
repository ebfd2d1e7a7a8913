"""Publishing from the composes' changes files (work in proportion to the change).

A compose made on top of another records what it added, changed and dropped.
A publish over a target that holds an earlier compose of that chain reads only
those changes; the result must be exactly what comparing the whole inventory
gives, and an unfinished earlier publish must fall back to that comparison.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler import retiring
from reconciler.facts import TargetKey
from reconciler.filelists import (
    FILELIST,
    LIST_NAMES,
    TIMELIST,
    TIMELIST_SIG,
    parse_timelist,
    render_all,
    write_if_changed,
)
from reconciler.layout import ComposeTree
from reconciler.manifest import (
    CHANGES_HEADER,
    Changes,
    SourceFile,
    combine,
    diff,
    read_changes,
    read_manifest,
    write_changes,
)
from reconciler.retiring import write_production_filelists
from reconciler.state import InventoryEntry, StateDB
from reconciler.verifying import verify_tree
from reconciler.vocabulary import InventoryKind, Stage

from .publish_support import CATEGORY, SIG_REL, World, build_world, tree_listing

TARGET = TargetKey(Stage.PRODUCTION, "core", "9")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from build_world(tmp_path)


def tree(world: World) -> ComposeTree:
    return ComposeTree(world.root / "compose", "core", "9")


def manifest(world: World, cid: str) -> dict[str, tuple[int, int]]:
    t = tree(world)
    files = read_manifest(t.manifest(cid), t.sig_dir(cid))
    assert files is not None
    return {f.rel: (f.size, f.mtime_ns) for f in files}


def published(world: World, stage: Stage = Stage.PRODUCTION) -> dict[str, tuple[int, int]]:
    """The target's files per the inventory, without those pending deletion."""
    with StateDB.open(world.root / "state") as state:
        pending = {p.relpath for p in state.pending.all(stage)}
        inventory = state.inventory.entries(stage, f"{SIG_REL}/")
    return {
        k.removeprefix(f"{SIG_REL}/"): (e.size, e.mtime_ns)
        for k, e in inventory.items()
        if e.kind == "f" and k not in pending
    }


def assert_holds(world: World, cid: str) -> None:
    """The target's files (per the inventory) are the compose's: the same paths and sizes,
    and the same mtimes but where the target kept a file of an earlier compose that has
    the same bytes (the keys each compose writes anew: mirrors fetch nothing again)."""
    held, wanted = published(world), manifest(world, cid)
    assert {rel: size for rel, (size, _) in held.items()} == {
        rel: size for rel, (size, _) in wanted.items()
    }
    sig_dir, target = tree(world).sig_dir(cid), world.production / SIG_REL
    kept = [rel for rel in wanted if held[rel] != wanted[rel]]
    for rel in kept:
        assert (target / rel).read_bytes() == (sig_dir / rel).read_bytes(), rel
        assert (target / rel).stat().st_mtime_ns == held[rel][1], rel
    assert all("RPM-GPG-KEY" in rel for rel in kept), kept


def outcome(world: World) -> tuple[object, ...]:
    """What a promotion leaves: inventory (no inode or ctime), pending paths, the tree's
    contents and the file lists' entries (their times are link times: left out)."""
    with StateDB.open(world.root / "state") as state:
        inventory = {
            k: (e.kind, e.size, e.mtime_ns if e.kind != "d" else 0)
            for k, e in state.inventory.entries(Stage.PRODUCTION).items()
        }
        pending = {p.relpath for p in state.pending.all(Stage.PRODUCTION)}
    lists = world.production / CATEGORY
    entries, sums = parse_timelist((lists / TIMELIST_SIG).read_text())
    contents = {
        k: v
        for k, v in tree_listing(world.production).items()
        if not k.startswith(f"{CATEGORY}/full")
    }
    return inventory, pending, contents, {(e.path, e.kind, e.size) for e in entries}, sums


def apply_verbose(world: World, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert world.run("apply", "-v") == 0
    return capsys.readouterr().err


def test_a_compose_records_what_changed_since_the_one_it_was_made_on(world: World) -> None:
    t = tree(world)
    changes = read_changes(t.changes(world.b), t.sig_dir(world.b))
    assert changes is not None and changes.base == world.a
    added = {f.rel.rsplit("/", 1)[-1] for f in changes.added}
    removed = {rel.rsplit("/", 1)[-1] for rel in changes.removed}
    assert "sig-hello-1.1-1.x86_64.rpm" in added and "sig-data-1.0-1.noarch.rpm" in added
    assert "sig-tools-2.0-1.x86_64.rpm" in removed and "sig-hello-1.0-1.x86_64.rpm" in removed
    assert "repomd.xml" in added
    # A's manifest with the changes applied is B's manifest, exactly
    before = manifest(world, world.a)
    for rel in changes.removed:
        del before[rel]
    before.update({f.rel: (f.size, f.mtime_ns) for f in changes.added})
    assert before == manifest(world, world.b)
    assert not (t.changes(world.a)).exists(), "the first compose has nothing to compare with"


def test_promotion_from_the_changes_equals_comparing_everything(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "saved"
    for name in ("production", "state"):
        shutil.copytree(world.root / name, saved / name, symlinks=True)
    world.pin(world.b)
    assert "from the changes of 1 compose(s)" in apply_verbose(world, capsys)
    from_changes = outcome(world)
    assert_holds(world, world.b)
    assert verify_tree(world.production).ok

    for name in ("production", "state"):
        shutil.rmtree(world.root / name)
        shutil.copytree(saved / name, world.root / name, symlinks=True)
    tree(world).changes(world.b).unlink()  # a compose without changes: compare everything
    assert "against the whole inventory" in apply_verbose(world, capsys)
    assert outcome(world) == from_changes


def test_an_unfinished_publish_is_followed_by_a_whole_comparison(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    # what a publish of some other compose, killed half-way, leaves: a file and its
    # inventory entry, and the marker of the publish
    stray = world.production / SIG_REL / "x86_64/core-common/Packages/s/stray-1-1.noarch.rpm"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"half of another compose")
    with StateDB.open(world.root / "state") as state:
        st = stray.lstat()
        key = str(stray.relative_to(world.production))
        state.inventory.apply_changes(
            Stage.PRODUCTION,
            [InventoryEntry(key, InventoryKind.FILE, st.st_size, st.st_mtime_ns, st.st_ino, None)],
            [],
        )
        state.targets.mark_publishing(TARGET, "SIG-core-9-20990101.0")
    world.pin(world.b)
    assert "against the whole inventory" in apply_verbose(world, capsys)
    with StateDB.open(world.root / "state") as state:
        assert key in {p.relpath for p in state.pending.all(Stage.PRODUCTION)}
        assert not state.targets.is_publishing(TARGET)
    assert_holds(world, world.b)


def test_changes_are_chained_over_composes_production_skipped(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    # compose C on top of B: sig-data goes away again; staging follows, production
    # (still on A) is then promoted straight to C
    from reconciler import testing as su

    from .conftest import PROJECT_ID, REPOS

    for repo, arches in REPOS.items():
        for arch_dir in [*arches, "src"]:
            d = su.upstream_repo_dir(world.upstream_root, PROJECT_ID, repo, arch_dir)
            su.remove_packages(d, [p.name for p in (d / "Packages").glob("sig-data-*")])
    assert world.run("apply") == 0
    c = world.staged()
    assert c not in (world.a, world.b)
    changes = read_changes(tree(world).changes(c), tree(world).sig_dir(c))
    assert changes is not None and changes.base == world.b
    world.pin(c)
    assert "from the changes of 2 compose(s)" in apply_verbose(world, capsys)
    assert_holds(world, c)
    assert verify_tree(world.production).ok
    assert not list(world.production.rglob("sig-data-*.rpm"))


def _file(rel: str, size: int = 1, mtime: int = 1) -> SourceFile:
    return SourceFile(rel, Path("/c"), size, mtime)


def test_diff_and_combine() -> None:
    a = [_file("p/a.rpm"), _file("p/b.rpm"), _file("r/repomd.xml", 1, 1)]
    b = [_file("p/b.rpm"), _file("p/c.rpm"), _file("r/repomd.xml", 2, 2)]
    c = [_file("p/a.rpm"), _file("r/repomd.xml", 3, 3)]
    ab, bc = diff("SIG-x-9-20260101.0", a, b), diff("SIG-x-9-20260101.1", b, c)
    assert [f.rel for f in ab.added] == ["p/c.rpm", "r/repomd.xml"]
    assert ab.removed == ("p/a.rpm",)
    place, gone = combine([ab, bc])
    # applied to a, the combined changes give c (a.rpm went and came back: placed again)
    files = {f.rel: (f.size, f.mtime_ns) for f in a}
    for rel in gone:
        files.pop(rel, None)
    files.update({f.rel: (f.size, f.mtime_ns) for f in place})
    assert files == {f.rel: (f.size, f.mtime_ns) for f in c}
    assert [f.rel for f in place] == ["p/a.rpm", "r/repomd.xml"]
    assert gone == ["p/b.rpm", "p/c.rpm"]


def test_changes_round_trip(tmp_path: Path) -> None:
    changes = Changes("SIG-x-9-20260101.0", (_file("p/a b.rpm", 5, 7),), ("p/old.rpm",))
    write_changes(tmp_path / "c.tsv", changes)
    back = read_changes(tmp_path / "c.tsv", Path("/c"))
    assert back == changes


@pytest.mark.parametrize(
    "body",
    [
        "",  # empty
        "base\tSIG-x-9-20260101.0\n",  # no header
        CHANGES_HEADER + "base\t../../etc\n",  # a base that is not a compose ID
        CHANGES_HEADER + "SIG-x-9-20260101.0\n",  # no base line
        CHANGES_HEADER + "base\tSIG-x-9-20260101.0\n+\t/abs.rpm\t1\t1\n",
        CHANGES_HEADER + "base\tSIG-x-9-20260101.0\n+\tp/../../x.rpm\t1\t1\n",
        CHANGES_HEADER + "base\tSIG-x-9-20260101.0\n-\t./x.rpm\n",
        CHANGES_HEADER + "base\tSIG-x-9-20260101.0\n+\tp/x.rpm\tbig\t1\n",
        CHANGES_HEADER + "base\tSIG-x-9-20260101.0\n+\tp/x.rpm\t1\n",
        CHANGES_HEADER + "base\tSIG-x-9-20260101.0\n*\tp/x.rpm\n",
        CHANGES_HEADER + "base\tSIG-x-9-20260101.0\n-\tp/x.rpm\textra\n",
        CHANGES_HEADER + "base\tSIG-x-9-20260101.0\njunk\n",
    ],
)
def test_a_malformed_changes_file_is_not_used(tmp_path: Path, body: str) -> None:
    path = tmp_path / "c.tsv"
    path.write_text(body)
    assert read_changes(path, Path("/c")) is None
    assert read_changes(tmp_path / "missing.tsv", Path("/c")) is None


# --- file lists: the changes patched in, or everything listed when in doubt ----------


def _lists(top: Path) -> dict[str, str]:
    return {name: (top / name).read_text() for name in LIST_NAMES}


def test_a_promotion_patches_the_lists_to_what_listing_everything_gives(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(entries: object) -> dict[str, str]:
        raise AssertionError("the lists were rendered from the whole inventory")

    world.pin(world.b)
    with monkeypatch.context() as m:
        m.setattr(retiring, "render_all", refuse)
        assert world.run("apply") == 0
    with StateDB.open(world.root / "state") as state:
        assert _lists(world.production / CATEGORY) == render_all(
            state.inventory.listing(Stage.PRODUCTION, f"{CATEGORY}/")
        )
        assert state.inventory.listing_changes(Stage.PRODUCTION) == frozenset()


def _inv(relpath: str, size: int = 1, checksum: str | None = None) -> InventoryEntry:
    return InventoryEntry(
        relpath, InventoryKind.FILE, size, 1_700_000_000 * 10**9 + size, size, checksum
    )


def test_lists_are_listed_whole_when_the_state_cannot_vouch_for_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, top = tmp_path / "production", tmp_path / "production" / "cat"
    top.mkdir(parents=True)
    whole: list[int] = []
    monkeypatch.setattr(
        retiring, "render_all", lambda entries: whole.append(1) or render_all(entries)
    )

    def write(db: StateDB) -> bool:
        """Write the lists; True if they were listed whole. They are right either way."""
        before = len(whole)
        write_production_filelists(db, root, "cat")
        assert _lists(top) == render_all(db.inventory.listing(Stage.PRODUCTION, "cat/"))
        return len(whole) > before

    with StateDB.open(tmp_path / "state") as db:
        db.inventory.apply_changes(Stage.PRODUCTION, [_inv("cat/a"), _inv("cat/b")], [])
        assert write(db), "no digest recorded yet"
        db.inventory.apply_changes(Stage.PRODUCTION, [_inv("cat/c", 3, "f" * 40)], ["cat/a"])
        db.inventory.apply_changes(Stage.STAGING, [_inv("cat/z")], [])  # not listed
        assert not write(db), "the changes are known: patched"
        assert not write(db), "nothing changed: patched (with nothing)"

        (top / TIMELIST).write_text((top / TIMELIST).read_text().replace("\tb\n", "\tB\n"))
        db.inventory.apply_changes(Stage.PRODUCTION, [_inv("cat/d")], [])
        assert write(db), "the list in the tree is not the one written"

        db.inventory.replace(Stage.PRODUCTION, "cat/", [_inv("cat/e")])
        assert write(db), "replace_inventory does not say what changed"

        # a crash between writing the lists and recording them: the tree's lists are
        # newer than the digest in the state
        db.inventory.apply_changes(Stage.PRODUCTION, [_inv("cat/f")], [])
        write_if_changed(top, render_all(db.inventory.listing(Stage.PRODUCTION, "cat/")))
        db.inventory.apply_changes(Stage.PRODUCTION, [_inv("cat/g")], [])
        assert write(db)

        (top / FILELIST).unlink()
        assert write(db), "a list is missing"


def test_the_filelist_command_renews_the_lists_from_the_state(world: World) -> None:
    world.pin(world.b)
    assert world.run("apply") == 0
    top = world.production / CATEGORY
    expected = _lists(top)
    (top / FILELIST).unlink()
    (top / TIMELIST_SIG).write_text("[Version]\n2\n")
    assert world.run("filelist") == 0
    assert _lists(top) == expected
    with StateDB.open(world.root / "state") as state:
        assert state.inventory.listing_changes(Stage.PRODUCTION) == frozenset()


def test_the_filelist_command_never_writes_through_a_symlink_out_of_the_root(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A category directory that is a symlink out of the production root was followed:
    the lists were written outside the root. It is refused now, and nothing is written."""
    world.pin(world.b)
    assert world.run("apply") == 0
    category = world.production / CATEGORY
    outside = tmp_path / "outside"
    shutil.copytree(category, outside, symlinks=True)
    (outside / FILELIST).unlink()
    shutil.rmtree(category)
    category.symlink_to(outside)
    capsys.readouterr()
    assert world.run("filelist") == 1
    assert "resolves outside" in capsys.readouterr().err
    assert not (outside / FILELIST).exists()
