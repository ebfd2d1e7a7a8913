"""What a publish changes in a target: the change set. Pure: no I/O, no clock.

A publish is a pipeline too (DESIGN.md section 6): the compose's files and
what the target holds -> :func:`change_set` -> a :class:`ChangeSet` ->
:class:`reconciler.publishing.Publisher` acts on it. What the target holds is
known one of three ways (:class:`~reconciler.vocabulary.PublishBasis`):

- :class:`FromChanges`: the target holds an earlier compose of the chain and
  its last publish finished; the composes' changes files say what differs
  (nothing else is read);
- :class:`FromInventory`: the compose's files against the state's inventory of
  the target (size and mtime);
- :class:`FromTree`: a repair; the compose's files against what the tree holds
  (the publisher looked: :class:`TreeFacts`).

Every path is an inventory path (relative to the stage root, under the target's
prefix). The change set says which compose files to PLACE (a new name) or
REPLACE (the target holds something under the name: an earlier file of its own, or
an unmanaged one), in the mirror-safe phases (packages, metadata, ``repomd.xml``
last); which unmanaged files to ADOPT (inventoried, then pended); which paths to
PEND for deletion after the grace (superseded files; directories never); and which
pending deletions to CANCEL (the path is wanted again).

Only what the inventory records is ever pended, and *unmanaged* paths (in the tree,
not in the inventory: an adopted tree's images and keys, a human's files) are kept,
but with ``prune``: then an unmanaged file under the ``Packages/`` or ``repodata/``
directory of a repo the compose publishes, which the compose does not have (an old
reposync'd tree's superseded packages and metadata), is adopted and pended like a
superseded file. A path that matches ``publish.unmanaged`` (``ignored``) is never
adopted. The changes files do not say which repos the compose has, so pruning needs
the inventory or the tree basis (:func:`prune_repos` tells the publisher when).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from .composefiles import REPOMD, Changes, SourceFile, combine
from .vocabulary import ChangeKind, InventoryKind, PublishBasis, PublishPhase


class Held(Protocol):
    """What the change set needs of an inventory entry (the state's ``InventoryEntry``)."""

    @property
    def kind(self) -> InventoryKind: ...

    @property
    def size(self) -> int: ...

    @property
    def mtime_ns(self) -> int: ...


class Found(Protocol):
    """What the change set needs of an unmanaged path (the state's ``UnmanagedEntry``)."""

    @property
    def kind(self) -> InventoryKind: ...

    @property
    def ignored(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class FromChanges:
    """The composes' changes, oldest first, from the compose the target holds."""

    chain: tuple[Changes, ...]


@dataclass(frozen=True, slots=True)
class FromInventory:
    """The compose's files, and the inventory of the target (path -> entry)."""

    files: tuple[SourceFile, ...]
    inventory: Mapping[str, Held]


@dataclass(frozen=True, slots=True)
class TreeFacts:
    """What a repair found in the target's tree."""

    matching: frozenset[str]  # compose relpaths whose file in the tree has the same bytes
    present: frozenset[str]  # inventory paths of every file in the tree


@dataclass(frozen=True, slots=True)
class FromTree:
    """A repair: the compose's files, the target's inventory, and what the tree holds."""

    files: tuple[SourceFile, ...]
    inventory: Mapping[str, Held]
    tree: TreeFacts


Basis = FromChanges | FromInventory | FromTree


@dataclass(frozen=True, slots=True)
class Change:
    """One step of a change set on the inventory path ``path``."""

    kind: ChangeKind
    path: str
    file: SourceFile | None = None  # PLACE and REPLACE: the compose's file

    @property
    def phase(self) -> PublishPhase | None:
        return None if self.file is None else self.file.phase


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """What a publish does to one target, in the order it does it."""

    basis: PublishBasis
    prefix: str  # every path starts with it (``mirror/pub/sig/9/core/``)
    places: tuple[Change, ...]  # PLACE and REPLACE, in the compose's file order
    adopt: tuple[str, ...] = ()
    pend: tuple[str, ...] = ()
    cancel: tuple[str, ...] = ()
    composes: int = 0  # FromChanges: how many composes' changes were read

    def phase(self, phase: PublishPhase) -> tuple[Change, ...]:
        """The places of one phase, in the compose's order; in the last, each
        ``repomd.xml.asc`` right after its ``repomd.xml`` (:mod:`reconciler.publishing`)."""
        found = tuple(c for c in self.places if c.phase is phase)
        if phase is not PublishPhase.REPOMD:
            return found
        paths = {c.path for c in found}
        follows = {  # repomd.xml -> its signature, when both are placed
            c.path.removesuffix(".asc"): c
            for c in found
            if c.path.endswith(".asc") and c.path.removesuffix(".asc") in paths
        }
        moved = {c.path for c in follows.values()}
        ordered: list[Change] = []
        for c in found:
            if c.path not in moved:
                ordered.append(c)
                ordered.extend((follows[c.path],) if c.path in follows else ())
        return tuple(ordered)

    @property
    def steps(self) -> tuple[Change, ...]:
        """Every change in the order a publish makes it."""
        return (
            *(Change(ChangeKind.ADOPT, p) for p in self.adopt),
            *(Change(ChangeKind.CANCEL, p) for p in self.cancel),
            *(c for phase in PublishPhase for c in self.phase(phase)),
            *(Change(ChangeKind.PEND, p) for p in self.pend),
        )

    @property
    def how(self) -> str:
        """For the log: what the compose was compared with."""
        if self.basis is PublishBasis.CHANGES:
            return f"from the changes of {self.composes} compose(s)"
        if self.basis is PublishBasis.TREE:
            return "against the tree"
        return "against the whole inventory"

    def describe(self) -> list[str]:
        """One line a step: ``<kind> [<phase>] <path after the prefix>``."""
        lines = []
        for c in self.steps:
            path = c.path.removeprefix(self.prefix)
            phase = f" [{c.phase.name.lower()}]" if c.phase is not None else ""
            lines.append(f"{c.kind.value}{phase} {path}")
        return lines


def change_set(
    prefix: str,
    basis: Basis,
    pending: Collection[str],
    unmanaged: Mapping[str, Found] | None = None,
    prune: bool = False,
) -> ChangeSet:
    """What publishing a compose under ``prefix`` (``category/release/sig/``) changes.

    ``pending`` are the stage's pending deletions (inventory paths); ``unmanaged`` the
    paths under ``prefix`` that the inventory lacks, as far as they are known (a walk
    of the tree); ``prune`` the SIG's ``publish.prune``.
    """
    found = unmanaged or {}
    taken = {k for k, e in found.items() if e.kind is not InventoryKind.DIR}
    if isinstance(basis, FromChanges):
        return _from_changes(prefix, basis.chain, pending, taken)
    files, inventory = basis.files, basis.inventory
    wanted = {prefix + f.rel for f in files}
    pend = {k for k, e in inventory.items() if e.kind is not InventoryKind.DIR and k not in wanted}
    adopt = _prunable(prefix, files, found) - wanted - inventory.keys() if prune else set()
    if isinstance(basis, FromTree):
        tree = basis.tree
        adopt &= tree.present  # as the tree is now, not as the last walk found it
        changed = [f for f in files if f.rel not in tree.matching]
        places = _places(prefix, changed, tree.present | taken)
        return ChangeSet(
            PublishBasis.TREE, prefix, places, tuple(sorted(adopt)),
            tuple(sorted(pend | adopt)), _cancel(pending, wanted),
        )  # fmt: skip
    changed = [f for f in files if not _current(inventory.get(prefix + f.rel), f)]
    places = _places(prefix, changed, inventory.keys() | taken)
    return ChangeSet(
        PublishBasis.INVENTORY, prefix, places, tuple(sorted(adopt)),
        tuple(sorted(pend | adopt)), _cancel(pending, wanted),
    )  # fmt: skip


#: The directories of a repo whose files its ``repomd.xml`` names: the only places
#: ``prune`` retires unmanaged files from.
PRUNED_DIRS = frozenset({"Packages", "repodata"})


def _repo_dirs(parts: Sequence[str]) -> set[str]:
    """The repo directories (inside the SIG directory) of a path, given as its parts, that
    lies under a repo's ``Packages/`` or ``repodata/``: those before such a part."""
    return {"/".join(parts[:i]) for i, part in enumerate(parts[:-1]) if part in PRUNED_DIRS}


def prune_repos(prefix: str, unmanaged: Mapping[str, Found]) -> set[str]:
    """The repo directories ``prune`` could retire some of ``unmanaged`` from (an unignored
    file under their ``Packages/`` or ``repodata/``): when the compose publishes one of
    them, the publish must know every file of the compose (not only its changes)."""
    found: set[str] = set()
    for k, e in unmanaged.items():
        if e.kind is not InventoryKind.DIR and not e.ignored and k.startswith(prefix):
            found |= _repo_dirs(k.removeprefix(prefix).split("/"))
    return found


def _prunable(prefix: str, files: Sequence[SourceFile], found: Mapping[str, Found]) -> set[str]:
    """The unmanaged files that ``prune`` retires: not ignored, under the ``Packages/`` or
    ``repodata/`` of a repo the compose publishes (it has that repo's ``repomd.xml``)."""
    repos = {f.rel.removesuffix(REPOMD).removesuffix("/") for f in files if f.is_repomd}
    return {
        k
        for k, e in found.items()
        if e.kind is not InventoryKind.DIR
        and not e.ignored
        and k.startswith(prefix)
        and not repos.isdisjoint(_repo_dirs(k.removeprefix(prefix).split("/")))
    }


def _from_changes(
    prefix: str, chain: Sequence[Changes], pending: Collection[str], taken: Collection[str]
) -> ChangeSet:
    place, gone = combine(chain)
    wanted = {prefix + f.rel for f in place}
    pend = {prefix + rel for rel in gone} - wanted
    places = _places(prefix, place, taken)
    return ChangeSet(
        PublishBasis.CHANGES, prefix, places, (), tuple(sorted(pend)), _cancel(pending, wanted),
        composes=len(chain),
    )  # fmt: skip


def _places(prefix: str, files: Sequence[SourceFile], held: Collection[str]) -> tuple[Change, ...]:
    """PLACE a new name; REPLACE one the target is known to hold (a file of its own with
    other bytes, or an unmanaged one)."""
    return tuple(
        Change(
            ChangeKind.REPLACE if prefix + f.rel in held else ChangeKind.PLACE, prefix + f.rel, f
        )
        for f in files
    )


def _current(entry: Held | None, src: SourceFile) -> bool:
    return entry is not None and entry.size == src.size and entry.mtime_ns == src.mtime_ns


def _cancel(pending: Collection[str], wanted: set[str]) -> tuple[str, ...]:
    return tuple(sorted(wanted.intersection(pending)))
