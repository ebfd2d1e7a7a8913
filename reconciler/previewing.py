"""The preview of each planned publish: what it would add, replace, take over and pend
in its target, and which unmanaged files it keeps (:class:`~reconciler.preview.PublishPreview`).

Reads only: the compose's manifest, the state's inventory and pending deletions, and a
walk of the target (for the files the reconciler did not publish). The change set is
the publisher's own pure decision (:func:`reconciler.changeset.change_set`) against
the whole inventory, so the preview says what a publish will do whichever way it
learns what differs.
"""

from __future__ import annotations

from collections.abc import Iterable

from .adopting import compose_files
from .changeset import Change, FromInventory, change_set
from .hostconfig import HostConfig
from .names import compose_release
from .ownership import walk_unmanaged
from .pathglob import PathPatterns
from .planning import Action, Plan
from .preview import KEEP_UNMANAGED, PublishPreview
from .spec import Spec
from .state import StateDB
from .vaulting import stage_category
from .vocabulary import ActionKind, ChangeKind, InventoryKind, Stage

#: how many example paths of each kind a preview names
EXAMPLES = 3


def previews(
    host: HostConfig, spec: Spec, state: StateDB, plan: Plan
) -> tuple[PublishPreview, ...]:
    """A preview of every publish in ``plan``."""
    return tuple(
        _preview(host, spec, state, a)
        if a.kind is ActionKind.PUBLISH
        else _gone(host, spec, state, a)
        for a in plan.actions
        if a.kind in {ActionKind.PUBLISH, ActionKind.RETIRE}
    )


def _gone(host: HostConfig, spec: Spec, state: StateDB, action: Action) -> PublishPreview:
    """What retiring a removed release's target takes away: every path of its inventory
    not pending already, counted per published directory (the SIG directory's own files,
    then each ``<arch>/<repo>/`` and ``source/<repo>/``, as paths under the stage's root),
    and the unmanaged files that stay."""
    assert action.stage is not None
    head = (action.sig, action.release, action.stage, action.compose_id)
    target = host.published(spec.defaults.publish.category, action.stage, action.sig,
                            action.release)  # fmt: skip
    prefix = target.inventory_prefix
    inventory = state.inventory.entries(action.stage, prefix)
    pending = {p.relpath for p in state.pending.all(action.stage)}
    pend = {p: e for p, e in inventory.items()
            if e.kind is not InventoryKind.DIR and p not in pending}  # fmt: skip
    per_dir: dict[str, list[int]] = {}
    for path, entry in pend.items():
        parts = path.removeprefix(prefix).split("/")
        where = prefix + ("/".join(parts[:2]) + "/" if len(parts) > 2 else "")
        counts = per_dir.setdefault(where, [0, 0])
        counts[0] += 1
        counts[1] += entry.size
    sig_gone = action.sig not in spec.sigs  # a removed SIG file: the defaults' patterns
    patterns = spec.defaults.publish.unmanaged if sig_gone else spec.unmanaged(action.sig)
    found = walk_unmanaged(target, inventory.keys(), PathPatterns.of(patterns))
    kept = [e for e in found if e.kind is not InventoryKind.DIR]
    reported = [e.relpath for e in kept if not e.ignored]
    examples = [*_examples("pend", prefix, pend), *_examples(KEEP_UNMANAGED, prefix, reported)]
    return PublishPreview(
        *head, pend=len(pend), unmanaged=len(reported), ignored=len(kept) - len(reported),
        examples=tuple(examples), bytes=sum(e.size for e in pend.values()),
        directories=tuple(f"{d}: {n} file(s), {b} bytes" for d, (n, b) in sorted(per_dir.items())),
    )  # fmt: skip


def _examples(what: str, prefix: str, paths: Iterable[str]) -> list[str]:
    return [f"{what} {p.removeprefix(prefix)}" for p in sorted(paths)[:EXAMPLES]]


def _preview(host: HostConfig, spec: Spec, state: StateDB, action: Action) -> PublishPreview:
    assert action.stage is not None
    head = (action.sig, action.release, action.stage, action.compose_id)
    if action.compose_id is None:
        return PublishPreview(*head, note="known once the compose this plan makes is done")
    tree = host.compose_tree(action.sig, compose_release(action.release, action.compose_id))
    if not tree.sig_dir(action.compose_id).is_dir():
        return PublishPreview(*head, note=f"compose {action.compose_id} is not on disk")
    target = host.published(stage_category(spec, action.stage), action.stage, action.sig,
                            action.release)  # fmt: skip
    prefix = target.inventory_prefix
    inventory = state.inventory.entries(action.stage, prefix)
    pending = {p.relpath for p in state.pending.all(action.stage)}
    files = tuple(compose_files(tree, action.compose_id))
    found = walk_unmanaged(target, inventory.keys(), PathPatterns.of(spec.unmanaged(action.sig)))
    walked = {e.relpath: e for e in found}
    changes = change_set(
        prefix, FromInventory(files, inventory), pending, walked, spec.prune(action.sig)
    )
    unmanaged = {p: e for p, e in walked.items() if e.kind is not InventoryKind.DIR}
    places: list[Change] = list(changes.places)
    take = [c.path for c in places if c.path in unmanaged]
    add = [c.path for c in places if c.kind is ChangeKind.PLACE and c.path not in unmanaged]
    repl = [c.path for c in places if c.kind is ChangeKind.REPLACE and c.path not in unmanaged]
    pend = [p for p in changes.pend if p not in pending]  # not those pending already
    if action.stage is Stage.VAULT:  # a vault deletes nothing: what it held stays
        pend = []
    kept = [e for p, e in unmanaged.items() if p not in {*take, *pend}]
    reported = [e.relpath for e in kept if not e.ignored]
    examples = [
        *_examples("add", prefix, add),
        *_examples("replace", prefix, repl),
        *_examples("take over", prefix, take),
        *_examples("pend", prefix, pend),
        *_examples(KEEP_UNMANAGED, prefix, reported),
    ]
    return PublishPreview(
        *head, add=len(add), replace=len(repl), take_over=len(take), pend=len(pend),
        unmanaged=len(reported), ignored=len(kept) - len(reported), examples=tuple(examples),
    )  # fmt: skip
