"""Drift: a published target compared with its inventory by stat, and with its
compose's checksums by content.

A path the reconciler published (its inventory) that is missing or changed (size,
mtime or inode) is drift. A path under a published SIG directory that the inventory
does not record is not drift: it is *unmanaged* (:mod:`reconciler.ownership` finds
those in the same walk), reported but never repaired or deleted. The whole check
walks the target, so it runs on a host-configured interval (``drift_interval``,
default hourly) and on demand (``reconciler verify --drift``), never on the hot
path; every pass only stats each published ``repomd.xml``. Bytes written into a
file in place, its size and mtime put back, escape a stat: the deep check
(:func:`check_deep`) reads every published file and compares its digest with the
compose's (CORRUPT), on its own, slower interval (``drift_deep_interval``, default
daily) and on demand (``reconciler verify --drift --deep``). These functions read
the trees and return findings; the apply step records them in the state, and the
next apply repairs them when the host says ``drift: repair``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import PurePosixPath

from .checksums import DigestCache, Sum
from .facts import DriftFinding
from .layout import PublishedTree, Variant
from .state import InventoryEntry
from .vocabulary import DriftKind, InventoryKind


def _differs(entry: InventoryEntry, st: os.stat_result) -> bool:
    return (st.st_size, st.st_mtime_ns, st.st_ino) != (entry.size, entry.mtime_ns, entry.ino)


def check_target(
    inventory: Mapping[str, InventoryEntry], tree: PublishedTree
) -> tuple[DriftFinding, ...]:
    """Compare every path of the target's inventory (``tree``'s entries) with the tree.

    Paths in the tree that the inventory lacks are no concern of drift: they are
    unmanaged (:func:`reconciler.ownership.walk_unmanaged`)."""
    found: list[DriftFinding] = []
    for rel, entry in inventory.items():
        try:
            st = (tree.root / rel).lstat()
        except FileNotFoundError:
            found.append(DriftFinding(rel, DriftKind.MISSING))
            continue
        if entry.kind is InventoryKind.FILE and (
            not stat.S_ISREG(st.st_mode) or _differs(entry, st)
        ):
            found.append(DriftFinding(rel, DriftKind.CHANGED))
        elif entry.kind is InventoryKind.DIR and not stat.S_ISDIR(st.st_mode):
            found.append(DriftFinding(rel, DriftKind.CHANGED))  # a symlink or a file now
    return tuple(sorted(found))


def actionable(findings: Iterable[DriftFinding]) -> tuple[DriftFinding, ...]:
    """``findings`` without UNEXPECTED ones: a database written before unmanaged paths
    were told apart may still hold them; such a path is unmanaged now, never drift, so
    it is neither reported nor repaired (nor deleted by a repair)."""
    return tuple(d for d in findings if d.what is not DriftKind.UNEXPECTED)


def check_deep(
    expected: Mapping[str, Sum], tree: PublishedTree, cache: DigestCache
) -> tuple[DriftFinding, ...]:
    """Hash every file of the target that ``expected`` (its compose's checksums, relpaths
    in the SIG directory) names; one that does not hash to it is CORRUPT, whatever its
    size and mtime say. A missing file is left to the stat check (MISSING)."""
    found = []
    for rel, want in sorted(expected.items()):
        path = tree.path / rel
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if not cache.matches(path, want, st):
            found.append(DriftFinding(tree.relpath(PurePosixPath(rel)), DriftKind.CORRUPT))
    return tuple(found)


def check_repomds(
    inventory: Mapping[str, InventoryEntry], tree: PublishedTree, variants: Iterable[Variant]
) -> tuple[DriftFinding, ...]:
    """The cheap check of every pass: stat each published repomd.xml against the inventory.

    Each is stat'ed relative to the target directory, opened once: on network storage
    every component of a path is a round trip, and the part from the root to the
    target is the same for every repo (BENCHMARKS.md, round 7)."""
    wanted = [
        (variant, tree.repomd(variant)) for variant in variants if tree.repomd(variant) in inventory
    ]
    if not wanted:
        return ()
    try:
        top: int | None = os.open(tree.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        top = None  # the whole target is gone: every repomd.xml is missing
    found = []
    try:
        for variant, path in wanted:
            try:
                if top is None:
                    raise FileNotFoundError(path)
                rel = str(variant.rel_dir / "repodata" / "repomd.xml")
                st = os.stat(rel, dir_fd=top, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                found.append(DriftFinding(path, DriftKind.MISSING))
                continue
            if _differs(inventory[path], st):
                found.append(DriftFinding(path, DriftKind.CHANGED))
    finally:
        if top is not None:
            os.close(top)
    return tuple(found)


def due(checked_at: datetime | None, interval: float, now: datetime) -> bool:
    """Whether a check on ``interval`` is due (0: never; else ``interval`` seconds after
    the last one)."""
    if not interval:
        return False
    return checked_at is None or (now - checked_at).total_seconds() >= interval
