"""Observing: scans and parses that produce :class:`~reconciler.facts.Observed`. No decisions.

* composes on disk: ID, STATUS, whether a STARTED one is still running (its
  lock is held), finished time, the upstream revision and ``refresh`` it was
  made from (``compose/metadata/reconciler.json``);
* what each staging and production target holds, from the state's record;
* the upstream revision of every SIG release: a digest over each variant's
  ``repomd.xml``, fetched with conditional requests (an unchanged upstream
  costs one small 304 response per repo);
* drift: the whole check when ``drift_interval`` has passed (with the deep check of
  every file's content when ``drift_deep_interval`` has), else what was last
  recorded, plus a stat of every published ``repomd.xml``. The same walk finds the
  *unmanaged* paths of each target (in its tree, not in its inventory): not drift,
  only reported (:func:`unmanaged_summaries`).

Observing writes nothing: new upstream validators, drift findings and unmanaged paths
are returned in :class:`~reconciler.facts.Learned`, and the apply step keeps them,
so ``reconciler plan`` leaves the state as it found it.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path, PurePosixPath

from . import drift, ownership
from .checksums import DigestCache, Sum, expected_sums, metadata_sums
from .composemeta import list_composes, read_record, upstream_revision
from .errors import ReconcilerError
from .facts import (
    ComposeFact,
    DriftFinding,
    Learned,
    Observed,
    ReleaseFacts,
    TargetFact,
    TargetKey,
    UnmanagedWalk,
    UpstreamCacheEntry,
    UpstreamFact,
)
from .hostconfig import HostConfig
from .layout import ComposeTree, PublishedTree
from .names import compose_release
from .nodes import is_dead_here
from .pathglob import PathPatterns
from .spec import ReleaseSpec, Spec, variants_of
from .state import ComposesOfJobs, StateDB, UnmanagedSummary
from .upstream import Upstream
from .vaulting import stage_category
from .vaultspec import vault_lists_dir
from .vocabulary import LISTED_STAGES, PUBLISHED_STAGES, ComposeStatus, DriftKind, Stage

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


_NO_JOBS = ComposesOfJobs()


def observe_composes(tree: ComposeTree, jobs: ComposesOfJobs = _NO_JOBS) -> tuple[ComposeFact, ...]:
    """The composes of one SIG release; ``jobs``: what the compose jobs say of them (one
    that a live job makes runs, also when its lock is another host's)."""
    locked = _lock_is_held(tree.lock_file)
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
                running=(locked or c.compose_id in jobs.working)
                and c.status is ComposeStatus.STARTED,
                finished_at=finished_at,
                upstream_revision=record.upstream_revision if record else None,
                refresh=record.refresh if record else None,
                verified=bool(record.signature_keys) if record else False,
                abandoned=c.compose_id in jobs.abandoned,
            )
        )
    return tuple(facts)


def observe_upstream(
    spec: Spec, rel: ReleaseSpec, up: Upstream, state: StateDB, base_url: str | None
) -> tuple[UpstreamFact, tuple[UpstreamCacheEntry, ...]]:
    """The upstream revision of one SIG release (or the first error met), and the
    validators fetched anew (for the apply step to keep)."""
    digests: dict[str, str] = {}
    fresh: list[UpstreamCacheEntry] = []
    for variant in variants_of(rel):
        url = spec.upstream_url(rel, variant.repo, variant.upstream_arch, base_url)
        url = f"{url}/repodata/repomd.xml"
        cached = state.sources.upstream_cache(url)
        try:
            body, etag, modified = up.get_if_changed(
                url, cached.etag if cached else None, cached.last_modified if cached else None
            )
        except ReconcilerError as exc:
            return UpstreamFact(error=str(exc)), tuple(fresh)
        if body is None and cached is not None:
            digests[str(variant)] = cached.sha256
            continue
        if body is None:
            return UpstreamFact(error=f"{url}: 304 without a cached copy"), tuple(fresh)
        sha = hashlib.sha256(body).hexdigest()
        fresh.append(UpstreamCacheEntry(url, etag, modified, sha, datetime.now(UTC)))
        digests[str(variant)] = sha
    return UpstreamFact(revision=upstream_revision(digests)), tuple(fresh)


def _target(
    spec: Spec,
    state: StateDB,
    tree: PublishedTree,
    checked: Mapping[TargetKey, tuple[DriftFinding, ...]] | None,
) -> TargetFact:
    """What a target holds, with its drift: from this pass's whole check when it ran,
    else as last recorded, plus the cheap stat of every published ``repomd.xml``."""
    record = state.targets.get(tree.sig, tree.release, tree.stage)
    if record is None:
        return TargetFact()
    key = TargetKey(tree.stage, tree.sig, tree.release)
    known = (
        checked.get(key, ()) if checked is not None else drift.actionable(state.sources.drift(key))
    )
    variants = variants_of(spec.release(tree.sig, tree.release))
    repomds = {}
    for variant in variants:
        path = tree.repomd(variant)
        repomds.update(state.inventory.entries(tree.stage, path))
    found = dict.fromkeys(str(d) for d in known)
    found.update(dict.fromkeys(str(d) for d in drift.check_repomds(repomds, tree, variants)))
    return TargetFact(record.compose_id, record.published_at, tuple(found))


