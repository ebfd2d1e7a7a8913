"""One reconcile pass: source -> spec -> observe -> plan -> (apply).

The git source is fetched each pass. A head that cannot be fetched, is
rewritten, is not signed as configured, or does not validate is *not* used:
the pass goes on from the last good revision and the problem is reported in
``status`` (and kept in the state as ``source_problems``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .applying import Applier, ApplyResult, Context
from .composejobs import expire_abandoned
from .endoflife import plan_with_endoflife
from .errors import (
    NoGoodRevision,
    PlanError,
    SourceError,
    SourceRejected,
    SourceUnavailable,
    SpecError,
    StateError,
)
from .facts import Learned
from .hostconfig import HostConfig
from .layout import ComposeTree
from .leftovers import removed_releases
from .locking import exclusive_lock, waiting_lock
from .observing import observe
from .planning import Plan
from .recording import record_learned
from .spec import Spec
from .specfile import load_spec
from .state import REBUILD_HINT, SourceRecord, StateDB
from .vaulting import vaulted, with_vaults

if TYPE_CHECKING:
    from .progress import Reporter
    from .recordcache import RecordCache
from .upstream import Upstream
from .vocabulary import Dialect, Stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """The spec a pass works from, where it came from, and what was wrong with newer heads.

    ``record`` is what the state should keep of the git source after this pass (the
    revision that validated, the one checked out, the problems); an applying pass
    keeps it, a plan does not (planning changes nothing).
    """

    spec: Spec
    spec_dir: Path
    revision: str | None = None
    author: str | None = None
    problems: tuple[str, ...] = field(default_factory=tuple)
    record: SourceRecord | None = None


def _has_run_before(host: HostConfig) -> Path | None:
    """Evidence that this reconciler ran on this host before: its desired-state checkout,
    or a compose it made (its file manifest). Staging and production trees are not:
    on its first day they hold what the old scripts published, which is adopted
    (its files are unmanaged until a publish or ``reconciler adopt`` takes them over)."""
    checkout = host.layout.checkout
    if checkout.is_dir() and any(checkout.iterdir()):
        return checkout
    root = host.roots.compose
    for manifest in root.glob(ComposeTree.MANIFEST_GLOB) if root.is_dir() else ():
        return manifest
    return None


def open_state(host: HostConfig) -> StateDB:
    """Open the state database the host config names; refuse to start a SQLite file afresh
    where this reconciler ran before (its state would be lost: ``state rebuild``). A
    PostgreSQL database is shared and outlives any host: an empty one gets the schema."""
    db = host.layout.database
    if host.state.dialect is Dialect.SQLITE and not db.exists():
        evidence = _has_run_before(host)
        if evidence is not None:
            raise StateError(
                f"state database {db} is missing, but {evidence} shows this host was "
                f"reconciled before; {REBUILD_HINT}"
            )
    return StateDB.connect(host)


def _git_source(host: HostConfig, state: StateDB, cache: RecordCache | None) -> Source:
    from .gitsource import GitSource  # GitPython: only when the source is git

    assert host.git is not None
    layout = host.layout
    git = GitSource(host.git, layout.git)
    known = state.sources.source()
    good = known.good_revision
    problems: list[str] = []
    head: str | None = None
    try:
        head = git.fetch()
    except SourceUnavailable as exc:
        problems.append(f"SourceUnavailable: {exc}")
    dest = layout.checkout
    if head is not None and head != good:
        try:
            git.check_revision(head, known.applied_revision)
            git.export(head, layout.candidate)
            load_spec(layout.candidate, cache)
            good = head
        except SourceRejected as exc:
            problems.append(f"SourceRejected: {exc}")
        except SpecError as exc:
            lines = "; ".join(str(i) for i in exc.issues)
            problems.append(f"InvalidSpec at {head[:12]}: {lines}")
    if good is None:
        raise NoGoodRevision(tuple(problems))
    if not (dest / "defaults.yaml").is_file() or known.checkout_revision != good:
        git.export(good, dest)
    record = replace(known, good_revision=good, checkout_revision=good, problems=tuple(problems))
    commit = git.commit(good)
    return Source(load_spec(dest, cache), dest, good, commit.author, tuple(problems), record)


def load_against(
    host: HostConfig, rev: str, workdir: Path, cache: RecordCache | None = None
) -> Source:
    """The spec at ``rev`` (a branch or commit) of the git source, exported into ``workdir``.

    For pull-request plans: nothing is recorded as good or applied.
    """
    from .gitsource import GitSource

    if host.git is None:
        raise SourceError("--against needs the git section of the host config")
    git = GitSource(host.git, host.layout.git)
    sha = git.fetch_ref(rev)
    dest = git.export(sha, workdir / "desired-state")
    return Source(load_spec(dest, cache), dest, sha, git.commit(sha).author)


def load_source(
    host: HostConfig,
    state: StateDB,
    spec_dir: Path | None = None,
    cache: RecordCache | None = None,
) -> Source:
    """The spec to work from: ``spec_dir`` when given (no git), else the git source.

    With ``cache``, a spec validated before in the same bytes is taken from it.
    """
    if spec_dir is not None:
        return Source(load_spec(spec_dir, cache), spec_dir)
    if host.git is None:
        raise SourceError("the host config has no git section; pass --desired-state DIR")
    return _git_source(host, state, cache)


@dataclass(frozen=True)
class PassResult:
    source: Source
    plan: Plan
    applied: ApplyResult | None = None

    @property
    def ok(self) -> bool:
        return self.applied is None or self.applied.ok


def observe_and_plan(host: HostConfig, state: StateDB, source: Source) -> tuple[Plan, Learned]:
    """Observe (reads only) and plan (pure); returns the plan and what observing learned."""
    with Upstream(host.download, log) as up:
        observed = observe(source.spec, host, state, up)
    removed = removed_releases(source.spec, host, state)  # what removed releases left behind
    repair = host.drift == "repair"
    # vaults keep their composes, also those of releases removed from the desired state
    held = [(t.sig, t.release, t.compose_id) for t in state.targets.all() if t.stage is Stage.VAULT]
    kept = vaulted(source.spec, (cid for _sig, _point, cid in held))
    planned = plan_with_endoflife(source.spec, observed, removed, source.revision, repair, kept)
    planned = with_vaults(source.spec, observed, planned, held)
    return planned, observed.learned


@contextmanager
def apply_lock(host: HostConfig, wait: bool = False) -> Iterator[None]:
    host.state_dir.mkdir(parents=True, exist_ok=True)
    lock = host.layout.apply_lock
    with waiting_lock(lock, "an apply") if wait else exclusive_lock(lock, "an apply or run"):
        yield


def run_pass(
    host: HostConfig,
    state: StateDB,
    *,
    apply: bool,
    spec_dir: Path | None = None,
    saved: Plan | None = None,
    reporter: Reporter | None = None,
    stop: threading.Event | None = None,
    against: Source | None = None,
    cache: RecordCache | None = None,
    fence: Callable[[], bool] | None = None,
) -> PassResult:
    """One pass. With ``saved``, refuses it when the revision or the observed world changed.
    With ``fence`` (the leader lease's ``valid``), the apply stops when it turns False."""
    if apply:
        # the jobs of dead workers first: an action waiting for a job whose worker died
        # (the applier itself, killed) is then no longer spared as a live job's
        expire_abandoned(host, state)
        state.history.mark_interrupted(datetime.now(UTC))
    try:
        source = against or load_source(host, state, spec_dir, cache)
    except NoGoodRevision as exc:
        if apply:  # for status: why there is nothing to work from
            state.sources.set_source(replace(state.sources.source(), problems=exc.problems))
        raise
    since = state.clock()  # a compose job that ends after this is one this plan wanted
    current, learned = observe_and_plan(host, state, source)
    if saved is not None:
        if saved.revision != current.revision:
            raise PlanError(
                f"stale plan: made at revision {saved.revision}, "
                f"the desired state is now at {current.revision}"
            )
        if saved.observed_digest != current.observed_digest:
            raise PlanError(
                "stale plan: the trees or the upstream changed since it was made; plan again"
            )
        current = saved
    if not apply:  # a plan: say what each publish would do to its files, and what it ships
        from .diffing import package_diffs
        from .previewing import previews

        shown = replace(
            current,
            previews=previews(host, source.spec, state, current),
            diffs=package_diffs(host, current, source.spec),
        )
        return PassResult(source, shown)
    # a local folder has no source record: keep what is known, with what it did not read
    kept = replace(source.record or state.sources.source(), ignored=source.spec.ignored_files)
    state.sources.set_source(kept)
    record_learned(state, learned)
    applier = Applier(
        source.spec, source.spec_dir, host, state, Context(source.revision, source.author), reporter
    )
    if stop is not None:
        applier.stop = stop
    if fence is not None:
        applier.fence = fence
    applier.since = since
    result = applier.apply(current)
    if source.revision is not None and source.record is not None:
        state.sources.set_source(replace(kept, applied_revision=source.revision))
    return PassResult(source, current, result)
