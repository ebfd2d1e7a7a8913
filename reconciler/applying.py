"""Applying: executes a plan's actions in order; side effects only, no decisions.

Each action is recorded in the state's history (what, why, git revision,
commit author, start, end, result, error, bytes and files moved). When an
action fails, the later actions of the same SIG release are skipped (a
promotion never follows a failed staging); other SIG releases go on.
A stop request (SIGTERM) lets the current action finish, then stops; so does a
lost leader lease (the ``fence``, checked before each action and before each phase of
a publish), and then nothing else of the apply is done: another leader owns it.
Each compose of the plan is a job (:mod:`.composejobs`) that any process may take; a
COMPOSE action waits for its job, working the queue itself meanwhile.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from . import drift
from .composejobs import Desired, JobWorker, Specs, submit_composes
from .composemeta import write_status
from .endoflife import in_spec
from .errors import LeaseLost, PublishError, ReconcilerError
from .facts import TargetKey
from .hostconfig import HostConfig
from .layout import ComposeTree, PublishedTree
from .lifecycle import Event, HookFailure, run_hooks
from .names import COMPOSE_ID_RE, compose_release
from .nodes import this_process
from .planning import Action, Plan, Verdict
from .propagation import check_if_due
from .publishing import Owner, Publisher, no_fence
from .recording import changes_chain, walk_target, write_lists, write_vault_lists
from .retiring import delete_due, retire_target
from .spec import Spec
from .state import ActionStart, ComposeJob, StateDB, TargetRecord, TargetStatus
from .vaulting import stage_category
from .vocabulary import (
    INTERRUPTED,
    PUBLISHED_STAGES,
    ActionKind,
    ComposeStatus,
    JobState,
    Result,
    Stage,
    TargetState,
    Trigger,
)

if TYPE_CHECKING:
    from .progress import Reporter

log = logging.getLogger(__name__)


def _fields(action: Action) -> dict[str, str | None]:
    """Structured log fields of an action (stable names)."""
    return {
        "action": action.kind.value,
        "sig": action.sig,
        "release": action.release,
        "stage": action.stage.value if action.stage else None,
        "compose_id": action.compose_id,
    }


@dataclass(frozen=True)
class Context:
    """Who and what an apply runs for (recorded with every action)."""

    revision: str | None = None
    author: str | None = None  # of the desired-state revision

    def actor(self, trigger: Trigger) -> str | None:
        """Who an action started by ``trigger`` is credited to."""
        if trigger is Trigger.COMMIT:
            return self.author
        return UPSTREAM_ACTOR if trigger is Trigger.UPSTREAM else RECONCILER_ACTOR


#: The actor of an action the upstream started (the build system published packages).
UPSTREAM_ACTOR = "upstream build system"
#: The actor of an action the reconciler started on its own (drift repair, policy).
RECONCILER_ACTOR = "reconciler"


@dataclass(frozen=True)
class ActionResult:
    action: Action
    result: Result
    error: str | None = None
    compose_id: str | None = None
    bytes: int = 0
    files: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class ApplyResult:
    results: tuple[ActionResult, ...] = ()
    stopped: bool = False

    @property
    def ok(self) -> bool:
        return all(r.result is Result.OK for r in self.results) and not self.stopped


@dataclass
class _Outcome:
    compose_id: str | None = None
    bytes: int = 0
    files: int = 0


@dataclass
class Applier:
    spec: Spec
    spec_dir: Path
    host: HostConfig
    state: StateDB
    context: Context = field(default_factory=Context)
    reporter: Reporter | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    #: May this process still publish (the leader lease)? False stops the apply.
    fence: Callable[[], bool] = field(default=no_fence)
    #: The database's clock when the plan began observing (see :meth:`Jobs.submit`).
    since: float | None = None
    _new: dict[tuple[str, str], str] = field(default_factory=dict)
    _jobs: dict[tuple[str, str], ComposeJob] = field(default_factory=dict)

    def apply(self, plan: Plan) -> ApplyResult:
        since = self.state.clock() if self.since is None else self.since
        self._jobs = submit_composes(self.state, plan, self.context.revision, since)
        results: list[ActionResult] = []
        failed: set[tuple[str, str]] = set()
        stopped = False
        for action in plan.actions:
            if self.stop.is_set() or not self.fence():
                stopped = True
                break
            key = (action.sig, action.release)
            if key in failed:
                results.append(
                    ActionResult(
                        action, Result.SKIPPED, "an earlier action of this SIG release failed"
                    )
                )
                continue
            try:
                result = self._run(action)
            except LeaseLost:
                stopped = True
                break
            results.append(result)
            if result.result is not Result.OK:
                failed.add(key)
        if not self.fence():  # no longer the leader: the rest is the next leader's
            log.error("apply stopped: the leader lease was lost", extra={"event": "leader.lost"})
            return ApplyResult(tuple(results), stopped=True)
        self._delete_due()
        self._record_statuses([v for v in plan.verdicts if not self._retired(v)], results)
        published = any(r.result is Result.OK and r.action.kind is ActionKind.PUBLISH
                        and r.action.stage is Stage.PRODUCTION for r in results)  # fmt: skip
        check_if_due(self.host, self.state, published)  # did the mirrors pick it up?
        return ApplyResult(tuple(results), stopped)

    def _event(
        self, action: Action, name: str, result: Result | None = None, error: str | None = None
    ) -> Event:
        stage = action.stage or Stage.COMPOSE
        compose_id = action.compose_id or self._new.get((action.sig, action.release))
        tree = self._composes(action)
        target = None
        if stage is not Stage.COMPOSE:
            target = str(self._published(action, stage).path)
        return Event(
            name, action.sig, action.release, stage, compose_id, self.context.revision,
            self.context.author, result, error,
            str(tree.sig_dir(compose_id)) if compose_id else None, target,
        )  # fmt: skip

    def _published(self, action: Action, stage: Stage) -> PublishedTree:
        category = stage_category(self.spec, stage)
        return self.host.published(category, stage, action.sig, action.release)

    def _composes(self, action: Action) -> ComposeTree:
        """The composes of the action's SIG release (a vault action's is a point release)."""
        return self.host.compose_tree(
            action.sig, compose_release(action.release, action.compose_id)
        )

    def _hooks(
        self, action: Action, name: str, result: Result | None = None, error: str | None = None
    ) -> list[HookFailure]:
        if action.kind in {ActionKind.PRUNE, ActionKind.RETIRE}:
            return []
        hooks = self.host.hooks
        return run_hooks(hooks.dir, self._event(action, name, result, error), hooks.timeout)

    def _run(self, action: Action) -> ActionResult:
        now = datetime.now(UTC)
        action_id = self.state.history.start(ActionStart(
            action.kind.value, action.sig, action.release, action.stage, action.compose_id,
            action.reason, self.context.revision, self.context.author, now, action.trigger,
            self.context.actor(action.trigger), node=this_process(self.host),
        ))  # fmt: skip
        stage = (action.stage or Stage.COMPOSE).value
        blocked = self._hooks(action, f"pre-{stage}")
        if blocked:
            error = "; ".join(str(b) for b in blocked)
            log.warning("apply: %s blocked: %s", action.describe(), error,
                        extra={"event": "action.blocked", **_fields(action)})  # fmt: skip
            self.state.history.finish(
                action_id, result=Result.BLOCKED, error=error, finished_at=datetime.now(UTC)
            )
            return ActionResult(action, Result.BLOCKED, error)
        log.info("apply: %s (%s)", action.describe(), action.reason,
                 extra={"event": "action.start", **_fields(action)})  # fmt: skip
        try:
            outcome = self._execute(action)
        except LeaseLost:
            self.state.history.finish(
                action_id, result=Result.FAILED, error=INTERRUPTED, finished_at=datetime.now(UTC)
            )
            raise
        except (ReconcilerError, OSError) as exc:
            log.error("apply: %s failed: %s", action.describe(), exc,
                      extra={"event": "action.failed", **_fields(action)})  # fmt: skip
            self.state.history.finish(
                action_id, result=Result.FAILED, error=str(exc), finished_at=datetime.now(UTC)
            )
            self._hooks(action, f"post-{stage}", Result.FAILED, str(exc))
            self._hooks(action, "on-failure", Result.FAILED, str(exc))
            seconds = (datetime.now(UTC) - now).total_seconds()
            return ActionResult(action, Result.FAILED, str(exc), seconds=seconds)
        self._hooks(action, f"post-{stage}", Result.OK)
        log.info("apply: %s done", action.describe(), extra={
            "event": "action.done", "bytes": outcome.bytes, "files": outcome.files,
            **_fields(action), "compose_id": outcome.compose_id,
        })  # fmt: skip
        self.state.history.finish(
            action_id, result=Result.OK, bytes=outcome.bytes, files=outcome.files,
            finished_at=datetime.now(UTC), compose_id=outcome.compose_id,
        )  # fmt: skip
        seconds = (datetime.now(UTC) - now).total_seconds()
        return ActionResult(
            action, Result.OK, None, outcome.compose_id, outcome.bytes, outcome.files, seconds
        )

    def _execute(self, action: Action) -> _Outcome:
        if action.kind is ActionKind.COMPOSE:
            return self._compose(action)
        if action.kind is ActionKind.PUBLISH:
            return self._publish(action)
        if action.kind is ActionKind.RETIRE:  # a removed release's target (endoflife)
            assert action.stage is not None
            due = datetime.now(UTC) + self.spec.defaults.publish.delete_grace
            tree = self._published(action, action.stage)
            stats = retire_target(self.state, tree, due, action.reason)
            return _Outcome(action.compose_id, stats.bytes, stats.files)
        return self._prune(action)

    def _compose(self, action: Action) -> _Outcome:
        own = Desired(self.spec, self.spec_dir, self.context.revision)
        specs = Specs(self.host, own=own)
        worker = JobWorker(self.host, self.state, specs, self.reporter, self.stop)
        wanted = self._jobs[(action.sig, action.release)].id
        job = worker.wait_for(wanted)
        if job is None:
            raise ReconcilerError(f"stopped before compose job {wanted} ended (it stays queued)")
        if job.state is JobState.FAILED or job.compose_id is None:
            raise ReconcilerError(job.error or f"compose job {job.id} failed")
        self._new[(action.sig, action.release)] = job.compose_id
        return _Outcome(job.compose_id, job.bytes, job.packages)

    def _publish(self, action: Action) -> _Outcome:
        assert action.stage is not None
        compose_id = action.compose_id or self._new.get((action.sig, action.release))
        if compose_id is None:
            raise PublishError("no compose to publish: the compose of this plan did not finish")
        tree = self._composes(action)
        source = tree.sig_dir(compose_id)
        if not source.is_dir():
            raise PublishError(f"{source}: compose {compose_id} is missing on disk")
        target = self._published(action, action.stage)
        policy = self.spec.defaults.publish
        publisher = Publisher(self.state, target, Owner(policy.owner, policy.group))
        publisher.fence = self.fence  # checked again before each phase of the publish
        key = TargetKey(action.stage, action.sig, action.release)
        changes = None if action.repair else changes_chain(self.state, tree, key, compose_id)
        # a repair checks what drift named by content, and places only verified bytes
        drifted = drift.actionable(self.state.sources.drift(key)) if action.repair else ()
        # The first publish to a target (or the first after an unfinished one) may land
        # on a tree made by other means: what it holds is walked before (when prune may
        # retire some of it) and after (so that it is known and reported at once).
        held = self.state.targets.get(action.sig, action.release, action.stage)
        fresh = held is None or self.state.targets.is_publishing(key)
        vault = action.stage is Stage.VAULT  # never pruned; its lists walk the whole vault
        prune = self.spec.prune(action.sig) and not vault
        found = (
            walk_target(self.spec, self.state, target, record=False) if fresh and prune else None
        )
        healer = None
        if action.repair:  # createrepo_c and the upstream client: only when repairing
            from .healing import Healer

            healer = Healer(self.spec, self.host, self.state, target, compose_id)
        if not self.fence():  # the last moment before the trees change
            raise LeaseLost(f"not publishing {compose_id} to {target.path}: lease lost")
        self.state.targets.mark_publishing(key, compose_id)  # until the target record says so
        stats = publisher.publish(
            source,
            policy.delete_grace,
            datetime.now(UTC),
            repair=action.repair,
            manifest=tree.manifest(compose_id),
            changes=changes,
            suspect=[d.path for d in drifted],
            sources=healer,
            prune=prune,
            unmanaged=found,
        )
        self.state.sources.set_drift(key, ())
        if fresh and not vault:
            walk_target(self.spec, self.state, target)
        self._lists_after(action.stage, healer.touched if healer is not None else set())
        self.state.targets.set(TargetRecord(action.sig, action.release, action.stage, compose_id,
                                            datetime.now(UTC), self.context.revision))  # fmt: skip
        if action.stage is Stage.PRODUCTION:  # what mirrors should now serve, and since when
            self.state.mirrors.record_served(
                action.sig, action.release, target.inventory_prefix, datetime.now(UTC)
            )
        self.state.targets.published(key)
        return _Outcome(compose_id, stats.bytes, stats.files)

    def _lists_after(self, stage: Stage, healed: set[Stage]) -> None:
        """The mirrors' file lists, once a publish to ``stage`` (or a repair of
        production while publishing another stage) changed what they name."""
        if stage is Stage.PRODUCTION or Stage.PRODUCTION in healed:
            write_lists(self.spec, self.host, self.state)
        if stage is Stage.VAULT:  # the tree is complete: its lists now
            write_vault_lists(self.spec, self.host, self.state)

    def _prune(self, action: Action) -> _Outcome:
        cid = action.compose_id or ""
        m = COMPOSE_ID_RE.fullmatch(cid)
        if not m or m["sig"] != action.sig or m["release"] != action.release:
            raise ReconcilerError(f"refusing to prune {cid!r}: not a compose of this SIG release")
        in_use = [
            t.stage
            for t in self.state.targets.all()
            if (t.sig, t.release, t.compose_id) == (action.sig, action.release, cid)
        ]
        if in_use:
            raise ReconcilerError(f"refusing to prune {cid}: published in {', '.join(in_use)}")
        tree = self.host.compose_tree(action.sig, action.release)
        if tree.latest_link.is_symlink() and tree.latest_link.readlink().name == cid:
            if in_spec(self.spec, action.sig, action.release):
                raise ReconcilerError(f"refusing to prune {cid}: {tree.latest_link} points to it")
            tree.latest_link.unlink()  # the release was removed: all its composes go
        path = tree.compose_dir(cid)
        if path.is_dir() and not path.is_symlink():
            # mark first, so that a crash mid-way leaves an obviously dead compose
            write_status(path, ComposeStatus.DOOMED)
            shutil.rmtree(path)
        return _Outcome(cid)

    def _delete_due(self) -> None:
        for stage in PUBLISHED_STAGES:
            root = self.host.roots.of(stage)
            if not root.is_dir():
                continue
            try:
                count = delete_due(self.state, stage, root, datetime.now(UTC))
            except OSError as exc:
                log.error("deleting due files under %s failed: %s", root, exc)
                continue
            if count:
                log.info("deleted %d superseded files under %s", count, root)
            # The lists follow the inventory: when it changed since they were written (these
            # deletions, or a pass killed between deleting and listing), write them now.
            if stage is Stage.PRODUCTION and self.state.inventory.lists_outdated(stage):
                write_lists(self.spec, self.host, self.state)
        # the vault deletes nothing, but a drift check may have found the rest of
        # mirror/vault/ changed (the distribution's own vault): its lists follow
        vaults = any(t.stage is Stage.VAULT for t in self.state.targets.all())
        if vaults and self.state.inventory.lists_outdated(Stage.VAULT):
            write_vault_lists(self.spec, self.host, self.state, walk=False)

    def _retired(self, v: Verdict) -> bool:
        """A removed release's target that was waiting for its deletions, and whose last
        ones the delayed deletes of this apply just did: it has nothing left to show."""
        waiting = v.state is TargetState.PROGRESSING and v.stage is not Stage.COMPOSE
        if not waiting or in_spec(self.spec, v.sig, v.release):
            return False
        category = self.spec.defaults.publish.category
        prefix = self.host.published(category, v.stage, v.sig, v.release).inventory_prefix
        return not any(p.relpath.startswith(prefix) for p in self.state.pending.all(v.stage))

    def _record_statuses(self, verdicts: list[Verdict], results: list[ActionResult]) -> None:
        now = datetime.now(UTC)
        outcome: dict[tuple[str, str, Stage], ActionResult] = {}
        for r in results:
            stage = r.action.stage or Stage.COMPOSE
            if r.action.kind is not ActionKind.PRUNE:
                outcome[(r.action.sig, r.action.release, stage)] = r
        statuses = []
        for v in verdicts:
            state, actual, reason = v.state, v.actual, v.reason
            done = outcome.get((v.sig, v.release, v.stage))
            retired = done is not None and done.action.kind is ActionKind.RETIRE
            if retired and done is not None and done.result is Result.OK:
                state, actual = TargetState.PROGRESSING, None  # its files wait for the grace
            elif done is not None and done.result is Result.OK:
                state, actual = TargetState.SYNCED, done.compose_id or actual
                reason = _settled(v, done)
            elif done is not None and done.result is Result.BLOCKED:
                state, reason = TargetState.BLOCKED, f"blocked: {done.error}"
            elif done is not None:
                state, reason = TargetState.FAILED, f"{done.result}: {done.error}"
            desired = actual if done is not None and done.result is Result.OK else v.desired
            statuses.append(
                TargetStatus(v.sig, v.release, v.stage, state, desired, actual, reason, now)
            )
        self.state.targets.set_statuses(statuses)


def _settled(verdict: Verdict, done: ActionResult) -> str:
    """A target's reason once its action succeeded: the facts now, not the plan's."""
    if done.action.kind is ActionKind.COMPOSE:
        return f"{done.compose_id} composed ({done.action.reason})"
    note = " (drift repaired)" if done.action.repair else ""
    return f"{verdict.why}; {done.compose_id} is published{note}"
