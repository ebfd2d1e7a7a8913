"""Planning: ``plan(spec, observed) -> Plan``. Pure: no I/O, no clock, no randomness.

For each SIG release, in this order:

* **compose** when ``trigger: upstream`` and the upstream revision differs from
  the newest finished compose's, or when ``refresh`` was bumped; never while a
  compose runs, and not again for an upstream revision whose compose was DOOMED
  (bump ``refresh`` to retry);
* **stage** the compose ``staging`` names (``latest``: the newest finished one,
  or the one this plan makes);
* **promote** the compose ``production`` names, only if it exists and is
  FINISHED, passes the signature gate (no key file named in ``gpg_keys`` missing
  while ``signatures.check`` is on) and, with ``require_staged``, was staged at
  least ``min_soak`` ago (:mod:`reconciler.gates`); otherwise the target is Blocked,
  with the reason;
* **prune** finished composes beyond ``keep_composes`` that no stage uses and
  that are not the previous production compose (kept for rollback), and dead
  unfinished ones.

``suspend: true`` plans nothing and reports Suspended (``eol: true``: :mod:`.endoflife`).
Every action carries a human reason; every target gets a verdict. While a release's
packages go unverified for a reason the spec shows (a missing key, ``signatures.check:
false``), every verdict and action of it says so.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from .facts import ComposeFact, Observed, ReleaseFacts
from .gates import promotion_gate, signature_note, unverified
from .packagediff import PackageDiff
from .preview import PublishPreview
from .spec import ReleaseSpec, Spec
from .vocabulary import (
    TROUBLE_STATES,
    ActionKind,
    ComposeStatus,
    PlanOutcome,
    Stage,
    TargetState,
    Trigger,
)

PLAN_FORMAT = 1


NEW_COMPOSE = "(new compose)"


@dataclass(frozen=True)
class Action:
    """One step of a plan. A PUBLISH with ``compose_id=None`` publishes the compose
    that the COMPOSE action before it in the same plan makes."""

    kind: ActionKind
    sig: str
    release: str
    reason: str
    stage: Stage | None = None
    compose_id: str | None = None
    repair: bool = False  # publish again what the target holds, comparing with the tree
    trigger: Trigger = Trigger.COMMIT

    def describe(self) -> str:
        target = f"{self.sig} {self.release}"
        if self.kind is ActionKind.COMPOSE:
            return f"compose {target}"
        if self.kind is ActionKind.PUBLISH:
            what = self.compose_id or NEW_COMPOSE
            if self.stage is Stage.VAULT:  # a vault target's release is the point release
                return f"vault {self.release} of {self.sig}: publish {what}"
            verb = "stage" if self.stage is Stage.STAGING else "promote"
            return f"{verb} {what} to {self.stage} ({target})"
        what = f"retire {self.stage} of" if self.kind is ActionKind.RETIRE else "prune"
        return f"{what} {self.compose_id or 'its files'} ({target})"


@dataclass(frozen=True)
class Verdict:
    """The state of one target (SIG, release, stage) as planning sees it."""

    sig: str
    release: str
    stage: Stage
    state: TargetState
    desired: str | None
    actual: str | None
    reason: str
    #: Why the target wants what it wants, without what it holds now (for the status
    #: once the planned action has succeeded: "production pinned to X").
    why: str = ""


@dataclass(frozen=True)
class Plan:
    revision: str | None
    observed_digest: str
    actions: tuple[Action, ...] = ()
    verdicts: tuple[Verdict, ...] = ()
    errors: tuple[str, ...] = field(default_factory=tuple)
    #: what each publish would do to its target's files (``reconciler plan`` only)
    previews: tuple[PublishPreview, ...] = ()
    diffs: tuple[PackageDiff, ...] = ()  # what each compose and publish ships (``plan`` only)

    @property
    def troubled(self) -> tuple[Verdict, ...]:
        """The targets that failed or are blocked."""
        return tuple(v for v in self.verdicts if v.state in TROUBLE_STATES)

    @property
    def outcome(self) -> PlanOutcome:
        """Trouble (a failed or blocked target, a source problem) outweighs pending changes:
        ``plan`` and ``apply`` exit 1 for it, and the text and markdown plans say so."""
        if self.errors or self.troubled:
            return PlanOutcome.TROUBLE
        return PlanOutcome.CHANGES if self.actions else PlanOutcome.IN_SYNC

    def to_json(self) -> str:
        body = {"format": PLAN_FORMAT, **asdict(self)}
        return json.dumps(body, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Plan:
        raw: dict[str, Any] = json.loads(text)
        if raw.pop("format", None) != PLAN_FORMAT:
            raise ValueError(f"not a plan of format {PLAN_FORMAT}")
        actions = tuple(
            Action(ActionKind(a["kind"]), a["sig"], a["release"], a["reason"],
                   Stage(a["stage"]) if a["stage"] else None, a["compose_id"],
                   bool(a.get("repair", False)), Trigger(a.get("trigger", Trigger.COMMIT)))
            for a in raw["actions"]
        )  # fmt: skip
        verdicts = tuple(
            Verdict(**{**v, "stage": Stage(v["stage"]), "state": TargetState(v["state"])})
            for v in raw["verdicts"]
        )
        previews = tuple(PublishPreview.from_dict(p) for p in raw.get("previews", ()))
        return cls(
            raw["revision"], raw["observed_digest"], actions, verdicts, tuple(raw["errors"]),
            previews, tuple(PackageDiff.from_dict(d) for d in raw.get("diffs", ())),
        )  # fmt: skip


@dataclass
class _ReleasePlanner:
    """Plans one SIG release; ``actions`` and ``verdicts`` are its output."""

    spec: Spec
    rel: ReleaseSpec
    facts: ReleaseFacts
    now: datetime
    repair_drift: bool = True
    actions: list[Action] = field(default_factory=list)
    #: What started the compose this plan makes (a staging that follows it inherits it).
    _compose_trigger: Trigger = Trigger.COMMIT
    verdicts: list[Verdict] = field(default_factory=list)

    def _act(
        self,
        kind: ActionKind,
        reason: str,
        stage: Stage | None = None,
        compose_id: str | None = None,
        repair: bool = False,
        trigger: Trigger = Trigger.COMMIT,
    ) -> None:
        f = self.facts
        action = Action(kind, f.sig, f.release, reason, stage, compose_id, repair, trigger)
        self.actions.append(action)

    def _say(
        self,
        stage: Stage,
        state: TargetState,
        desired: str | None,
        actual: str | None,
        reason: str,
        why: str = "",
    ) -> None:
        f = self.facts
        verdict = Verdict(f.sig, f.release, stage, state, desired, actual, reason, why or reason)
        self.verdicts.append(verdict)

    def run(self) -> None:
        if self.rel.suspend:
            for stage in (Stage.COMPOSE, Stage.STAGING, Stage.PRODUCTION):  # vaults: vaulting
                actual = self._actual(stage)
                self._say(stage, TargetState.SUSPENDED, None, actual, "suspend: true in the spec")
            return
        composing = False if self.rel.eol else self._plan_compose()  # endoflife: eol verdicts
        staged_new = self._actual(Stage.STAGING) if self.rel.eol else self._plan_staging(composing)
        promoted = self._plan_production(staged_new)
        self._plan_prune(composing, staged_new, promoted)
        note = signature_note(self.spec, self.rel)
        if note:
            self._annotate(note)

    def _annotate(self, note: str) -> None:
        """Append ``note`` to every verdict (to its ``why`` too, which the status is made
        from once the action succeeded) and to every compose and publish action's reason."""
        self.verdicts = [
            v
            if note in v.reason
            else replace(v, reason=f"{v.reason}; {note}", why=f"{v.why} ({note})")
            for v in self.verdicts
        ]
        self.actions = [
            a if a.kind is ActionKind.PRUNE else replace(a, reason=f"{a.reason}; {note}")
            for a in self.actions
        ]

    def _actual(self, stage: Stage) -> str | None:
        if stage is Stage.COMPOSE:
            newest = self.facts.newest_finished()
            return newest.compose_id if newest else None
        return self.facts.target(stage).compose_id

    # -- compose -----------------------------------------------------------------

    def _plan_compose(self) -> bool:
        """Plan a compose if one is due; returns whether one was planned."""
        f, opts = self.facts, self.rel.compose
        newest = f.newest_finished()
        actual = newest.compose_id if newest else None
        running = [c for c in f.composes if c.status is ComposeStatus.STARTED and c.running]
        if running:
            self._say(
                Stage.COMPOSE,
                TargetState.PROGRESSING,
                None,
                actual,
                f"compose {running[-1].compose_id} is running",
            )
            return False
        newest_refresh = (newest.refresh or 0) if newest else -1
        if opts.refresh > newest_refresh and newest is not None:
            return self._compose_due(actual, f"refresh bumped to {opts.refresh}", Trigger.COMMIT)
        if opts.trigger == "manual":
            if newest is None and opts.refresh > 0:
                why = f"refresh is {opts.refresh} and no compose exists"
                return self._compose_due(actual, why, Trigger.COMMIT)
            state = TargetState.SYNCED if newest else TargetState.OUT_OF_SYNC
            why = "trigger is manual" + ("" if newest else "; no compose yet (bump refresh)")
            self._say(Stage.COMPOSE, state, actual, actual, why)
            return False
        if f.upstream.error:
            self._say(
                Stage.COMPOSE,
                TargetState.FAILED,
                None,
                actual,
                f"cannot read the upstream: {f.upstream.error}",
            )
            return False
        if newest is None:
            return self._compose_due(actual, "no finished compose yet", Trigger.COMMIT)
        if (stale := unverified(self.spec, self.rel, newest)) is not None:
            return self._compose_due(actual, stale, Trigger.COMMIT)
        if newest.upstream_revision == f.upstream.revision:
            self._say(
                Stage.COMPOSE,
                TargetState.SYNCED,
                actual,
                actual,
                "the newest compose matches the upstream",
            )
            return False
        rev = (f.upstream.revision or "?")[:12]
        return self._compose_due(actual, f"upstream changed (revision {rev})", Trigger.UPSTREAM)

    def _compose_due(self, actual: str | None, reason: str, trigger: Trigger) -> bool:
        doomed = self._doomed_attempt()
        if doomed is not None:
            self._say(
                Stage.COMPOSE,
                TargetState.FAILED,
                None,
                actual,
                f"compose {doomed.compose_id} of this upstream revision was DOOMED; "
                "fix the upstream or bump refresh to retry",
            )
            return False
        self._act(ActionKind.COMPOSE, reason, trigger=trigger)
        self._say(Stage.COMPOSE, TargetState.OUT_OF_SYNC, NEW_COMPOSE, actual, reason)
        self._compose_trigger = trigger
        return True

    def _doomed_attempt(self) -> ComposeFact | None:
        """The newest compose, if it was DOOMED for exactly what we would compose now (an
        attempt abandoned by a dead worker does not count: it says nothing of the upstream)."""
        tried = [c for c in self.facts.composes if not c.abandoned]
        if not tried:
            return None
        last = tried[-1]
        if last.status is not ComposeStatus.DOOMED or last.upstream_revision is None:
            return None
        same_upstream = last.upstream_revision == self.facts.upstream.revision
        same_refresh = (last.refresh or 0) == self.rel.compose.refresh
        return last if same_upstream and same_refresh else None

    # -- staging -----------------------------------------------------------------

    def _resolve(self, ref: str, composing: bool) -> tuple[str | None, str | None]:
        """``(compose_id or None for the new one, problem)`` for a stage reference."""
        if ref == "latest":
            if composing:
                return None, None
            newest = self.facts.newest_finished()
            return (newest.compose_id, None) if newest else (None, "no finished compose yet")
        found = self.facts.compose(ref)
        if found is None:
            return ref, f"compose {ref} does not exist"
        if not found.finished:
            return ref, f"compose {ref} is {found.status.value if found.status else 'unknown'}"
        return ref, None

    def _plan_staging(self, composing: bool) -> str | None:
        """Plan the staging publish; returns what staging will hold (NEW_COMPOSE for new)."""
        ref, actual = self.rel.staging, self.facts.staging.compose_id
        if ref is None:
            self._say(Stage.STAGING, TargetState.SYNCED, None, actual, "staging is not managed")
            return actual
        want, problem = self._resolve(ref, composing)
        if problem and want is not None and want == actual:
            self._say(
                Stage.STAGING,
                TargetState.SYNCED,
                want,
                actual,
                f"{want} is published, but {problem}: it cannot be republished or repaired",
            )
            return actual
        if problem:
            self._say(Stage.STAGING, TargetState.BLOCKED, want or ref, actual, problem)
            return actual
        if ref == "latest":
            # following the newest compose: what made that compose is what moves staging
            why, trigger = "staging follows the latest compose", self._compose_trigger
        else:
            why, trigger = f"staging pinned to {ref}", Trigger.COMMIT
        return self._publish(Stage.STAGING, want, actual, why, trigger)

    def _publish(
        self,
        stage: Stage,
        want: str | None,
        actual: str | None,
        why: str,
        trigger: Trigger = Trigger.COMMIT,
    ) -> str:
        drift = self.facts.target(stage).drift
        if want is not None and want == actual and not drift:
            self._say(stage, TargetState.SYNCED, want, actual, f"{why}; {want} is published")
            return want
        repair = want is not None and want == actual
        if repair and not self.repair_drift:
            self._say(stage, TargetState.OUT_OF_SYNC, want, actual,
                      f"drift in {len(drift)} path(s) (drift: report): {', '.join(drift[:5])}",
                      why)  # fmt: skip
            return want or NEW_COMPOSE
        if repair:
            reason = f"repair drift in {len(drift)} path(s): {', '.join(drift[:3])}"
            trigger = Trigger.DRIFT
        else:
            reason = f"{why}; it holds {actual or 'nothing'}"
        self._act(ActionKind.PUBLISH, reason, stage, want, repair, trigger)
        self._say(stage, TargetState.OUT_OF_SYNC, want or NEW_COMPOSE, actual, reason, why)
        return want or NEW_COMPOSE

    # -- production --------------------------------------------------------------

    def _plan_production(self, staged_new: str | None) -> str | None:
        """Plan the promotion; returns what production will hold."""
        pin, actual = self.rel.production, self.facts.production.compose_id
        if pin is None:
            self._say(
                Stage.PRODUCTION, TargetState.SYNCED, None, actual, "production is not pinned"
            )
            return actual
        want, problem = self._resolve(pin, composing=False)
        if problem and want == actual:
            self._say(
                Stage.PRODUCTION,
                TargetState.SYNCED,
                want,
                actual,
                f"{want} is published, but {problem}: it cannot be republished or repaired",
            )
            return actual
        if problem is None and want != actual:
            staged_at = self.facts.staged_at.get(pin)
            problem = promotion_gate(self.spec, self.rel, pin, staged_at, staged_new, self.now,
                                     self.facts.compose(pin))  # fmt: skip
        if problem:
            self._say(Stage.PRODUCTION, TargetState.BLOCKED, pin, actual, problem)
            return actual
        return self._publish(Stage.PRODUCTION, want, actual, f"production pinned to {pin}")

    # -- prune -------------------------------------------------------------------

    def _plan_prune(self, composing: bool, staging: str | None, production: str | None) -> None:
        f = self.facts
        actual_prod = f.production.compose_id
        previous = actual_prod if production != actual_prod else f.previous_production
        # what a vault entry names, or a vault holds, stays (vaulting)
        keep = {staging, production, previous, *self.rel.vault.values(), *f.vault_held}
        keep_n = self.spec.defaults.compose.keep_composes - (1 if composing else 0)
        finished = f.finished()
        if keep_n > 0:
            keep.update(c.compose_id for c in finished[max(0, len(finished) - keep_n) :])
        newest = f.composes[-1].compose_id if f.composes else None
        for c in f.composes:
            if c.compose_id in keep or c.running:
                continue
            if not c.finished and c.compose_id == newest and not composing:
                continue  # the latest failed attempt stays for inspection until the next one
            why = "beyond keep_composes" if c.finished else f"{c.status or 'unfinished'} compose"
            reason = f"{why}; not used by any stage"
            self._act(ActionKind.PRUNE, reason, None, c.compose_id, trigger=Trigger.POLICY)


def plan(
    spec: Spec, observed: Observed, revision: str | None = None, repair_drift: bool = True
) -> Plan:
    """Compute the plan that makes the trees match ``spec``.

    ``repair_drift=False`` (host config ``drift: report``) reports drift without repairing it.
    """
    actions: list[Action] = []
    verdicts: list[Verdict] = []
    for sig_name, sig in sorted(spec.sigs.items()):
        for rel_name, rel in sorted(sig.releases.items(), key=lambda kv: _release_key(kv[0])):
            facts = observed.facts(sig_name, rel_name)
            planner = _ReleasePlanner(spec, rel, facts, observed.now, repair_drift)
            planner.run()
            actions.extend(planner.actions)
            verdicts.extend(planner.verdicts)
    return Plan(revision, observed.digest(), tuple(actions), tuple(verdicts))


def _release_key(release: str) -> tuple[int, ...]:
    return tuple(int(p) for p in release.split("."))


def with_errors(p: Plan, *errors: str) -> Plan:
    return replace(p, errors=(*p.errors, *errors))
