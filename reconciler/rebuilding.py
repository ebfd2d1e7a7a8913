"""Rebuild what can be rebuilt of the state database from the trees.

Used when the database is lost or corrupt. The damaged file is kept (renamed
aside, never deleted). What each staging and production target holds is found
by comparing its ``repomd.xml`` files with those of the composes on disk; the
inventory of each target is scanned again. History and stage times cannot be
recovered: the stage events get the time of the rebuild.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from .composemeta import list_composes
from .facts import TargetKey
from .hostconfig import HostConfig
from .layout import ComposeTree, PublishedTree
from .names import TMP_SUFFIX
from .spec import variants_of
from .specfile import load_spec
from .state import InventoryEntry, StateDB, TargetRecord
from .vocabulary import PUBLISHED_STAGES, ComposeStatus, InventoryKind


def check_state(host: HostConfig) -> str:
    with StateDB.open(host.state_dir, create=False, check=True) as state:
        return (
            f"{state.path}: ok (schema version {state.schema_version}, "
            f"{len(state.targets.all())} targets, {len(state.history.entries())} history entries)"
        )


def _move_aside(database: Path) -> list[str]:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    moved = []
    for suffix in ("", "-wal", "-shm"):
        path = database.with_name(f"{database.name}{suffix}")
        if path.exists():
            aside = path.with_name(f"{path.name}.damaged-{stamp}")
            path.rename(aside)
            moved.append(f"kept the old {path.name} as {aside}")
    return moved


def _matching_compose(tree: ComposeTree, target: Path, variants: list[str]) -> str | None:
    """The newest finished compose whose every published repomd.xml equals the target's."""
    published = {v: (target / v / "repodata" / "repomd.xml") for v in variants}
    present = {v: p.read_bytes() for v, p in published.items() if p.is_file()}
    if not present:
        return None
    for c in reversed(list_composes(tree)):
        if c.status is not ComposeStatus.FINISHED:
            continue
        sig_dir = tree.sig_dir(c.compose_id)
        if all(
            (sig_dir / v / "repodata" / "repomd.xml").is_file()
            and (sig_dir / v / "repodata" / "repomd.xml").read_bytes() == data
            for v, data in present.items()
        ):
            return c.compose_id
    return None


def _scan_inventory(target: PublishedTree) -> list[InventoryEntry]:
    stage_root_dir = target.root
    entries = []
    for dirpath, _dirs, files in os.walk(target.path):
        for name in files:
            if name.endswith(TMP_SUFFIX):
                continue
            path = Path(dirpath) / name
            st = path.lstat()
            rel = str(path.relative_to(stage_root_dir))
            entries.append(
                InventoryEntry(rel, InventoryKind.FILE, st.st_size, st.st_mtime_ns, st.st_ino, None)
            )
    return entries


def rebuild_state(host: HostConfig, spec_dir: Path | None) -> list[str]:
    """Move the old database aside and rebuild targets and inventories from the trees."""
    spec = load_spec(spec_dir or host.layout.checkout)
    lines = _move_aside(host.layout.database)
    now = datetime.now(UTC)
    category = spec.defaults.publish.category
    with StateDB.open(host.state_dir) as state:
        for sig_name, sig in sorted(spec.sigs.items()):
            for rel_name, rel in sorted(sig.releases.items()):
                tree = host.compose_tree(sig_name, rel_name)
                variants = [str(v.rel_dir) for v in variants_of(rel)]
                for stage in PUBLISHED_STAGES:
                    published = host.published(category, stage, sig_name, rel_name)
                    target = published.path
                    if not target.is_dir():
                        continue
                    state.inventory.replace(
                        stage, published.inventory_prefix, _scan_inventory(published)
                    )
                    found = _matching_compose(tree, target, variants)
                    if found is None:
                        lines.append(
                            f"{sig_name} {rel_name} {stage}: {target} matches no "
                            "finished compose; the next apply republishes it"
                        )
                        continue
                    state.targets.set(TargetRecord(sig_name, rel_name, stage, found, now, None))
                    # the inventory is the tree as found, with files whose deletion was
                    # pending: the next publish compares everything, not a compose's changes
                    state.targets.mark_publishing(TargetKey(stage, sig_name, rel_name), None)
                    lines.append(f"{sig_name} {rel_name} {stage}: holds {found}")
    lines.append(f"rebuilt {host.layout.database} (history could not be recovered)")
    return lines
