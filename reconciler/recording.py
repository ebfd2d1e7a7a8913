"""What an apply keeps of what it learned and walked, and the file lists it renews:
the state-writing steps around the actions (:mod:`reconciler.applying`).

- :func:`record_learned`: observing's findings (upstream validators, drift,
  unmanaged paths) into the state; observing itself never writes;
- :func:`walk_target`: what a target holds that its inventory does not (unmanaged);
- :func:`write_lists`: production's file lists, after what production holds outside
  the targets was walked once (the old scripts' other SIGs and releases must be listed,
  or a quick-fedora-mirror client deletes them);
- :func:`changes_chain`: the composes' changes files from what a target holds to a
  compose, when a publish may read only them.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import PurePosixPath

from .facts import Learned, TargetKey, UnmanagedWalk
from .hostconfig import HostConfig
from .layout import ComposeTree, PublishedTree
from .manifest import Changes, read_changes
from .observing import vault_top, walk_rest, walk_unmanaged
from .retiring import write_production_filelists
from .spec import Spec
from .state import StateDB, UnmanagedEntry
from .vocabulary import Stage

log = logging.getLogger(__name__)

#: At most this many composes' changes are chained for one publish (else: compare all).
MAX_CHANGES_CHAIN = 30


def record_learned(state: StateDB, learned: Learned) -> None:
    """Keep what observing learned (upstream validators, drift findings, unmanaged
    paths): observing itself never writes."""
    if learned.upstream:
        state.sources.set_upstream_cache(learned.upstream)
    if learned.drift is not None:
        for key, found in learned.drift.items():
            state.sources.set_drift(key, found)
    walked_at = learned.drift_checked_at or datetime.now(UTC)
    for key, walk in (learned.unmanaged or {}).items():
        state.unmanaged.replace(key.stage, walk.prefix, walk.entries, walked_at)
    for stage, rest in (learned.rest or {}).items():
        state.unmanaged.replace(stage, rest.prefix, rest.entries, walked_at, rest.skipped)
    if learned.drift_checked_at is not None:
        state.sources.set_drift_checked(learned.drift_checked_at)
    if learned.drift_deep_checked_at is not None:
        state.sources.set_drift_deep_checked(learned.drift_deep_checked_at)


def walk_target(
    spec: Spec, state: StateDB, target: PublishedTree, record: bool = True
) -> dict[str, UnmanagedEntry]:
    """What ``target`` holds that its inventory does not (unmanaged); ``record``: keep it."""
    owned = state.inventory.entries(target.stage, target.inventory_prefix)
    walk = walk_unmanaged(spec, target, owned)
    if record:
        state.unmanaged.replace(target.stage, walk.prefix, walk.entries, datetime.now(UTC))
    return {e.relpath: e for e in walk.entries}


def _walk_rest_once(host: HostConfig, state: StateDB, category: str) -> None:
    """Production's category outside the targets, walked when it never was (the drift
    check walks it again on its interval)."""
    prefix = f"{PurePosixPath(category)}/"
    walked = state.unmanaged.walks(Stage.PRODUCTION)
    if prefix in walked:
        return
    targets = [UnmanagedWalk(p) for p in walked if p != prefix and p.startswith(prefix)]
    rest = walk_rest(host, state, Stage.PRODUCTION, category, targets)
    if rest is not None:
        state.unmanaged.replace(
            Stage.PRODUCTION, rest.prefix, rest.entries, datetime.now(UTC), rest.skipped
        )


def write_lists(spec: Spec, host: HostConfig, state: StateDB) -> None:
    """Renew production's file lists (only those whose content changed are written)."""
    publish = spec.defaults.publish
    _walk_rest_once(host, state, publish.category)
    written = write_production_filelists(
        state, host.roots.production, publish.category, owner=publish.owner, group=publish.group
    )
    if written:
        log.info("file lists renewed: %s", ", ".join(written))


def write_vault_lists(spec: Spec, host: HostConfig, state: StateDB, walk: bool = True) -> None:
    """Renew the vault's file lists at ``mirror/vault/`` (``fullfilelist``,
    ``fullfiletimelist-vault``) once the vault tree is complete. Everything under
    ``mirror/vault/`` is listed (a quick-fedora-mirror client of the vault deletes what
    they do not name): the vault's inventory, and what a walk of the rest finds (the
    distribution's own ``mirror/vault/rocky/``). ``walk``: walk it now (after a vault
    publish: seldom, and the rest is only read); else as the last drift check found it."""
    publish = spec.defaults.publish
    top = vault_top(spec)
    if walk:
        rest = walk_rest(host, state, Stage.VAULT, top, ())
        if rest is None:
            return
        state.unmanaged.replace(Stage.VAULT, rest.prefix, rest.entries, datetime.now(UTC))
    written = write_production_filelists(
        state, host.roots.production, top, owner=publish.owner, group=publish.group,
        stage=Stage.VAULT,
    )  # fmt: skip
    if written:
        log.info("vault file lists renewed: %s", ", ".join(written))


def changes_chain(
    state: StateDB, tree: ComposeTree, key: TargetKey, compose_id: str
) -> list[Changes] | None:
    """The composes' changes files leading from what the target holds to ``compose_id``
    (oldest first), or None: then the publish compares the whole inventory.

    None as well when an earlier publish to the target did not finish (it is still
    marked publishing): the inventory may then hold part of another compose.
    """
    held = state.targets.get(key.sig, key.release, key.stage)
    if held is None or held.compose_id == compose_id or state.targets.is_publishing(key):
        return None
    chain: list[Changes] = []
    cid = compose_id
    while cid != held.compose_id:
        found = read_changes(tree.changes(cid), tree.sig_dir(compose_id))
        if found is None or len(chain) >= MAX_CHANGES_CHAIN:
            return None
        chain.append(found)
        cid = found.base
    return chain[::-1]
