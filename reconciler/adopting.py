"""Adopting a published tree the reconciler has no record of (made by the old scripts,
or kept when the state database was lost): a *baseline* of what it owns there, taken
without changing a byte (docs/architecture.md, "Ownership of published paths").

The reconciler owns exactly what it published. Of a tree it did not publish, it can
own only what it would have published itself: the files that are, path for path, the
files of a compose (same size, and the same inode or the same SHA-256). Those, and
the directories that hold them, become the target's inventory; everything else is
recorded as unmanaged (kept, listed for mirrors, reported, never deleted unless
``publish.prune`` says so for old packages and metadata). When every ``repomd.xml``
of the compose is among the owned files, the target holds that compose.

:func:`take_baseline` reads only; :func:`record_baseline` writes the state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath

from .checksums import hash_file
from .composefiles import SourceFile
from .composemeta import list_composes
from .errors import ReconcilerError
from .facts import TargetKey
from .hostconfig import HostConfig
from .layout import ComposeTree, PublishedTree
from .manifest import source_files
from .ownership import walk_rest, walk_unmanaged
from .pathglob import PathPatterns
from .publishing import entry_for, holds_bytes
from .spec import ReleaseSpec, Spec
from .state import InventoryEntry, StateDB, TargetRecord, UnmanagedEntry
from .vocabulary import PUBLISHED_STAGES, ComposeStatus, InventoryKind, Stage


@dataclass(frozen=True)
class Baseline:
    """What a walk of one target found: owned (the compose's own files) and the rest."""

    target: PublishedTree
    compose_id: str | None  # the compose the tree was compared with (None: none)
    holds: bool  # every repomd.xml of that compose is in the tree, byte for byte
    owned: tuple[InventoryEntry, ...]
    unmanaged: tuple[UnmanagedEntry, ...]

    @property
    def owned_files(self) -> int:
        return sum(1 for e in self.owned if e.kind is not InventoryKind.DIR)

    def describe(self) -> str:
        t = self.target
        files = [e for e in self.unmanaged if e.kind is not InventoryKind.DIR]
        reported = [e for e in files if not e.ignored]
        ignored = [e for e in files if e.ignored]
        against = f"compared with {self.compose_id}" if self.compose_id else "no compose to compare"
        holds = f"; holds {self.compose_id}" if self.holds else ""
        return (
            f"{t.sig} {t.release} {t.stage}: {self.owned_files} file(s) owned ({against}){holds}; "
            f"{len(reported)} unmanaged file(s) kept, {len(ignored)} covered by publish.unmanaged"
        )


def compose_files(tree: ComposeTree, compose_id: str) -> list[SourceFile]:
    """The files of a compose's SIG directory (its manifest, else a walk)."""
    return source_files(tree.sig_dir(compose_id), tree.manifest(compose_id))


def newest_finished(tree: ComposeTree) -> str | None:
    done = [c for c in list_composes(tree) if c.status is ComposeStatus.FINISHED]
    return done[-1].compose_id if done else None


def take_baseline(
    target: PublishedTree,
    files: Sequence[SourceFile],
    compose_id: str | None,
    patterns: PathPatterns,
) -> Baseline:
    """Walk ``target`` (reads only): the files of the compose ``files`` that it holds with
    the same bytes are owned, with every directory between them and the SIG directory."""
    owned: dict[str, InventoryEntry] = {}
    repomds = [f for f in files if f.is_repomd]
    held_repomds = 0
    for f in files:
        path = target.path / f.rel
        if not holds_bytes(path, f):
            continue
        relpath = target.inventory_prefix + f.rel
        sha1 = hash_file(path, "sha1") if f.is_repomd else None
        owned[relpath] = entry_for(relpath, path.lstat(), sha1)
        held_repomds += f.is_repomd
        parent = path.parent
        while parent != target.path and target.path in parent.parents:
            key = str(parent.relative_to(target.root))
            if key in owned:
                break
            owned[key] = entry_for(key, parent.lstat())
            parent = parent.parent
    unmanaged = walk_unmanaged(target, owned.keys(), patterns)
    holds = compose_id is not None and bool(repomds) and held_repomds == len(repomds)
    return Baseline(target, compose_id, holds, tuple(owned.values()), tuple(unmanaged))


def record_baseline(state: StateDB, baseline: Baseline, now: datetime) -> None:
    """Make ``baseline`` the state's knowledge of its target: the inventory, the
    unmanaged paths, and (when it holds its compose) what the target holds. The next
    publish compares with the whole inventory, not with a compose's changes."""
    t = baseline.target
    owned_dirs_first: Iterable[InventoryEntry] = sorted(baseline.owned, key=lambda e: e.relpath)
    state.inventory.replace(t.stage, t.inventory_prefix, owned_dirs_first)
    state.unmanaged.replace(t.stage, t.inventory_prefix, baseline.unmanaged, now)
    key = TargetKey(t.stage, t.sig, t.release)
    if baseline.holds and baseline.compose_id is not None:
        state.targets.set(TargetRecord(t.sig, t.release, t.stage, baseline.compose_id, now, None))
    state.targets.mark_publishing(key, None)


def desired_compose(tree: ComposeTree, ref: str | None) -> str | None:
    """The compose a stage's ref names, if it is on disk: ``latest`` is the newest
    finished one; ``None`` (nothing wanted, production's default) is none."""
    if ref is None:
        return None
    if ref == "latest":
        return newest_finished(tree)
    return ref if tree.sig_dir(ref).is_dir() else None


@dataclass(frozen=True)
class AdoptRequest:
    """Which targets ``reconciler adopt`` takes a baseline of (None: every one)."""

    sig: str | None = None
    release: str | None = None
    stage: Stage | None = None
    compose_id: str | None = None  # compare with this compose instead of the desired one
    dry_run: bool = False


def adopt(
    host: HostConfig, spec: Spec, state: StateDB, request: AdoptRequest, now: datetime
) -> list[str]:
    """Take (and, unless a dry run, record) the baseline of each target ``request``
    names whose tree exists and that the state has no inventory of. One line each."""
    lines: list[str] = []
    category = spec.defaults.publish.category
    walked: list[str] = []
    for sig_name, sig in sorted(spec.sigs.items()):
        if request.sig not in (None, sig_name):
            continue
        for rel_name, rel in sorted(sig.releases.items()):
            if request.release not in (None, rel_name):
                continue
            compose = host.compose_tree(sig_name, rel_name)
            for stage in PUBLISHED_STAGES:
                if request.stage not in (None, stage):
                    continue
                target = host.published(category, stage, sig_name, rel_name)
                if stage is Stage.PRODUCTION:
                    walked.append(target.inventory_prefix)
                line = _adopt_one(state, spec, compose, target, rel, request, now)
                if line:
                    lines.append(line)
    if not lines:
        lines.append("nothing to adopt: no published tree matches")
    if not request.dry_run and request.stage in (None, Stage.PRODUCTION):
        lines.append(_adopt_rest(host, state, category, walked, now))
    return lines


def _adopt_rest(
    host: HostConfig, state: StateDB, category: str, walked: list[str], now: datetime
) -> str:
    """Production's category outside the desired targets (SIGs and releases no desired
    state names yet): unmanaged, so that the file lists keep naming them for mirrors."""
    prefix = f"{PurePosixPath(category)}/"
    owned = state.inventory.entries(Stage.PRODUCTION, prefix).keys()
    rest = walk_rest(host.roots.production, category, owned, walked)
    state.unmanaged.replace(Stage.PRODUCTION, prefix, rest, now, walked)
    files = sum(1 for e in rest if e.kind is not InventoryKind.DIR)
    return f"production outside the desired targets: {files} unmanaged file(s) kept"


def _adopt_one(
    state: StateDB,
    spec: Spec,
    compose: ComposeTree,
    target: PublishedTree,
    rel: ReleaseSpec,
    request: AdoptRequest,
    now: datetime,
) -> str | None:
    name = f"{target.sig} {target.release} {target.stage}"
    if not target.path.is_dir() or target.path.is_symlink():
        return None
    known = state.inventory.entries(target.stage, target.inventory_prefix)
    if known:
        return f"{name}: already managed ({len(known)} published paths): left as it is"
    cid = request.compose_id or desired_compose(compose, getattr(rel, target.stage.value))
    if cid is not None and not compose.sig_dir(cid).is_dir():
        raise ReconcilerError(f"compose {cid} of {target.sig} {target.release} is not on disk")
    files = compose_files(compose, cid) if cid is not None else []
    baseline = take_baseline(target, files, cid, PathPatterns.of(spec.unmanaged(target.sig)))
    if not request.dry_run:
        record_baseline(state, baseline, now)
    return ("would adopt " if request.dry_run else "adopted ") + baseline.describe()
