"""Build the inputs of a publish's change set from plain data (the golden cases).

Paths are written relative to the target (the prefix is added): a compose file is
``rel: [size, mtime]``; an inventory entry is ``rel: [size, mtime]``, ``rel: dir`` or
``rel: link``. ``basis`` is ``inventory`` (the default), ``changes`` (then ``changes``
lists each compose's ``{base, added: {rel: [size, mtime]}, removed: [rel]}``, oldest
first) or ``tree`` (then ``tree`` gives ``matching`` compose paths and every path
``present`` in the tree). ``unmanaged`` are the paths in the target that the inventory
lacks, as the last walk found them: ``rel: file``, ``rel: dir``, ``rel: link`` or
``rel: ignored`` (a file a ``publish.unmanaged`` pattern covers); ``prune`` is the
SIG's ``publish.prune``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reconciler.changeset import (
    Basis,
    ChangeSet,
    FromChanges,
    FromInventory,
    FromTree,
    TreeFacts,
    change_set,
)
from reconciler.composefiles import Changes, SourceFile
from reconciler.state.records import InventoryEntry, UnmanagedEntry
from reconciler.vocabulary import InventoryKind

PREFIX = "mirror/pub/sig/9/core/"
#: The compose's SIG directory (the root of its files' paths; never read).
SOURCE = Path("/compose/9/SIG-core-9-20261102.0/compose/9/core")


def files(raw: dict[str, list[int]]) -> tuple[SourceFile, ...]:
    return tuple(
        SourceFile(rel, SOURCE, int(size), int(mtime)) for rel, (size, mtime) in raw.items()
    )


def entry(rel: str, raw: Any) -> InventoryEntry:
    if raw in ("dir", "link"):
        kind = InventoryKind.DIR if raw == "dir" else InventoryKind.LINK
        return InventoryEntry(PREFIX + rel, kind, 4096, 1, 1, None, 1)
    size, mtime = raw
    return InventoryEntry(
        PREFIX + rel, InventoryKind.FILE, int(size), int(mtime), 1, None, int(mtime)
    )


def basis(case: dict[str, Any]) -> Basis:
    kind = case.get("basis", "inventory")
    if kind == "changes":
        chain = tuple(
            Changes(c["base"], files(c.get("added", {})), tuple(c.get("removed", [])))
            for c in case["changes"]
        )
        return FromChanges(chain)
    compose = files(case.get("files", {}))
    inventory = {
        PREFIX + rel: entry(rel, raw) for rel, raw in (case.get("inventory") or {}).items()
    }
    if kind == "tree":
        tree = case.get("tree", {})
        facts = TreeFacts(
            frozenset(tree.get("matching", [])),
            frozenset(PREFIX + rel for rel in tree.get("present", [])),
        )
        return FromTree(compose, inventory, facts)
    assert kind == "inventory", kind
    return FromInventory(compose, inventory)


_KINDS = {"file": InventoryKind.FILE, "ignored": InventoryKind.FILE,
          "dir": InventoryKind.DIR, "link": InventoryKind.LINK}  # fmt: skip


def unmanaged(case: dict[str, Any]) -> dict[str, UnmanagedEntry]:
    return {
        PREFIX + rel: UnmanagedEntry(PREFIX + rel, _KINDS[raw], 100, 1, 1, raw == "ignored")
        for rel, raw in (case.get("unmanaged") or {}).items()
    }


def make_change_set(case: dict[str, Any]) -> ChangeSet:
    """``pending`` paths are relative to the target unless they start with ``/`` (then
    relative to the stage root: another target's)."""
    pending = {p[1:] if p.startswith("/") else PREFIX + p for p in case.get("pending", [])}
    return change_set(PREFIX, basis(case), pending, unmanaged(case), bool(case.get("prune")))