def check_drift(
    spec: Spec, host: HostConfig, state: StateDB, deep: bool = False, now: datetime | None = None
) -> Learned:
    """Run the whole drift check of every published target now (reads only): the drift
    found, the unmanaged paths of each target, and when (for the state to keep).

    ``deep`` also hashes every published file and compares it with the compose's
    checksums (CORRUPT findings). Without it, the CORRUPT findings recorded by the last
    deep check are kept: a stat cannot see that they are gone (a repair clears them).
    """
    now = now or datetime.now(UTC)
    found: dict[TargetKey, tuple[DriftFinding, ...]] = {}
    walks: dict[TargetKey, UnmanagedWalk] = {}
    category = spec.defaults.publish.category
    cache = DigestCache()
    for target in state.targets.all():
        if target.sig not in spec.sigs:
            continue
        vault = target.stage is Stage.VAULT  # checked, never repaired (vaulting)
        where = stage_category(spec, target.stage)
        tree = host.published(where, target.stage, target.sig, target.release)
        key = TargetKey(tree.stage, tree.sig, tree.release)
        inventory = state.inventory.entries(tree.stage, tree.inventory_prefix)
        findings = set(drift.check_target(inventory, tree))
        if deep:
            findings.update(drift.check_deep(_expected(host, tree, target.compose_id), tree, cache))
        else:
            findings.update(d for d in state.sources.drift(key) if d.what is DriftKind.CORRUPT)
        found[key] = tuple(sorted(findings))
        if not vault:  # the vault's unmanaged paths: the one walk of it all, below
            walks[key] = walk_unmanaged(spec, tree, inventory.keys())
    if deep:
        log.info("deep drift check: %d bytes read", cache.bytes)
    rest = {
        stage: walk_rest(
            host, state, stage, category, [w for k, w in walks.items() if k.stage is stage]
        )
        for stage in LISTED_STAGES - {Stage.VAULT}
    }
    # the vault's lists name everything under mirror/vault/ (the distribution's own
    # vault too): one walk of it all, what the vault inventory lacks is unmanaged; only
    # once a vault was published (else the lists there are not the reconciler's)
    if any(t.stage is Stage.VAULT for t in state.targets.all()):
        rest[Stage.VAULT] = walk_rest(host, state, Stage.VAULT, vault_top(spec), ())
    return Learned(
        drift=found,
        drift_checked_at=now,
        unmanaged=walks,
        rest={k: v for k, v in rest.items() if v is not None},
        drift_deep_checked_at=now if deep else None,
    )


def walk_rest(
    host: HostConfig,
    state: StateDB,
    stage: Stage,
    category: str,
    walked: Collection[UnmanagedWalk],
) -> UnmanagedWalk | None:
    """What the stage's category holds outside the SIG directories ``walked`` (and its
    inventory): other SIGs and releases, a person's files. None when there is no
    category directory. Reads only."""
    root = host.roots.of(stage)
    prefix = f"{PurePosixPath(category)}/"
    if not root.joinpath(*PurePosixPath(category).parts).is_dir():
        return None
    owned = state.inventory.entries(stage, prefix).keys()
    skipped = tuple(sorted(w.prefix for w in walked))
    entries = ownership.walk_rest(root, category, owned, skipped)
    return UnmanagedWalk(prefix, tuple(entries), skipped)


def walk_unmanaged(spec: Spec, tree: PublishedTree, owned: Collection[str]) -> UnmanagedWalk:
    """The unmanaged paths of a target (in its tree, not among ``owned``, its inventory's
    paths); those the SIG's ``publish.unmanaged`` patterns cover are marked ignored."""
    patterns = PathPatterns.of(spec.unmanaged(tree.sig))
    return UnmanagedWalk(
        tree.inventory_prefix, tuple(ownership.walk_unmanaged(tree, owned, patterns))
    )


