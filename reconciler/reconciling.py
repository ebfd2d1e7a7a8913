"""One reconcile pass: source -> spec -> observe -> plan -> (apply).

The git source is fetched each pass. A head that cannot be fetched, is
rewritten, is not signed as configured, or does not validate is *not* used:
the pass goes on from the last good revision and the problem is reported in
``status`` (and kept in the state as ``source_problems``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .applying import Applier, ApplyResult, Context
from .errors import (
    PlanError,
    SourceError,
    SourceRejected,
    SourceUnavailable,
    SpecError,
    StateError,
)
from .hostconfig import HostConfig
from .locking import exclusive_lock, waiting_lock
from .observing import observe
from .planning import Plan, plan
from .spec import Spec
from .specfile import load_spec
from .state import DB_NAME, REBUILD_HINT, StateDB

if TYPE_CHECKING:
    from .progress import Reporter
    from .recordcache import RecordCache
from .upstream import Upstream

log = logging.getLogger(__name__)

META_GOOD = "last_good_revision"
META_APPLIED = "last_applied_revision"
META_PROBLEMS = "source_problems"


@dataclass(frozen=True)
class Source:
    """The spec a pass works from, where it came from, and what was wrong with newer heads."""

    spec: Spec
    spec_dir: Path
    revision: str | None = None
    author: str | None = None
    problems: tuple[str, ...] = field(default_factory=tuple)


def checkout_dir(host: HostConfig) -> Path:
    return host.state_dir / "checkout"


def _has_run_before(host: HostConfig) -> Path | None:
    """Evidence that this host was reconciled before: the checkout or a published tree."""
    for path in (checkout_dir(host), host.roots.staging, host.roots.production):
        if path.is_dir() and any(path.iterdir()):
            return path
    return None


def open_state(host: HostConfig) -> StateDB:
    """Open the state database; refuse to start afresh where trees were already published."""
    db = host.state_dir / DB_NAME
    if not db.exists():
        evidence = _has_run_before(host)
        if evidence is not None:
            raise StateError(
                f"state database {db} is missing, but {evidence} shows this host was "
                f"reconciled before; {REBUILD_HINT}"
            )
    return StateDB.open(host.state_dir)


def _git_source(host: HostConfig, state: StateDB, cache: RecordCache | None) -> Source:
    from .gitsource import GitSource  # GitPython: only when the source is git

    assert host.git is not None
    git = GitSource(host.git, host.state_dir / "git")
    good, applied = state.get_meta(META_GOOD), state.get_meta(META_APPLIED)
    problems: list[str] = []
    head: str | None = None
    try:
        head = git.fetch()
    except SourceUnavailable as exc:
        problems.append(f"SourceUnavailable: {exc}")
    dest = checkout_dir(host)
    if head is not None and head != good:
        candidate = host.state_dir / "candidate"
        try:
            git.check_revision(head, applied)
            git.export(head, candidate)
            load_spec(candidate, cache)
            good = head
            state.set_meta(META_GOOD, good)
        except SourceRejected as exc:
            problems.append(f"SourceRejected: {exc}")
        except SpecError as exc:
            lines = "; ".join(str(i) for i in exc.issues)
            problems.append(f"InvalidSpec at {head[:12]}: {lines}")
    if good is None:
        state.set_meta(META_PROBLEMS, json.dumps(problems))
        raise SourceError("no usable desired-state revision yet: " + " | ".join(problems))
    if not (dest / "defaults.yaml").is_file() or state.get_meta("checkout_revision") != good:
        git.export(good, dest)
        state.set_meta("checkout_revision", good)
    state.set_meta(META_PROBLEMS, json.dumps(problems))
    commit = git.commit(good)
    return Source(load_spec(dest, cache), dest, good, commit.author, tuple(problems))


def load_against(
    host: HostConfig, rev: str, workdir: Path, cache: RecordCache | None = None
) -> Source:
    """The spec at ``rev`` (a branch or commit) of the git source, exported into ``workdir``.

    For pull-request plans: nothing is recorded as good or applied.
    """
    from .gitsource import GitSource

    if host.git is None:
        raise SourceError("--against needs the git section of the host config")
    git = GitSource(host.git, host.state_dir / "git")
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


def make_plan(host: HostConfig, state: StateDB, source: Source) -> Plan:
    with Upstream(host.download, log) as up:
        observed = observe(source.spec, host, state, up)
    return plan(source.spec, observed, source.revision, repair_drift=host.drift == "repair")


@contextmanager
def apply_lock(host: HostConfig, wait: bool = False) -> Iterator[None]:
    host.state_dir.mkdir(parents=True, exist_ok=True)
    lock = host.state_dir / "apply.lock"
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
) -> PassResult:
    """One pass. With ``saved``, refuses it when the revision or the observed world changed."""
    if apply:
        state.mark_interrupted(datetime.now(UTC))
    source = against or load_source(host, state, spec_dir, cache)
    current = make_plan(host, state, source)
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
    if not apply:
        return PassResult(source, current)
    applier = Applier(
        source.spec, source.spec_dir, host, state, Context(source.revision, source.author), reporter
    )
    if stop is not None:
        applier.stop = stop
    result = applier.apply(current)
    if source.revision is not None:
        state.set_meta(META_APPLIED, source.revision)
    return PassResult(source, current, result)
