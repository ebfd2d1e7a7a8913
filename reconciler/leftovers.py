"""What the SIG releases removed from the desired state left behind: their published
targets (records, inventory, pending deletions, from the state) and their composes on
disk. Reads only; :mod:`reconciler.endoflife` plans from it.

A release counts as removed when the state or the compose root still knows it and the
desired state does not: a target record, a pending deletion under its published
directory (the grace after it was retired), or a compose the reconciler made (one with
its ``reconciler.json``: composes another tool left in the compose root are not taken
for the reconciler's own). All composes of such a release go, the dead ones too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

from .composemeta import read_record
from .endoflife import LeftTarget, RemovedRelease, in_spec
from .hostconfig import HostConfig
from .names import COMPOSE_ID_RE, NAME_RE, RELEASE_RE
from .observing import observe_composes
from .spec import Spec
from .state import StateDB
from .vocabulary import PUBLISHED_STAGES, InventoryKind


def _known(spec: Spec, host: HostConfig, state: StateDB) -> Iterator[tuple[str, str]]:
    """Every (sig, release) the state or the compose root knows of."""
    for t in state.targets.all():
        if t.stage in PUBLISHED_STAGES:
            yield t.sig, t.release
    top = f"{PurePosixPath(spec.defaults.publish.category)}/"
    for stage in PUBLISHED_STAGES:
        seen: set[tuple[str, str]] = set()  # (many pending paths: split each once, cheaply)
        for p in state.pending.all(stage):
            rest = p.relpath[len(top) :].split("/", 2) if p.relpath.startswith(top) else []
            if len(rest) == 3 and (rest[1], rest[0]) not in seen:
                seen.add((rest[1], rest[0]))
                if RELEASE_RE.fullmatch(rest[0]) and NAME_RE.fullmatch(rest[1]):
                    yield rest[1], rest[0]
    root = host.roots.compose
    releases = sorted(root.iterdir()) if root.is_dir() else []
    for release_dir in releases:
        if not release_dir.is_dir() or not RELEASE_RE.fullmatch(release_dir.name):
            continue
        for entry in release_dir.iterdir():
            m = COMPOSE_ID_RE.fullmatch(entry.name)
            if not m or m["release"] != release_dir.name or in_spec(spec, m["sig"], m["release"]):
                continue
            if not entry.is_dir():
                continue
            # only a release the reconciler composed: another tool's composes are not its own
            if read_record(host.compose_tree(m["sig"], m["release"]), entry.name) is not None:
                yield m["sig"], m["release"]


def _left(spec: Spec, host: HostConfig, state: StateDB, sig: str, release: str) -> RemovedRelease:
    category = spec.defaults.publish.category
    targets = []
    for stage in PUBLISHED_STAGES:
        tree = host.published(category, stage, sig, release)
        record = state.targets.get(sig, release, stage)
        prefix = tree.inventory_prefix
        pending = [p for p in state.pending.all(stage) if p.relpath.startswith(prefix)]
        waiting = {p.relpath for p in pending}
        entries = state.inventory.entries(stage, prefix)
        files = [p for p, e in entries.items() if e.kind is not InventoryKind.DIR]
        targets.append(
            LeftTarget(
                stage,
                record.compose_id if record else None,
                sum(1 for p in files if p not in waiting),
                len(pending),
                max((p.due_at for p in pending), default=None),
            )
        )
    composes = observe_composes(host.compose_tree(sig, release))
    return RemovedRelease(sig, release, sig not in spec.sigs, tuple(targets), composes)


def removed_releases(spec: Spec, host: HostConfig, state: StateDB) -> tuple[RemovedRelease, ...]:
    """What each SIG release the state or the compose root knows, and ``spec`` does not
    have, left behind."""
    gone = sorted({k for k in _known(spec, host, state) if not in_spec(spec, *k)})
    return tuple(_left(spec, host, state, sig, release) for sig, release in gone)
