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

import fcntl
import logging
import os
import stat
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
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
from .errors import LockHeldError, PublishError, UnsafePathError
from .fsutil import DIR_MODE, Sharer, copy_fsync, fsync_dir, inside, same_blocks, tmp_name
from .layout import PublishedTree
from .manifest import source_files
from .names import TMP_SUFFIX
from .state import InventoryEntry, StateDB, UnmanagedEntry
from .vocabulary import ChangeKind, InventoryKind, LinkKind, PublishPhase, Stage

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


def entry_for(relpath: str, st: os.stat_result, checksum: str | None = None) -> InventoryEntry:
    kind = (
        InventoryKind.DIR
        if stat.S_ISDIR(st.st_mode)
        else InventoryKind.LINK
        if stat.S_ISLNK(st.st_mode)
        else InventoryKind.FILE
    )
    return InventoryEntry(relpath, kind, st.st_size, st.st_mtime_ns, st.st_ino, checksum,
                          st.st_ctime_ns)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Owner:
    """``publish.owner`` and ``publish.group``: what a publish gives every file it places
    and every directory it creates or publishes (None: leave that id as it is)."""

    uid: int | None = None
    gid: int | None = None

    def give(self, path: Path) -> None:
        """Give ``path`` (not followed) the owner and group unless it has them (then its
        ctime, which the mirrors' lists carry, stays); PublishError naming both if not."""
        if self.uid is None and self.gid is None:
            return
        st = path.lstat()
        uid = st.st_uid if self.uid is None else self.uid
        gid = st.st_gid if self.gid is None else self.gid
        if (st.st_uid, st.st_gid) == (uid, gid):
            return
        try:
            os.lchown(path, uid, gid)
        except OSError as exc:
            raise PublishError(
                f"{path}: cannot give it owner {self.uid} and group {self.gid} "
                f"(publish.owner, publish.group): {exc.strerror}"
            ) from exc


class Sources(Protocol):
    """What a repair asks before it places compose files: that their bytes are right."""

    def ensure(self, rels: Collection[str], locked: Path) -> None:
        """Make the compose's files ``rels`` hold the bytes its checksums say (the root
        ``locked`` is held by the caller), or raise naming the path."""


