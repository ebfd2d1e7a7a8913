"""End of life: the plan of a release marked ``eol: true``, and of a release (or a whole
SIG file) removed from the desired state. Pure: no I/O, no clock.

``eol: true`` stops composing and staging, and keeps production until the release is
removed. What is staged stays as it is: nothing new is staged (``staging: latest`` would
otherwise take a compose nobody reviews any more), and nothing staged is taken away
either, since reviewers and a rollback may still look at it; removing the release is
the one way its trees go. The planner (:mod:`reconciler.planning`) plans no compose and
no staging publish for it; :func:`plan_with_endoflife` gives those two targets their
verdicts and says "end of life" on every row of the release.

A removed release is a planned, visible change. For each of its published targets that
still holds files, a RETIRE action pends every path the reconciler published there (its
inventory, never an unmanaged path) for deletion after ``publish.delete_grace`` and
forgets the target; the delayed deletes of :mod:`reconciler.retiring` then remove the
files and the file lists drop them. While they wait, the target shows Progressing. Its
composes are pruned, except those a vault entry still names or a vault holds
(``vaulted``). ``reconciler plan`` counts what goes (:mod:`reconciler.previewing`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from datetime import datetime

from .facts import ComposeFact, Observed
from .planning import Action, Plan, Verdict, plan
from .spec import Spec
from .vocabulary import ActionKind, Stage, TargetState, Trigger

#: How every status row of an ``eol: true`` release begins (``status`` and the status
#: page label the release with it: the status table keeps no desired state).
EOL_NOTE = "end of life (eol: true)"


def is_eol(reason: str) -> bool:
    """Whether a status reason is one of an ``eol: true`` release's (see EOL_NOTE)."""
    return reason.startswith(EOL_NOTE)


def in_spec(spec: Spec, sig: str, release: str) -> bool:
    return sig in spec.sigs and release in spec.sigs[sig].releases


@dataclass(frozen=True)
class LeftTarget:
    """What a removed release still has in one published stage (from the state)."""

    stage: Stage
    compose_id: str | None  # the target's record; None once it was retired
    files: int  # paths the reconciler published there that are not pending deletion
    pending: int  # paths of it pending deletion
    due: datetime | None = None  # when the last of those is due


@dataclass(frozen=True)
class RemovedRelease:
    """A SIG release the desired state no longer has, with what it left behind."""

    sig: str
    release: str
    sig_removed: bool  # the whole SIG file is gone
    targets: tuple[LeftTarget, ...] = ()
    composes: tuple[ComposeFact, ...] = ()  # oldest first

    @property
    def why(self) -> str:
        if self.sig_removed:
            return f"SIG {self.sig} was removed from the desired state (sigs/{self.sig}.yaml)"
        return f"release {self.release} was removed from sigs/{self.sig}.yaml"

    @property
    def left(self) -> bool:
        """Whether anything of it is left to retire, prune or wait for."""
        return bool(self.composes) or any(t.files or t.pending or t.compose_id
                                          for t in self.targets)  # fmt: skip


