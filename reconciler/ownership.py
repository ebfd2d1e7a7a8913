"""Who owns each path under a published SIG directory (docs/architecture.md,
"Ownership of published paths"): the reconciler owns exactly what its inventory
records; everything else is *unmanaged*, found here by a walk of the directory.

Reads only. The caller records the result (``StateDB.unmanaged.replace``).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Collection
from pathlib import Path, PurePosixPath

from .filelistformat import NEVER_LISTED
from .layout import PublishedTree
from .names import TMP_SUFFIX
from .pathglob import PathPatterns
from .state import UnmanagedEntry
from .vocabulary import InventoryKind

log = logging.getLogger(__name__)


#: what a file list cannot carry in a name (filelistformat refuses it): such a path is
#: not a row; it is logged instead (a mirror cannot be told of it either way)
_UNLISTABLE = frozenset("\t\n\r")


def _listable(name: str, path: Path) -> bool:
    if _UNLISTABLE.isdisjoint(name):
        return True
    log.warning("%r: a name the mirrors' file lists cannot carry; not listed", str(path))
    return False


def _kind(mode: int) -> InventoryKind:
    if stat.S_ISDIR(mode):
        return InventoryKind.DIR
    return InventoryKind.LINK if stat.S_ISLNK(mode) else InventoryKind.FILE


def walk_unmanaged(
    tree: PublishedTree, owned: Collection[str], patterns: PathPatterns
) -> list[UnmanagedEntry]:
    """Every path under ``tree``'s SIG directory (files, symlinks, directories) that
    ``owned`` (inventory paths) lacks, but temporary files; ``ignored`` where a pattern
    covers its path inside the SIG directory. Symlinks are not followed."""
    top = tree.path
    if not top.is_dir() or top.is_symlink():
        return []
    prefix = tree.inventory_prefix
    found: list[UnmanagedEntry] = []
    for dirpath, dirs, files in os.walk(top):
        here = Path(dirpath)
        dirs[:] = [d for d in dirs if _listable(d, here / d)]  # nor anything under it
        for name in (*dirs, *files):
            if name.endswith(TMP_SUFFIX) or not (name in dirs or _listable(name, here / name)):
                continue
            path = here / name
            rel = str(path.relative_to(top))
            if prefix + rel in owned:
                continue
            try:
                st = path.lstat()
            except FileNotFoundError:  # went while we looked
                continue
            found.append(
                UnmanagedEntry(
                    prefix + rel, _kind(st.st_mode), st.st_size, st.st_mtime_ns,
                    st.st_ctime_ns, patterns.matches(rel),
                )
            )  # fmt: skip
    return found


def walk_rest(
    root: Path, category: str, owned: Collection[str], walked: Collection[str]
) -> list[UnmanagedEntry]:
    """Everything under ``<root>/<category>`` that neither the inventory (``owned``) nor a
    SIG directory's own walk covers: SIGs and releases no desired state names (yet),
    anything a person put beside them. The file lists must name these too, or a
    quick-fedora-mirror client deletes them. ``walked`` are the inventory prefixes
    (``mirror/pub/sig/9/core/``) of the SIG directories walked on their own: not entered.
    The lists themselves and temporary files are not rows."""
    top = root.joinpath(*PurePosixPath(category).parts)
    if not top.is_dir() or top.is_symlink():
        return []
    skip = {w.removesuffix("/") for w in walked}
    found: list[UnmanagedEntry] = []
    for dirpath, dirs, files in os.walk(top):
        here = Path(dirpath)
        rel_here = str(here.relative_to(root))
        dirs[:] = [d for d in dirs if f"{rel_here}/{d}" not in skip and _listable(d, here / d)]
        for name in (*dirs, *files):
            if name.endswith(TMP_SUFFIX) or (here == top and name in NEVER_LISTED):
                continue
            if name not in dirs and not _listable(name, here / name):
                continue
            relpath = f"{rel_here}/{name}"
            if relpath in owned:
                continue
            try:
                st = (here / name).lstat()
            except FileNotFoundError:
                continue
            kind = _kind(st.st_mode)
            found.append(UnmanagedEntry(relpath, kind, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return found
