"""What observing found, as frozen records. Pure: no I/O here.

Observing (:mod:`reconciler.observing`) fills these in; planning
(:mod:`reconciler.planning`) reads them. ``Observed.digest()`` lets a saved
plan notice that the world changed since it was made.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .vocabulary import ComposeStatus, DriftKind, Stage

if TYPE_CHECKING:  # a record of the state's (no I/O); facts stay below the state's layer
    from .state import UnmanagedEntry


@dataclass(frozen=True, slots=True)
class TargetKey:
    """One published target: a SIG release at a stage."""

    stage: Stage
    sig: str
    release: str


@dataclass(frozen=True, order=True, slots=True)
class DriftFinding:
    """A path of a published target that differs from what was published there."""

    path: str  # relative to the stage root
    what: DriftKind

    def __str__(self) -> str:
        return f"{self.what}: {self.path}"


@dataclass(frozen=True, slots=True)
class UpstreamCacheEntry:
    """Validators of the last fetch of an upstream ``repomd.xml`` (conditional requests)."""

    url: str
    etag: str | None
    last_modified: str | None
    sha256: str
    fetched_at: datetime


@dataclass(frozen=True, slots=True)
class UnmanagedWalk:
    """What a walk of one published SIG directory found that its inventory lacks."""

    prefix: str  # the target's inventory prefix (``mirror/pub/sig/9/core/``)
    entries: tuple[UnmanagedEntry, ...] = ()
    #: a walk of a whole category (``mirror/pub/sig/``): the SIG directories it did not
    #: enter, walked on their own
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True)
class Learned:
    """What observing learned that the state should keep. Observing never writes:
    the apply step records this (:func:`reconciler.recording.record_learned`)."""

    #: Validators of every upstream ``repomd.xml`` fetched anew.
    upstream: tuple[UpstreamCacheEntry, ...] = ()
    #: The drift found in each published target, when the drift check ran (else None).
    drift: Mapping[TargetKey, tuple[DriftFinding, ...]] | None = None
    #: When that drift check ran.
    drift_checked_at: datetime | None = None
    #: The unmanaged paths the same walk found in each published target (else None):
    #: reported, never drift.
    unmanaged: Mapping[TargetKey, UnmanagedWalk] | None = None
    #: The rest of each listed stage's category, outside the targets walked (else None).
    rest: Mapping[Stage, UnmanagedWalk] | None = None
    #: When the deep check (content against the composes' checksums) ran, if it did.
    drift_deep_checked_at: datetime | None = None


@dataclass(frozen=True, order=True)
class ComposeFact:
    """One compose directory of a SIG release."""

    date: str
    respin: int
    compose_id: str
    status: ComposeStatus | None
    running: bool = False  # STARTED and its compose lock is held
    finished_at: datetime | None = None
    upstream_revision: str | None = None
    refresh: int | None = None
    #: its packages' signatures were verified against the release's keys when composed
    verified: bool = False
    #: made by a compose job's attempt whose worker died: DOOMED, but no verdict on the upstream
    abandoned: bool = False

    @property
    def finished(self) -> bool:
        return self.status is ComposeStatus.FINISHED


@dataclass(frozen=True)
class TargetFact:
    """What a staging or production target holds, per the state's record."""

    compose_id: str | None = None
    published_at: datetime | None = None
    drift: tuple[str, ...] = ()  # paths that differ from the inventory


@dataclass(frozen=True)
class UpstreamFact:
    """The upstream's revision: a digest over every variant's ``repomd.xml``."""

    revision: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class ReleaseFacts:
    """Everything observed about one SIG release."""

    sig: str
    release: str
    composes: tuple[ComposeFact, ...] = ()  # oldest first
    staging: TargetFact = TargetFact()
    production: TargetFact = TargetFact()
    staged_at: Mapping[str, datetime] = field(default_factory=dict)  # first time staged
    previous_production: str | None = None
    upstream: UpstreamFact = UpstreamFact()
    #: what each vault target of the release holds, by point release (the state's record)
    vaults: Mapping[str, TargetFact] = field(default_factory=dict)

    @property
    def vault_held(self) -> frozenset[str]:
        """The composes the release's vault targets hold."""
        return frozenset(t.compose_id for t in self.vaults.values() if t.compose_id)

    def target(self, stage: Stage) -> TargetFact:
        return self.production if stage is Stage.PRODUCTION else self.staging

    def finished(self) -> list[ComposeFact]:
        return [c for c in self.composes if c.finished]

    def newest_finished(self) -> ComposeFact | None:
        done = self.finished()
        return done[-1] if done else None

    def compose(self, compose_id: str) -> ComposeFact | None:
        return next((c for c in self.composes if c.compose_id == compose_id), None)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Observed:
    """The whole observed world at ``now``."""

    now: datetime
    releases: Mapping[tuple[str, str], ReleaseFacts] = field(default_factory=dict)
    #: What the state should keep; not part of the digest (it is not a fact of the world).
    learned: Learned = field(default_factory=Learned, compare=False)

    def facts(self, sig: str, release: str) -> ReleaseFacts:
        return self.releases.get((sig, release)) or ReleaseFacts(sig, release)

    def digest(self) -> str:
        """A digest of everything observed except the clock (for stale-plan checks)."""
        body = [_plain(asdict(self.releases[k])) for k in sorted(self.releases)]
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