def unmanaged_summaries(
    state: StateDB, category: str | None = None
) -> dict[TargetKey, UnmanagedSummary]:
    """What each published target holds unmanaged, as the last walk found it: files (not
    directories, not those ``publish.unmanaged`` covers), their bytes, a few examples.

    Without ``category`` (``status`` reads no desired state) the target's directory is
    the one its newest walk was of.
    """
    out: dict[TargetKey, UnmanagedSummary] = {}
    walked = {stage: state.unmanaged.walks(stage) for stage in PUBLISHED_STAGES}
    for target in state.targets.all():
        if target.stage not in PUBLISHED_STAGES:
            continue
        key = TargetKey(target.stage, target.sig, target.release)
        if category is not None:
            where = PublishedTree(target.stage, Path(), category, target.sig, target.release)
            prefix: str | None = where.inventory_prefix
        else:
            tail = f"/{target.release}/{target.sig}/"
            mine = [(at, p) for p, at in walked[target.stage].items() if p.endswith(tail)]
            prefix = max(mine)[1] if mine else None
        if prefix is not None:
            out[key] = state.unmanaged.summary(target.stage, prefix)
    return out


def _expected(host: HostConfig, tree: PublishedTree, compose_id: str) -> dict[str, Sum]:
    """The checksums the target's files must have: its compose's manifest, else (a v1
    manifest, a compose deleted by hand) the repository metadata."""
    # a vault target's release is a point release: the compose ID names the release
    composes = host.compose_tree(tree.sig, compose_release(tree.release, compose_id))
    sig_dir = composes.sig_dir(compose_id)
    try:
        if not sig_dir.is_dir():
            return metadata_sums(tree.path)
        return expected_sums(sig_dir, composes.manifest(compose_id))
    except (ReconcilerError, OSError) as exc:
        log.warning("deep drift check of %s: %s", tree.path, exc)
        return metadata_sums(tree.path)


def _first_staged(state: StateDB, sig: str, release: str) -> dict[str, datetime]:
    first: dict[str, datetime] = {}
    for event in state.targets.events(sig, release, Stage.STAGING):
        first.setdefault(event.compose_id, event.at)
    return first


def _previous_production(state: StateDB, sig: str, release: str, current: str | None) -> str | None:
    events = state.targets.events(sig, release, Stage.PRODUCTION)
    for event in reversed(events):
        if event.compose_id != current:
            return event.compose_id
    return None


def vault_top(spec: Spec) -> str:
    """Where the vault's file lists are, relative to the production root."""
    return vault_lists_dir(spec.defaults.publish.vault_category)


def _release_facts(
    spec: Spec,
    host: HostConfig,
    state: StateDB,
    key: tuple[str, str],
    checked: Mapping[TargetKey, tuple[DriftFinding, ...]] | None,
) -> ReleaseFacts:
    sig, release = key
    category = spec.defaults.publish.category
    staging = _target(spec, state, host.published(category, Stage.STAGING, sig, release), checked)
    production = _target(
        spec, state, host.published(category, Stage.PRODUCTION, sig, release), checked
    )
    vaults = {
        t.release: TargetFact(t.compose_id, t.published_at)
        for t in state.targets.all()
        if t.stage is Stage.VAULT and t.sig == sig and compose_release("", t.compose_id) == release
    }
    return ReleaseFacts(
        sig=sig,
        release=release,
        vaults=vaults,
        composes=observe_composes(
            host.compose_tree(sig, release),
            state.jobs.composes(sig, release, host.state.job_timeout, partial(is_dead_here, host)),
        ),
        staging=staging,
        production=production,
        staged_at=_first_staged(state, sig, release),
        previous_production=_previous_production(state, sig, release, production.compose_id),
    )


def observe(
    spec: Spec,
    host: HostConfig,
    state: StateDB,
    up: Upstream | None,
    now: datetime | None = None,
    only: Iterable[tuple[str, str]] | None = None,
) -> Observed:
    """Observe every SIG release of ``spec`` (or only those in ``only``). Reads only:
    what the state should keep is returned in ``Observed.learned``.

    ``up=None`` skips the upstream (for status and tests that need no network).
    """
    now = now or datetime.now(UTC)
    wanted = set(only) if only is not None else None
    checked, walked = None, Learned()
    deep = drift.due(state.sources.drift_deep_checked_at(), host.drift_deep_interval, now)
    if deep or drift.due(state.sources.drift_checked_at(), host.drift_interval, now):
        walked = check_drift(spec, host, state, deep, now)
        checked = walked.drift
    releases: dict[tuple[str, str], ReleaseFacts] = {}
    fresh: list[UpstreamCacheEntry] = []
    for sig_name, sig in sorted(spec.sigs.items()):
        for rel_name, rel in sorted(sig.releases.items()):
            key = (sig_name, rel_name)
            if wanted is not None and key not in wanted:
                continue
            facts = _release_facts(spec, host, state, key, checked)
            quiet = rel.suspend or rel.eol  # an eol release composes nothing: no upstream
            if up is not None and not quiet and rel.compose.trigger == "upstream":
                upstream, validators = observe_upstream(
                    spec, rel, up, state, host.upstream_base_url
                )
                facts = replace(facts, upstream=upstream)
                fresh.extend(validators)
            releases[key] = facts
    learned = replace(walked, upstream=tuple(fresh))
    return Observed(now=now, releases=releases, learned=learned)
