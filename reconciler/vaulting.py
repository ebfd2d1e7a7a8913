"""The vault's plan: each vault entry of a SIG release is a target. Pure: no I/O, no clock.

A release's ``vault: {"9.5": SIG-core-9-20260301.0}`` asks for that compose at
``<production>/<publish.vault_category>/9.5/<sig>/`` (the toolkit's ``vault-sig.sh``).
Its target is keyed by the point release at stage VAULT (``core 9.5 vault`` in
``status``: one release has many point releases, each a tree of its own), and:

* it is published once, in the mirror-safe order, like production, but nothing it held
  is ever pended for deletion (``rsync_no_delete_prod``: a vault is never pruned);
* a later change of the entry's compose is refused (Blocked, naming the SIG file and the
  point) unless the release says ``vault_replace: true``: then the new compose is
  published over it in the same order, and the old compose's files that the new one
  lacks stay;
* an entry removed from the desired state leaves the vault tree as it is (vaults are
  forever): its row says so, and the state still knows the tree (its lists, ``verify``);
* the composes a vault entry names, or a vault target holds, are kept by compose pruning
  (:mod:`reconciler.planning`) and by end of life (:func:`vaulted`).

The vault is not drift-checked or repaired (it is written once); its file lists at
``mirror/vault/`` are (:func:`reconciler.recording.write_vault_lists`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from .facts import Observed, ReleaseFacts, TargetFact
from .layout import PublishedTree
from .planning import Action, Plan, Verdict
from .spec import ReleaseSpec, Spec
from .vocabulary import ActionKind, Stage, TargetState, Trigger

#: How the row of a vault entry removed from the desired state begins.
KEPT_NOTE = "no longer in the desired state: the vault tree stays as it is (vaults are forever)"


def stage_category(spec: Spec, stage: Stage) -> str:
    """The category a stage's trees are under: the vault's, or ``publish.category``."""
    publish = spec.defaults.publish
    return publish.vault_category if stage is Stage.VAULT else publish.category


def vault_dir(spec: Spec, sig: str, point: str) -> str:
    """Where a vault entry is published, relative to the production root (with a slash)."""
    category = spec.defaults.publish.vault_category
    return PublishedTree(Stage.VAULT, Path(), category, sig, point).inventory_prefix


def vaulted(spec: Spec, held: Iterable[str] = ()) -> frozenset[str]:
    """The compose IDs no pruning may take: every vault entry's, and ``held`` (what the
    state's vault targets hold: a vault keeps its compose for ``verify`` and status even
    once its entry, or its whole release, left the desired state)."""
    named = {
        cid for sig in spec.sigs.values() for rel in sig.releases.values()
        for cid in rel.vault.values()
    }  # fmt: skip
    return frozenset({*named, *held})


def _entry(
    spec: Spec, rel: ReleaseSpec, facts: ReleaseFacts, point: str
) -> tuple[Action | None, Verdict]:
    sig = facts.sig
    held = facts.vaults.get(point, TargetFact()).compose_id
    where = vault_dir(spec, sig, point)
    want = rel.vault.get(point)

    def say(state: TargetState, reason: str, why: str = "") -> Verdict:
        return Verdict(sig, point, Stage.VAULT, state, want, held, reason, why or reason)

    if want is None:
        return None, say(TargetState.SYNCED, f"vault {point}: {KEPT_NOTE}; {where} holds {held}")
    why = f"vault {point} of {sig}: {want} at {where}"
    if held == want:
        return None, say(TargetState.SYNCED, f"{why}; published (never pruned)", why)
    if held is not None and not rel.vault_replace:
        return None, say(
            TargetState.BLOCKED,
            f"sigs/{sig}.yaml: vault {point} holds {held}; changing it to {want} is refused "
            "(a vault is published once): set vault_replace: true to replace it",
        )
    found = facts.compose(want)
    if found is None or not found.finished:
        state = "does not exist" if found is None else f"is {found.status or 'unknown'}"
        return None, say(TargetState.BLOCKED, f"sigs/{sig}.yaml: vault {point}: compose "
                         f"{want} {state}")  # fmt: skip
    reason = f"vault {point} of {sig}: publish {want} to {where}"
    if held is not None:
        reason += f", replacing {held} (vault_replace: true; its files stay)"
    action = Action(ActionKind.PUBLISH, sig, point, reason, Stage.VAULT, want,
                    trigger=Trigger.COMMIT)  # fmt: skip
    return action, say(TargetState.OUT_OF_SYNC, reason, why)


def plan_vaults(
    spec: Spec, observed: Observed, held: Iterable[tuple[str, str, str]] = ()
) -> tuple[list[Action], list[Verdict]]:
    """The vault actions and verdicts of every SIG release of ``spec``; ``held``: every
    vault target the state records (SIG, point release, compose), so that the vaults of
    a release (or SIG) removed from the desired state still show, kept as they are."""
    actions: list[Action] = []
    verdicts: list[Verdict] = []
    for sig_name, sig in sorted(spec.sigs.items()):
        for rel_name, rel in sorted(sig.releases.items()):
            facts = observed.facts(sig_name, rel_name)
            points = sorted({*rel.vault, *facts.vaults}, key=_point_key)
            for point in points:
                if rel.suspend:
                    cid = facts.vaults.get(point, TargetFact()).compose_id
                    verdicts.append(Verdict(sig_name, point, Stage.VAULT, TargetState.SUSPENDED,
                                            None, cid, "suspend: true in the spec"))  # fmt: skip
                    continue
                action, verdict = _entry(spec, rel, facts, point)
                if action is not None:
                    actions.append(action)
                verdicts.append(verdict)
    shown = {(v.sig, v.release) for v in verdicts}
    for sig_name, point, cid in sorted(held):
        if (sig_name, point) not in shown:
            why = f"vault {point}: {KEPT_NOTE}; {vault_dir(spec, sig_name, point)} holds {cid}"
            verdicts.append(Verdict(sig_name, point, Stage.VAULT, TargetState.SYNCED, None, cid,
                                    why))  # fmt: skip
    return actions, verdicts


def with_vaults(
    spec: Spec, observed: Observed, planned: Plan, held: Iterable[tuple[str, str, str]] = ()
) -> Plan:
    """``planned`` with the vault's actions (after the releases' own) and verdicts."""
    actions, verdicts = plan_vaults(spec, observed, held)
    return replace(
        planned,
        actions=(*planned.actions, *actions),
        verdicts=(*planned.verdicts, *verdicts),
    )


def _point_key(point: str) -> tuple[int, ...]:
    return tuple(int(p) for p in point.split(".") if p.isdigit())
