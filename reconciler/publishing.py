"""Publishing a compose into a staging or production tree without breaking a mirror.

docs/architecture.md ("Publishing without breaking a mirror"), in this order:

1. add the packages and other files the new metadata needs (from the compose: a
   clone where the filesystem shares blocks, a hardlink where it does not, a copy
   across filesystems; :class:`~reconciler.fsutil.Sharer`); delete nothing;
2. add the new metadata files (their names carry their checksums);
3. replace each ``repodata/repomd.xml`` by rename (write, fsync, rename), then at
   once its ``repomd.xml.asc``: a client reads the pair in that order, so it sees a
   mismatch only between the two renames (never a signature newer than its
   ``repomd.xml``) and reads again; docs/architecture.md says why not another order;
4. replace the file lists by rename (production; :mod:`reconciler.filelists`);
5. files no longer needed become pending deletions, due after ``delete_grace``;
   :func:`delete_due` removes them on a later pass, then the lists are renewed.

Only what differs is touched, so the work is proportional to the change, not
to the tree. When the target holds an earlier compose of the new compose's
chain, the composes' changes files say what differs (nothing else is read);
otherwise the compose's manifest is compared with the state's inventory of the
target. A *repair* publish (after drift was found) compares with the tree
itself, by content for the paths drift named (a damaged inode is the compose's
too), and has each compose file it places checked first (:class:`Sources`: the
healer restores damaged bytes from a good copy into every tree that shared them).
:meth:`Publisher.decide` gathers those facts (reads only) and decides with
:func:`reconciler.changeset.change_set` (pure); :meth:`Publisher.act`
carries the change set out. A new name appears whole and never replaces one (one
``link(2)``; a clone or copy made at a ``.~tmp~`` name, then linked there); a name
that exists is replaced through a ``.~tmp~`` name and a rename, unless it holds the
compose file's bytes already (an adopted tree's package: kept as it is). A clone is
an inode of its own: it holds the compose file's bytes by content, not by inode.
What the inventory does not record is *unmanaged* (:mod:`reconciler.ownership`):
kept, unless the SIG says ``prune`` (:mod:`reconciler.changeset`). :class:`Owner`
gives what a publish makes its owner.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from .changeset import (
    Basis,
    Change,
    ChangeSet,
    FromChanges,
    FromInventory,
    FromTree,
    TreeFacts,
    change_set,
    prune_repos,
)
from .checksums import hash_file
from .composefiles import REPOMD, Changes, SourceFile
from .destination import Destination, Owner, entry_for, holds_bytes, root_lock, same_inode, syncfs
from .errors import LeaseLost, PublishError, UnsafePathError
from .fsutil import Sharer, copy_fsync, tmp_name
from .layout import PublishedTree
from .manifest import source_files
from .names import TMP_SUFFIX
from .state import InventoryEntry, StateDB, UnmanagedEntry
from .vocabulary import ChangeKind, InventoryKind, LinkKind, PublishPhase, Stage

__all__ = ["Owner", "PublishStats", "Publisher", "entry_for", "holds_bytes", "root_lock"]

log = logging.getLogger(__name__)
#: How a publish's files reached the tree, for its log line.
_HOW: dict[LinkKind | None, str] = {
    LinkKind.CLONE: "clones (reflink)",
    LinkKind.HARDLINK: "hardlinks",
    LinkKind.COPY: "copies",
}
#: Why copying is worth a warning: every file is copied (twice the space, slower); under
#: the shipped unit it means the roots are not on one mount.
_COPY_HINT = ": the compose root and {} should be on one mounted filesystem (deploy/README.md)"


@dataclass
class PublishStats:
    files: int = 0
    bytes: int = 0
    pending: int = 0
    how: LinkKind | None = None  # how compose files reached the tree (None: none did)


class Sources(Protocol):
    """What a repair asks before it places compose files: that their bytes are right."""

    def ensure(self, rels: Collection[str], locked: Path) -> None:
        """Make the compose's files ``rels`` hold the bytes its checksums say (the root
        ``locked`` is held by the caller), or raise naming the path."""


def no_fence() -> bool:
    """The fence of a publish (or an apply) no lease guards: ``apply`` on one host."""
    return True


class Publisher:
    """Publishes one compose SIG directory to one target directory of a stage root."""

    def __init__(self, state: StateDB, tree: PublishedTree, owner: Owner | None = None) -> None:
        self.state, self.stage, self.stage_root = state, tree.stage, tree.root
        self.owner = Owner() if owner is None else owner
        self.prefix_key = tree.inventory_prefix  # "mirror/pub/sig/9/core/": inventory paths
        self.target = tree.path
        self.stats = PublishStats()
        # the directories written to, open (each path walked once; no deep path used)
        self.dest = Destination(self.stage_root, self.target, self.owner)
        # clones where the filesystem shares blocks, else hardlinks, else copies; decided
        # with the first file and logged once per tree
        self.sharer = Sharer(f"publishing to {self.target}", _COPY_HINT.format(self.stage_root))
        self._unmanaged: Mapping[str, UnmanagedEntry] = {}  # what decide() knew of
        #: May this process still publish (the leader lease)? Asked before each phase:
        #: a leader whose lease lapsed mid-publish stops before the next phase (above all
        #: before repomd.xml), and the next leader redoes the publish from the start.
        self.fence: Callable[[], bool] = no_fence

    def _place(self, change: Change) -> InventoryEntry:
        """Put a compose file at its name: PLACE gives it a free name straight away (a
        clone or a copy whole, :meth:`Sharer.new`); REPLACE (and PLACE over a taken name)
        goes through a ``.~tmp~`` name and a rename. All of it relative to the open
        directory (:class:`~reconciler.destination.Destination`): no deep path."""
        assert change.file is not None
        src = change.file
        shown = self.target / src.rel
        at = self.dest.dir(shown.parent)
        dst = Path(shown.name)
        if change.kind is ChangeKind.PLACE and not src.is_repomd:
            try:
                self.sharer.new(src.path, dst, lambda p: self.owner.give(p, at, shown), at)
                return self._placed(change.path, dst, at, None)
            except FileExistsError:
                pass  # the name is taken: replaced, found in place or kept, below
        if self._is_symlink(dst, at):
            raise UnsafePathError(f"{shown} is a symlink; refusing to write through it")
        if (self.sharer.kind is not LinkKind.COPY and same_inode(src.path, dst, at)) or holds_bytes(
            dst, src, dir_fd=at
        ):
            # Already in place (a publish interrupted before it recorded its inventory):
            # renaming a second link of the same inode over it would do nothing at all.
            # Once neither clones nor links work here the next step is a copy, a new
            # inode, so the check is not needed (and across devices it cannot hold).
            # Or another inode with the compose file's bytes (a clone placed by an
            # interrupted publish, an adopted tree's package): kept as it is, not a byte,
            # inode or mtime changed, so no mirror refetches it.
            sha1 = hash_file(dst, "sha1", dir_fd=at) if src.is_repomd else None
            return entry_for(change.path, os.stat(dst, dir_fd=at, follow_symlinks=False), sha1)
        tmp = tmp_name(dst)
        checksum = None
        if src.is_repomd:
            checksum = copy_fsync(src.path, tmp, dst_dir=at)
        else:  # a clone or a copy is flushed once, before the first repomd.xml names it
            self.sharer.temp(src.path, tmp, at)
        try:
            self.owner.give(tmp, at, shown)
            os.replace(tmp, dst, src_dir_fd=at, dst_dir_fd=at)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=at)
            raise
        if src.phase is PublishPhase.REPOMD:  # repomd.xml, or its signature after it
            os.fsync(at)
        return self._placed(change.path, dst, at, checksum)

    @staticmethod
    def _is_symlink(name: Path, at: int) -> bool:
        try:
            return stat.S_ISLNK(os.stat(name, dir_fd=at, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            return False

    def _placed(self, key: str, dst: Path, at: int, checksum: str | None) -> InventoryEntry:
        st = os.stat(dst, dir_fd=at, follow_symlinks=False)
        self.stats.files += 1
        self.stats.bytes += st.st_size
        return entry_for(key, st, checksum)

    def publish(
        self,
        source: Path,
        grace: timedelta,
        now: datetime,
        repair: bool = False,
        manifest: Path | None = None,
        changes: Sequence[Changes] | None = None,
        suspect: Collection[str] = (),
        sources: Sources | None = None,
        prune: bool = False,
        unmanaged: Mapping[str, UnmanagedEntry] | None = None,
    ) -> PublishStats:
        """Publish ``source`` (a compose's SIG directory); ``manifest`` spares walking it.

        ``changes`` (oldest first) lead from the compose the target holds to ``source``;
        the caller passes them only when the target's last publish finished, so that its
        inventory is that compose's files. Then only they are read and placed, and no
        directory is swept for temporary files. Otherwise (and always for a ``repair``)
        the compose is compared with the target's whole inventory, or with the tree.
        A repair compares the ``suspect`` paths (inventory paths drift named) by content,
        and ``sources`` checks every compose file it places (and the suspect ones) first.
        ``unmanaged`` (default: as the state's last walk of the target found them) are
        the paths in the target the inventory lacks; ``prune`` retires those of them
        that the SIG's ``publish.prune`` covers (:func:`~reconciler.changeset.change_set`).
        """
        if not source.is_dir():
            raise PublishError(f"{source}: the compose to publish is missing")
        chain = None if repair else changes
        self.dest.sweep = chain is None
        rels = frozenset(p.removeprefix(self.prefix_key) for p in suspect)
        with root_lock(self.stage_root), self.dest:
            self.dest.dir(self.target)
            if repair:
                self._undo_dir_swaps()
            changes_to_make = self.decide(
                source, manifest, repair, chain, rels, prune=prune, unmanaged=unmanaged
            )
            if repair and sources is not None:
                placed = {c.file.rel for c in changes_to_make.places if c.file is not None}
                sources.ensure(placed | rels, self.stage_root)
            self.act(changes_to_make, grace, now)
        self.stats.how = self.sharer.kind
        log.info(
            "published %s to %s %s: %d files changed (%s), %d to delete after the grace",
            source, self.target, changes_to_make.how, self.stats.files,
            _HOW.get(self.stats.how, "none shared"), self.stats.pending,
        )  # fmt: skip
        return self.stats

    def _undo_dir_swaps(self) -> None:
        """A repair: a directory the reconciler published that is a symlink now (to a copy,
        say) is made a directory again, so that its files are compared and placed in it,
        not through the link. Only the link goes; what it points to is not ours."""
        inventory = self.state.inventory.entries(self.stage, self.prefix_key)
        for rel in sorted(k for k, e in inventory.items() if e.kind is InventoryKind.DIR):
            path = self.stage_root / rel
            if path.is_symlink():
                log.warning("repair: %s is a symlink, not the directory published there", path)
                path.unlink()
        self.dest.reset()  # each directory is walked to again

    def decide(
        self,
        source: Path,
        manifest: Path | None,
        repair: bool,
        chain: Sequence[Changes] | None,
        suspect: Collection[str] = (),
        *,
        prune: bool = False,
        unmanaged: Mapping[str, UnmanagedEntry] | None = None,
    ) -> ChangeSet:
        """Gather what the change set is decided from (reads only), and decide it."""
        if unmanaged is None:
            unmanaged = self.state.unmanaged.entries(self.stage, self.prefix_key)
        self._unmanaged = unmanaged
        repos = prune_repos(self.prefix_key, unmanaged) if prune and chain is not None else ()
        if any((source / r / REPOMD).is_file() for r in repos):
            chain = None  # which files to retire needs every file of the compose
        basis: Basis
        if chain is not None:
            basis = FromChanges(tuple(chain))
        else:
            files = tuple(source_files(source, manifest))
            inventory = self.state.inventory.entries(self.stage, self.prefix_key)
            if repair:
                basis = FromTree(files, inventory, self._tree_facts(files, suspect))
            else:
                basis = FromInventory(files, inventory)
        pending = {p.relpath for p in self.state.pending.all(self.stage)}
        return change_set(self.prefix_key, basis, pending, unmanaged, prune)

    def _tree_facts(self, files: Sequence[SourceFile], suspect: Collection[str]) -> TreeFacts:
        """Which compose files the tree holds with the same bytes; every file in the tree."""
        return TreeFacts(
            frozenset(
                f.rel for f in files if holds_bytes(self.target / f.rel, f, f.rel in suspect)
            ),
            frozenset(_walk_files(self.stage_root, self.target)),
        )

    def act(self, changes: ChangeSet, grace: timedelta, now: datetime) -> None:
        """Carry out ``changes`` in the mirror-safe order (under the root lock). A vault
        deletes nothing, ever: what the new compose no longer names stays (and stays in
        the inventory, so that the vault's lists name it)."""
        pend = [] if self.stage is Stage.VAULT else list(changes.pend)
        if changes.adopt:  # unmanaged files to retire (prune): owned from now on, then pended
            adopted, gone = [], set()
            for k in changes.adopt:
                try:
                    adopted.append(entry_for(k, (self.stage_root / k).lstat()))
                except FileNotFoundError:  # went since the walk that found it
                    gone.add(k)
            self.state.inventory.apply_changes(self.stage, adopted, [])
            self.state.unmanaged.forget(self.stage, changes.adopt)
            pend = [p for p in pend if p not in gone]
        self.state.pending.cancel(self.stage, list(changes.cancel))
        for phase in PublishPhase:
            if not self.fence():
                raise LeaseLost(f"stopped publishing to {self.target} before its {phase} files:"
                                " the leader lease lapsed")  # fmt: skip
            if phase is PublishPhase.REPOMD and self.sharer.unsynced:
                syncfs(self.stage_root)  # clones, copies durable before a repomd.xml names them
            batch = [self._place(c) for c in changes.phase(phase)]
            self.state.inventory.apply_changes(self.stage, batch, [])
            self._no_longer_unmanaged(e.relpath for e in batch)
        dirs = self.dest.entries()
        self.state.inventory.apply_changes(self.stage, dirs, [])
        self._no_longer_unmanaged(e.relpath for e in dirs)
        if pend:
            self.state.pending.add(self.stage, pend, now + grace, "superseded")
            self.stats.pending = len(pend)

    def _no_longer_unmanaged(self, relpaths: Iterable[str]) -> None:
        """Paths the inventory records now leave the unmanaged rows (a path is one or the
        other: the mirrors' lists name it once)."""
        known = [p for p in relpaths if p in self._unmanaged]
        if known:
            self.state.unmanaged.forget(self.stage, known)


def _walk_files(stage_root: Path, top: Path) -> Iterator[str]:
    for dirpath, _dirs, names in os.walk(top):
        for name in names:
            if not name.endswith(TMP_SUFFIX):
                yield str((Path(dirpath) / name).relative_to(stage_root))
