"""Retiring what was superseded: the pending deletions that are due are deleted (step 5
of the mirror-safe order, docs/architecture.md), and the production file lists are
renewed from the state (step 4, and again after deletions).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from .dirfds import DirHandles
from .errors import PublishError, UnsafePathError
from .facts import TargetKey
from .filelists import (
    CHECKSUMMED,
    FILELIST,
    TIMELIST,
    TIMELIST_VAULT,
    contents_digest,
    file_sha1,
    patch_all,
    read_lists,
    render_all,
    write_if_changed,
)
from .layout import PublishedTree
from .publishing import PublishStats, entry_for, root_lock
from .state import ListingRow, StateDB
from .vocabulary import InventoryKind, Stage

log = logging.getLogger(__name__)


def delete_due(state: StateDB, stage: Stage, stage_root: Path, now: datetime) -> int:
    """Delete the pending deletions of ``stage`` whose grace has passed; prune empty dirs.

    Each directory is opened once from the root (:class:`~reconciler.dirfds.DirHandles`:
    a symlink out of the root is refused on the way) and each file is unlinked by its name
    in it: no deep path is looked up (network storage)."""
    due = [p for p in state.pending.due(now) if p.stage is stage]
    if not due:
        return 0
    removed: list[str] = []
    touched: set[PurePosixPath] = set()
    with root_lock(stage_root), DirHandles(stage_root) as handles:
        for item in due:
            rel = PurePosixPath(item.relpath)
            if rel.is_absolute() or ".." in rel.parts or not rel.name:
                continue
            try:
                at = handles.open(rel.parent)
            except UnsafePathError:
                log.warning("not deleting %s: it resolves outside %s", stage_root / rel, stage_root)
                continue
            except (FileNotFoundError, PublishError):  # its directory is gone: so is it
                removed.append(item.relpath)
                continue
            try:
                if stat.S_ISDIR(os.stat(rel.name, dir_fd=at, follow_symlinks=False).st_mode):
                    continue
                os.unlink(rel.name, dir_fd=at)
            except FileNotFoundError:
                pass
            removed.append(item.relpath)
            touched.add(rel.parent)
        removed_dirs, changed_dirs = _prune_empty_dirs(handles, touched)
        changed = [entry_for(str(d), handles.lstat(d)) for d in changed_dirs]
    state.inventory.apply_changes(stage, changed, [*removed, *(str(d) for d in removed_dirs)])
    # a directory a walk found unmanaged goes from those rows too when it is emptied here
    state.unmanaged.forget(stage, [str(d) for d in removed_dirs])
    state.pending.remove([p.id for p in due])
    return len(removed)


def retire_target(
    state: StateDB, tree: PublishedTree, due_at: datetime, reason: str
) -> PublishStats:
    """Retire the target of a release removed from the desired state (endoflife): every
    path the reconciler published there (its inventory's files; each directory goes when
    :func:`delete_due` empties it) becomes a pending deletion, due at ``due_at``; unmanaged
    paths are not in the inventory and stay. The target is then forgotten (no publish, no
    drift check): what it held shows as pending deletions until they are gone. Pending
    first, so that a crash in between leaves the target to retire again, not files that
    nothing would ever delete."""
    entries = state.inventory.entries(tree.stage, tree.inventory_prefix)
    files = {p: e for p, e in entries.items() if e.kind is not InventoryKind.DIR}
    state.pending.add(tree.stage, sorted(files), due_at, reason)
    state.targets.clear(tree.sig, tree.release, tree.stage)
    state.sources.set_drift(TargetKey(tree.stage, tree.sig, tree.release), ())
    return PublishStats(len(files), sum(e.size for e in files.values()), len(files))


def _prune_empty_dirs(
    handles: DirHandles, dirs: Iterable[PurePosixPath]
) -> tuple[list[PurePosixPath], list[PurePosixPath]]:
    """Remove empty directories upwards (never the root); return (removed, still-present
    ones touched), relative to the root."""
    top = PurePosixPath(".")
    removed: list[PurePosixPath] = []
    remaining: set[PurePosixPath] = set()
    for start in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        d = start
        while d != top:
            handles.forget(d)  # closed before it goes
            try:
                os.rmdir(d.name, dir_fd=handles.open(d.parent))
            except (FileNotFoundError, PublishError):  # removed already (from a deeper one)
                break
            except OSError:
                remaining.add(d)
                break
            removed.append(d)
            d = d.parent
    return removed, sorted(remaining.difference(removed))  # one may have emptied later


def write_production_filelists(
    state: StateDB,
    production_root: Path,
    category: str,
    *,
    owner: int | None = None,
    group: int | None = None,
    stage: Stage = Stage.PRODUCTION,
) -> list[str]:
    """Step 4: renew the file lists at ``<root>/<category>/`` from the state (no walk).

    The lists name what the inventory holds and the unmanaged paths the last walks found
    (a quick-fedora-mirror client deletes what its list does not name: an adopted tree's
    images and keys must be listed); a path in both is listed as the inventory has it.
    The time of each entry is max(mtime, ctime) as the state recorded it. When the lists
    in the tree are the ones last written (the state keeps their digest) and the state
    knows which paths changed since, only those are patched in
    (:func:`~reconciler.filelists.patch_all`); otherwise everything is listed. Every list
    written gets ``owner`` and ``group`` (``publish.owner``/``group``; ``None``: ours).

    ``stage`` VAULT writes the vault's lists instead (``category``: where they are,
    ``mirror/vault``): ``fullfilelist`` and ``fullfiletimelist-vault``, the names
    ``sync-file-list-vault.sh`` writes, from the vault's inventory and walks.
    """
    top = production_root / category
    # the category directory is opened one name at a time from the root (which refuses a
    # symlink out of it), and every list is read and written by its name in it: no deep
    # path is resolved (network storage: each component a round trip)
    with DirHandles(production_root) as handles:
        try:
            top_fd = handles.open(category)
        except (FileNotFoundError, PublishError):  # no category there (yet): nothing listed
            return []
        lists = _Lists(top, PurePosixPath(category), handles, stage)
        prefix = f"{category}/"
        timelist = TIMELIST_VAULT if stage is Stage.VAULT else TIMELIST
        contents = _patched_lists(state, lists, prefix, top_fd, timelist)
        if contents is None:
            contents = render_all(_listing(state, lists, prefix))
        digest = contents_digest(contents)
        if stage is Stage.VAULT:  # the same text under the vault's names; the polled one last
            contents = {FILELIST: contents[FILELIST], TIMELIST_VAULT: contents[TIMELIST]}
        written = write_if_changed(top, contents, owner=owner, group=group, top_fd=top_fd)
    state.inventory.listing_written(stage, digest)
    return written


class _Lists(NamedTuple):
    """The category directory of the lists: its path, its path from the root, the
    open directories under the root, and whose lists they are (production's or the
    vault's)."""

    top: Path
    rel: PurePosixPath
    handles: DirHandles
    stage: Stage


def _listing(state: StateDB, top: _Lists, prefix: str) -> list[ListingRow]:
    """The rows of every path under ``prefix``: the inventory's, and the unmanaged ones
    of paths the inventory does not have."""
    inventory = state.inventory.listing(top.stage, prefix)
    unmanaged = _checksummed(top, state.unmanaged.listing(top.stage, prefix))
    if not unmanaged:
        return inventory
    rows = {row[0]: row for row in unmanaged}
    rows.update((row[0], row) for row in inventory)
    return list(rows.values())


def _listing_of(
    state: StateDB, top: _Lists, prefix: str, under: list[str]
) -> dict[str, ListingRow]:
    """:func:`_listing`'s rows of the paths ``under`` that have one, by listed path."""
    rows = {
        row[0]: row
        for row in _checksummed(top, state.unmanaged.listing_of(top.stage, prefix, under))
    }
    rows.update((row[0], row) for row in state.inventory.listing_of(top.stage, prefix, under))
    return rows


def _checksummed(top: _Lists, rows: list[ListingRow]) -> list[ListingRow]:
    """``rows`` (unmanaged ones: the state keeps no checksum of those) with the SHA1 the
    format gives every ``repomd.xml``, read from the tree (a few small files: an adopted
    repo that no compose replaced). One that is gone, or not inside ``top``, gets none."""
    out: list[ListingRow] = []
    for path, kind, size, mtime, sha1 in rows:
        found = sha1
        if sha1 is None and kind == InventoryKind.FILE and path.endswith(CHECKSUMMED):
            rel = top.rel / path
            if rel.name == CHECKSUMMED:
                try:
                    found = file_sha1(Path(rel.name), top.handles.open(rel.parent))
                except (FileNotFoundError, PublishError, UnsafePathError):  # gone, out, in the way
                    found = None
        out.append((path, kind, size, mtime, found))
    return out


def _patched_lists(
    state: StateDB, top: _Lists, prefix: str, top_fd: int, timelist: str
) -> dict[str, str] | None:
    changed = state.inventory.listing_changes(top.stage)
    recorded = state.inventory.listing_digest(top.stage)
    if changed is None:
        why = "the state does not know what changed"
    elif recorded is None:
        why = "none written from the state yet"
    else:
        current = read_lists(top.top, top_fd, timelist)
        if current is not None and current.digest == recorded:
            under = sorted(p for p in changed if p.startswith(prefix))
            rows = _listing_of(state, top, prefix, under)
            start = len(prefix)
            patched = patch_all(
                current.filelist, current.timelist, {p[start:]: rows.get(p[start:]) for p in under}
            )
            if patched is not None:
                log.info("file lists of %s: %d changed path(s) patched in", top.top, len(under))
                return patched
        why = "the lists in the tree are not the ones last written"
    log.info("file lists of %s: listing everything the state knows (%s)", top.top, why)
    return None