@contextmanager
def root_lock(root: Path) -> Iterator[None]:
    """An exclusive flock on the stage root directory itself: one publisher per tree."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeldError(f"another publish to {root} is running") from None
        yield
    finally:
        os.close(fd)


class Publisher:
    """Publishes one compose SIG directory to one target directory of a stage root."""

    def __init__(self, state: StateDB, tree: PublishedTree, owner: Owner = Owner()) -> None:
        self.state, self.stage, self.stage_root = state, tree.stage, tree.root
        self.owner = owner
        self.prefix_key = tree.inventory_prefix  # "mirror/pub/sig/9/core/": inventory paths
        self.target = tree.path
        self.stats = PublishStats()
        self._dirs_seen: set[Path] = set()
        self._checked: set[Path] = set()  # directories (and their parents) known to be safe
        self._sweep = True  # remove leftover temporary files in the directories written to
        # clones where the filesystem shares blocks, else hardlinks, else copies; decided
        # with the first file and logged once per tree
        self.sharer = Sharer(f"publishing to {self.target}", _COPY_HINT.format(self.stage_root))
        self._unmanaged: Mapping[str, UnmanagedEntry] = {}  # what decide() knew of

    def _safe_dir(self, directory: Path) -> None:
        """Create ``directory`` (once per publish); refuse one that resolves outside the root.

        Leftover temporary files of an interrupted publish in it are removed.
        """
        if directory in self._dirs_seen:
            return
        current = self.stage_root
        for part in directory.relative_to(self.stage_root).parts:
            current = current / part
            if current in self._checked:
                continue
            try:
                st = current.lstat()
            except FileNotFoundError:
                current.mkdir(DIR_MODE)
                self.owner.give(current)
                self._checked.add(current)
                continue
            if stat.S_ISLNK(st.st_mode) and not inside(self.stage_root, current):
                raise UnsafePathError(
                    f"{current} is a symlink out of {self.stage_root}; refusing to write through it"
                )
            if not stat.S_ISLNK(st.st_mode) and not stat.S_ISDIR(st.st_mode):
                raise PublishError(f"{current} is in the way: it should be a directory")
            if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o022:  # made by an older version
                current.chmod(stat.S_IMODE(st.st_mode) & ~0o022)
            if stat.S_ISDIR(st.st_mode) and current.is_relative_to(self.target):
                self.owner.give(current)  # a directory of the SIG's tree: published by us
            self._checked.add(current)
        if self._sweep:
            with os.scandir(directory) as it:
                for entry in it:
                    if entry.name.endswith(TMP_SUFFIX) and entry.is_file(follow_symlinks=False):
                        Path(entry.path).unlink(missing_ok=True)
        self._dirs_seen.add(directory)

    def _place(self, change: Change) -> InventoryEntry:
        """Put a compose file at its name: PLACE gives it a free name straight away (a
        clone or a copy whole, :meth:`Sharer.new`); REPLACE (and PLACE over a taken name)
        goes through a ``.~tmp~`` name and a rename."""
        assert change.file is not None
        src = change.file
        dst = self.target / src.rel
        self._safe_dir(dst.parent)
        if change.kind is ChangeKind.PLACE and not src.is_repomd:
            try:
                self.sharer.new(src.path, dst, self.owner.give)
                return self._placed(change.path, dst, None)
            except FileExistsError:
                pass  # the name is taken: replaced, found in place or kept, below
        if dst.is_symlink():
            raise UnsafePathError(f"{dst} is a symlink; refusing to write through it")
        if (self.sharer.kind is not LinkKind.COPY and _same_inode(src.path, dst)) or holds_bytes(
            dst, src
        ):
            # Already in place (a publish interrupted before it recorded its inventory):
            # renaming a second link of the same inode over it would do nothing at all.
            # Once neither clones nor links work here the next step is a copy, a new
            # inode, so the check is not needed (and across devices it cannot hold).
            # Or another inode with the compose file's bytes (a clone placed by an
            # interrupted publish, an adopted tree's package): kept as it is, not a byte,
            # inode or mtime changed, so no mirror refetches it.
            sha1 = hash_file(dst, "sha1") if src.is_repomd else None
            return entry_for(change.path, dst.lstat(), sha1)
        tmp = tmp_name(dst)
        checksum = None
        if src.is_repomd:
            checksum = copy_fsync(src.path, tmp)
        else:  # a clone or a copy is flushed once, before the first repomd.xml names it
            self.sharer.temp(src.path, tmp)
        try:
            self.owner.give(tmp)
            tmp.replace(dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if src.phase is PublishPhase.REPOMD:  # repomd.xml, or its signature after it
            fsync_dir(dst.parent)
        return self._placed(change.path, dst, checksum)

    def _placed(self, key: str, dst: Path, checksum: str | None) -> InventoryEntry:
        st = dst.lstat()
        self.stats.files += 1
        self.stats.bytes += st.st_size
        return entry_for(key, st, checksum)

    def _dir_entries(self) -> list[InventoryEntry]:
        """Inventory entries of the directories written to, and their parents up to the root."""
        return [
            entry_for(str(d.relative_to(self.stage_root)), d.lstat()) for d in sorted(self._checked)
        ]

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
        self._sweep = chain is None
        rels = frozenset(p.removeprefix(self.prefix_key) for p in suspect)
        with root_lock(self.stage_root):
            self._safe_dir(self.target)
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
        self._checked.clear()  # _safe_dir looks at the path again

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
            if phase is PublishPhase.REPOMD and self.sharer.unsynced:
                _syncfs(self.stage_root)  # clones, copies durable before a repomd.xml names them
            batch = [self._place(c) for c in changes.phase(phase)]
            self.state.inventory.apply_changes(self.stage, batch, [])
            self._no_longer_unmanaged(e.relpath for e in batch)
        dirs = self._dir_entries()
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


def holds_bytes(dst: Path, src: SourceFile, suspect: bool = False) -> bool:
    """Whether ``dst`` holds ``src``'s bytes: the same inode does (a hardlink), and so does
    a clone that shares every block with it still (nobody wrote into either: known
    without reading them), unless drift named it (bytes written in place are in the
    compose's inode too); then, and for another inode (a copy, a clone written into),
    its digest decides (the manifest's, else the compose copy's)."""
    try:
        st = dst.lstat()
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_size != src.size:
        return False
    if not suspect and (st.st_ino == src.path.stat().st_ino or same_blocks(dst, src.path)):
        return True
    if src.sha256 is not None:
        return hash_file(dst) == src.sha256
    return not suspect and hash_file(dst) == hash_file(src.path)


def _syncfs(path: Path) -> None:
    """Flush the filesystem holding ``path`` (syncfs(2)); all filesystems if unavailable."""
    import ctypes  # only when copies were made

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if getattr(libc, "syncfs", None) is None or libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def _same_inode(a: Path, b: Path) -> bool:
    try:
        sa, sb = a.stat(), b.lstat()
    except FileNotFoundError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _walk_files(stage_root: Path, top: Path) -> Iterator[str]:
    for dirpath, _dirs, names in os.walk(top):
        for name in names:
            if not name.endswith(TMP_SUFFIX):
                yield str((Path(dirpath) / name).relative_to(stage_root))
