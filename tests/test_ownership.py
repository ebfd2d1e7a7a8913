"""The walk that finds unmanaged paths (reconciler.ownership) on a real tree."""

from __future__ import annotations

from pathlib import Path

from reconciler.layout import PublishedTree
from reconciler.ownership import walk_unmanaged
from reconciler.pathglob import PathPatterns
from reconciler.vocabulary import InventoryKind, Stage


def test_walk_finds_what_the_inventory_lacks(tmp_path: Path) -> None:
    tree = PublishedTree(Stage.PRODUCTION, tmp_path, "mirror/pub/sig", "altarch", "9")
    repo = tree.path / "aarch64" / "altarch-common"
    (repo / "Packages" / "a").mkdir(parents=True)
    (repo / "Packages" / "a" / "a-1.rpm").write_bytes(b"rpm")
    (repo / "RPM-GPG-KEY-Rocky-SIG-AltArch").write_text("key")
    (tree.path / "images").mkdir()
    (tree.path / "images" / "rpi.raw.xz").write_bytes(b"x" * 10)
    (repo / "half.rpm.~tmp~").write_bytes(b"")
    (tree.path / "link").symlink_to("/etc")
    p = tree.inventory_prefix
    owned = {p + "aarch64", p + "aarch64/altarch-common", p + "aarch64/altarch-common/Packages",
             p + "aarch64/altarch-common/Packages/a",
             p + "aarch64/altarch-common/Packages/a/a-1.rpm"}  # fmt: skip
    found = {e.relpath: e for e in walk_unmanaged(tree, owned, PathPatterns.of(["images"]))}
    assert set(found) == {
        p + "aarch64/altarch-common/RPM-GPG-KEY-Rocky-SIG-AltArch",
        p + "images",
        p + "images/rpi.raw.xz",
        p + "link",
    }
    assert found[p + "images"].kind is InventoryKind.DIR and found[p + "images"].ignored
    assert found[p + "images/rpi.raw.xz"].size == 10 and found[p + "images/rpi.raw.xz"].ignored
    assert found[p + "link"].kind is InventoryKind.LINK and not found[p + "link"].ignored
    assert (
        walk_unmanaged(
            PublishedTree(Stage.PRODUCTION, tmp_path, "mirror/pub/sig", "none", "9"),
            owned,
            PathPatterns.of([]),
        )
        == []
    )


def test_a_name_the_lists_cannot_carry_is_not_a_row(tmp_path: Path) -> None:
    """A tab or newline in a name (put there by anyone who can write the tree) would make
    every list unwritable; it is logged and left out, with what is under such a dir."""
    from reconciler.ownership import walk_rest

    tree = PublishedTree(Stage.PRODUCTION, tmp_path, "mirror/pub/sig", "core", "9")
    tree.path.mkdir(parents=True)
    (tree.path / "ok.txt").write_text("x")
    (tree.path / "bad\nname.txt").write_text("x")
    (tree.path / "bad\tdir").mkdir()
    (tree.path / "bad\tdir" / "inner.txt").write_text("x")
    found = [e.relpath for e in walk_unmanaged(tree, set(), PathPatterns.of([]))]
    assert found == [tree.inventory_prefix + "ok.txt"]
    rest = [e.relpath for e in walk_rest(tmp_path, "mirror/pub/sig", set(), [])]
    assert not [p for p in rest if "\n" in p or "\t" in p]
    assert "mirror/pub/sig/9/core/ok.txt" in rest
