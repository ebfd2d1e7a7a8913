"""Observing: scans and parses that produce :class:`~reconciler.facts.Observed`. No decisions.

* composes on disk: ID, STATUS, whether a STARTED one is still running (its
  lock is held), finished time, the upstream revision and ``refresh`` it was
  made from (``compose/metadata/reconciler.json``);
* what each staging and production target holds, from the state's record;
* the upstream revision of every SIG release: a digest over each variant's
  ``repomd.xml``, fetched with conditional requests (an unchanged upstream
  costs one small 304 response per repo).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from . import drift
from .composemeta import ComposeStatus, list_composes, read_record, upstream_revision
from .errors import ReconcilerError
from .facts import ComposeFact, Observed, ReleaseFacts, Stage, TargetFact, UpstreamFact
from .hostconfig import HostConfig
from .layout import ComposeTree, variants_of
from .spec import ReleaseSpec, Spec
from .state import StateDB, UpstreamCacheEntry
from .upstream import Upstream

log = logging.getLogger(__name__)


def _lock_is_held(path: Path) -> bool:
    """True when another process holds ``path``'s flock (without taking it for long)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def observe_composes(tree: ComposeTree) -> tuple[ComposeFact, ...]:
    running = _lock_is_held(tree.lock_file)
    facts: list[ComposeFact] = []
    for c in list_composes(tree):
        record = read_record(tree, c.compose_id)
        finished_at = (
            datetime.fromisoformat(record.finished) if record and record.finished else None
        )
        facts.append(
            ComposeFact(
                date=c.date,
                respin=c.respin,
                compose_id=c.compose_id,
                status=c.status,
                running=running and c.status is ComposeStatus.STARTED,
                finished_at=finished_at,
                upstream_revision=record.upstream_revision if record else None,
                refresh=record.refresh if record else None,
            )
        )
    return tuple(facts)


def observe_upstream(
    spec: Spec, rel: ReleaseSpec, up: Upstream, state: StateDB, base_url: str | None
) -> UpstreamFact:
    """The upstream revision of one SIG release, or the first error met."""
    digests: dict[str, str] = {}
    for variant in variants_of(rel):
        url = spec.upstream_url(rel, variant.repo, variant.upstream_arch, base_url)
        url = f"{url}/repodata/repomd.xml"
        cached = state.upstream_cache(url)
        try:
            body, etag, modified = up.get_if_changed(
                url, cached.etag if cached else None, cached.last_modified if cached else None
            )
        except ReconcilerError as exc:
            return UpstreamFact(error=str(exc))
        if body is None and cached is not None:
            digests[str(variant)] = cached.sha256
            continue
        if body is None:
            return UpstreamFact(error=f"{url}: 304 without a cached copy")
        sha = hashlib.sha256(body).hexdigest()
        state.set_upstream_cache(UpstreamCacheEntry(url, etag, modified, sha, datetime.now(UTC)))
        digests[str(variant)] = sha
    return UpstreamFact(revision=upstream_revision(digests))


def _repomd_drift(
    state: StateDB, stage: Stage, root: Path, prefix: str, rel: ReleaseSpec
) -> list[str]:
    """The cheap check of every pass: stat each published repomd.xml against the inventory."""
    found = []
    for variant in variants_of(rel):
        path = f"{prefix}/{variant.rel_dir}/repodata/repomd.xml"
        entry = state.inventory(stage.value, path).get(path)
        if entry is None:
            continue
        try:
            st = (root / path).lstat()
        except FileNotFoundError:
            found.append(f"missing: {path}")
            continue
        if (st.st_size, st.st_mtime_ns, st.st_ino) != (entry.size, entry.mtime_ns, entry.ino):
            found.append(f"changed: {path}")
    return found


def _target(
    spec: Spec, host: HostConfig, state: StateDB, sig: str, release: str, stage: Stage
) -> TargetFact:
    record = state.target(sig, release, stage.value)
    if record is None:
        return TargetFact()
    root = host.roots.production if stage is Stage.PRODUCTION else host.roots.staging
    prefix = f"{spec.defaults.publish.category}/{release}/{sig}"
    rel = spec.release(sig, release)
    found = dict.fromkeys(drift.load(state, stage.value, sig, release))
    found.update(dict.fromkeys(_repomd_drift(state, stage, root, prefix, rel)))
    return TargetFact(record.compose_id, record.published_at, tuple(found))


def check_drift(spec: Spec, host: HostConfig, state: StateDB) -> dict[tuple[str, str, str], int]:
    """Run the drift check of every published target now; store and return the counts."""
    counts: dict[tuple[str, str, str], int] = {}
    for target in state.targets():
        if target.sig not in spec.sigs:
            continue
        stage = Stage(target.stage)
        root = host.roots.production if stage is Stage.PRODUCTION else host.roots.staging
        prefix = f"{spec.defaults.publish.category}/{target.release}/{target.sig}"
        found = drift.check_target(state, stage.value, root, prefix)
        drift.store(state, stage.value, target.sig, target.release, found)
        counts[(target.sig, target.release, stage.value)] = len(found)
    drift.mark_checked(state)
    return counts


def _first_staged(state: StateDB, sig: str, release: str) -> dict[str, datetime]:
    first: dict[str, datetime] = {}
    for event in state.stage_events(sig, release, Stage.STAGING.value):
        first.setdefault(event.compose_id, event.at)
    return first


def _previous_production(state: StateDB, sig: str, release: str, current: str | None) -> str | None:
    events = state.stage_events(sig, release, Stage.PRODUCTION.value)
    for event in reversed(events):
        if event.compose_id != current:
            return event.compose_id
    return None


def observe(
    spec: Spec,
    host: HostConfig,
    state: StateDB,
    up: Upstream | None,
    now: datetime | None = None,
    only: Iterable[tuple[str, str]] | None = None,
) -> Observed:
    """Observe every SIG release of ``spec`` (or only those in ``only``).

    ``up=None`` skips the upstream (for status and tests that need no network).
    """
    wanted = set(only) if only is not None else None
    if host.drift_interval and drift.due(state, host.drift_interval):
        check_drift(spec, host, state)
    releases: dict[tuple[str, str], ReleaseFacts] = {}
    for sig_name, sig in sorted(spec.sigs.items()):
        for rel_name, rel in sorted(sig.releases.items()):
            if wanted is not None and (sig_name, rel_name) not in wanted:
                continue
            tree = ComposeTree(host.roots.compose, sig_name, rel_name)
            production = _target(spec, host, state, sig_name, rel_name, Stage.PRODUCTION)
            needs_upstream = (
                up is not None and not rel.suspend and rel.compose.trigger == "upstream"
            )
            releases[(sig_name, rel_name)] = ReleaseFacts(
                sig=sig_name,
                release=rel_name,
                composes=observe_composes(tree),
                staging=_target(spec, host, state, sig_name, rel_name, Stage.STAGING),
                production=production,
                staged_at=_first_staged(state, sig_name, rel_name),
                previous_production=_previous_production(
                    state, sig_name, rel_name, production.compose_id
                ),
                upstream=(
                    observe_upstream(spec, rel, up, state, host.upstream_base_url)
                    if needs_upstream and up is not None
                    else UpstreamFact()
                ),
            )
    return Observed(now=now or datetime.now(UTC), releases=releases)