def plan_removals(
    removed: Iterable[RemovedRelease], vaulted: frozenset[str] = frozenset()
) -> tuple[tuple[Action, ...], tuple[Verdict, ...]]:
    """The actions and verdicts that retire what removed releases left behind: first
    each target (so that no target record holds a compose any more), then the composes.

    ``vaulted``: compose IDs a vault entry names or a vault holds
    (:func:`reconciler.vaulting.vaulted`); they are kept, and once only they are left the
    release's compose row is Synced.
    """
    actions: list[Action] = []
    verdicts: list[Verdict] = []
    for r in sorted(removed, key=lambda r: (r.sig, r.release)):
        for t in sorted(r.targets, key=lambda t: t.stage != Stage.STAGING):
            if t.files or t.compose_id is not None:
                reason = (
                    f"{r.why}: its {t.files} published path(s) pend deletion after "
                    "publish.delete_grace; unmanaged paths stay"
                )
                actions.append(Action(ActionKind.RETIRE, r.sig, r.release, reason, t.stage,
                                      t.compose_id, trigger=Trigger.COMMIT))  # fmt: skip
                verdicts.append(Verdict(r.sig, r.release, t.stage, TargetState.OUT_OF_SYNC,
                                        None, t.compose_id, reason))  # fmt: skip
            elif t.pending:
                due = f", due {t.due:%Y-%m-%d %H:%M} UTC" if t.due else ""
                why = f"{r.why}: {t.pending} path(s) pending deletion{due}"
                verdicts.append(Verdict(r.sig, r.release, t.stage, TargetState.PROGRESSING,
                                        None, None, why))  # fmt: skip
        if not r.composes:
            continue
        kept = [c for c in r.composes if c.running or c.compose_id in vaulted]
        gone = [c for c in r.composes if c not in kept]
        reason = f"{r.why}: its composes go"
        for c in gone:
            actions.append(Action(ActionKind.PRUNE, r.sig, r.release, reason, None,
                                  c.compose_id, trigger=Trigger.COMMIT))  # fmt: skip
        why = f"{r.why}: {len(gone)} compose(s) to prune" + (
            f"; {len(kept)} kept (running, or named by a vault entry)" if kept else ""
        )
        # only vaulted composes left: nothing will change until the vault lets them go
        waiting = any(c.running for c in kept)
        state = TargetState.OUT_OF_SYNC if gone else TargetState.PROGRESSING
        state = state if gone or waiting else TargetState.SYNCED
        verdicts.append(Verdict(r.sig, r.release, Stage.COMPOSE, state, None,
                                r.composes[-1].compose_id, why))  # fmt: skip
    return tuple(actions), tuple(verdicts)


def eol_verdicts(spec: Spec, observed: Observed, verdicts: Iterable[Verdict]) -> list[Verdict]:
    """``verdicts`` with the compose and staging verdicts of every ``eol: true`` release
    (the planner makes none for them) and "end of life" at the head of each of its rows."""
    out: list[Verdict] = []
    for v in verdicts:
        rel = spec.sigs[v.sig].releases[v.release] if in_spec(spec, v.sig, v.release) else None
        if rel is None or not rel.eol or rel.suspend:
            out.append(v)
            continue
        if v.stage is Stage.PRODUCTION:
            facts = observed.facts(v.sig, v.release)
            newest = facts.newest_finished()
            held = newest.compose_id if newest else None
            staged = facts.staging.compose_id
            keeps = f"staging keeps {staged} as it is" if staged else "staging holds nothing"
            out.append(Verdict(v.sig, v.release, Stage.COMPOSE, TargetState.SYNCED, held, held,
                               f"{EOL_NOTE}: no new composes"))  # fmt: skip
            out.append(Verdict(v.sig, v.release, Stage.STAGING, TargetState.SYNCED, staged,
                               staged, f"{EOL_NOTE}: {keeps}; nothing new is staged"))  # fmt: skip
        kept = f"{EOL_NOTE}, production kept until the release is removed"
        out.append(replace(v, reason=f"{kept}: {v.reason}", why=f"{kept}: {v.why}")
                   if v.stage is Stage.PRODUCTION else v)  # fmt: skip
    return out


def plan_with_endoflife(
    spec: Spec,
    observed: Observed,
    removed: Iterable[RemovedRelease] = (),
    revision: str | None = None,
    repair_drift: bool = True,
    vaulted: frozenset[str] = frozenset(),
) -> Plan:
    """:func:`reconciler.planning.plan`, with the end of life of ``eol: true`` releases and
    of ``removed`` ones. What was removed is part of the plan's observed digest, so a
    saved plan is stale when it changed."""
    gone = [r for r in removed if r.left and not in_spec(spec, r.sig, r.release)]
    p = plan(spec, observed, revision, repair_drift)
    actions, verdicts = plan_removals(gone, vaulted)
    digest = p.observed_digest
    if gone:
        body = json.dumps([asdict(r) for r in gone], sort_keys=True, default=str)
        digest = hashlib.sha256(f"{digest}\n{body}".encode()).hexdigest()
    return replace(
        p,
        observed_digest=digest,
        actions=(*p.actions, *actions),
        verdicts=(*eol_verdicts(spec, observed, p.verdicts), *verdicts),
    )
