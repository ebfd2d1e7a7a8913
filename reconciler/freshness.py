"""How fresh each public mirror's copy of production is: pure decisions from facts.

The facts (kept in the state, :mod:`reconciler.state.mirrors`): every ``repomd.xml``
production has served, per SIG release and repo path, with when it was published there
(:class:`Served`); and what each mirror served at its last check (:class:`MirrorCheck`).
From them, for each repo on each mirror (:func:`judge_repo`):

- **current**: the mirror serves the ``repomd.xml`` production serves now;
- **behind**: it serves one production served before, *since* production published the
  next one (the time the mirror should have had it); or it lacks the repo (404/410):
  behind since production first published that repo;
- **foreign**: it serves a ``repomd.xml`` production never published (never current);
- **unreachable**: connection or HTTP error (other than 404/410);
- **unchecked**: production published the repo after the mirror's last check.

A mirror's standing for a target (:func:`judge`) is its worst repo (unreachable, then
foreign, then behind, then current); its lag is ``now - since`` of its oldest behind
repo (a repo not checked since production published it makes an otherwise current
mirror unchecked). :func:`summarize` counts the mirrors of each target (:class:`MirrorSummary`).
No I/O, no clock: ``now`` is given.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .facts import TargetKey
from .vocabulary import MirrorState, Stage

#: Worst first: a mirror's standing for a target is the worst of its repos'.
_SEVERITY = (
    MirrorState.UNREACHABLE,
    MirrorState.FOREIGN,
    MirrorState.BEHIND,
    MirrorState.UNCHECKED,  # part unchecked, the rest current: not known to be current
    MirrorState.CURRENT,
)


@dataclass(frozen=True, slots=True)
class Served:
    """A ``repomd.xml`` production served at ``path`` (relative to the SIG's directory),
    published at ``published_at``; ``current``: production serves it now."""

    sig: str
    release: str
    path: str
    sha1: str
    published_at: datetime
    current: bool


@dataclass(frozen=True, slots=True)
class MirrorCheck:
    """What a mirror answered for one repo's ``repomd.xml`` at its last check.

    ``sha1``: of the body it served (kept through 304s and errors: the validators of the
    next conditional GET go with it); ``error``: why the last request failed (None: it
    answered); ``missing``: it answered 404 or 410.
    """

    mirror: str
    sig: str
    release: str
    path: str
    sha1: str | None
    etag: str | None
    last_modified: str | None
    error: str | None
    missing: bool
    checked_at: datetime


@dataclass(frozen=True, slots=True)
class RepoVerdict:
    path: str
    state: MirrorState
    since: datetime | None = None  # behind: since when


@dataclass(frozen=True, slots=True)
class MirrorTarget:
    """One mirror's standing for one SIG release's production."""

    mirror: str
    sig: str
    release: str
    state: MirrorState
    behind_since: datetime | None  # the oldest behind repo's since
    lag: timedelta | None  # now - behind_since
    checked_at: datetime | None
    error: str | None  # the first error, when unreachable
    repos: Mapping[MirrorState, int]  # how many repos stand how

    @property
    def key(self) -> TargetKey:
        return TargetKey(Stage.PRODUCTION, self.sig, self.release)


@dataclass(frozen=True, slots=True)
class MirrorSummary:
    """The mirrors of one production target: how many stand how, and the oldest lag.

    ``mirrors`` counts every mirror judged (unchecked ones too)."""

    mirrors: int
    current: int
    behind: int
    foreign: int
    unreachable: int
    unchecked: int
    oldest_lag: timedelta | None

    def describe(self) -> str:
        """``1/3 current, 1 behind 5m, 1 unreachable`` (what ``status`` shows)."""
        parts = [f"{self.current}/{self.mirrors} current"]
        if self.behind:
            lag = f" {human_duration(self.oldest_lag)}" if self.oldest_lag is not None else ""
            parts.append(f"{self.behind} behind{lag}")
        for count, word in ((self.foreign, MirrorState.FOREIGN),
                            (self.unreachable, MirrorState.UNREACHABLE),
                            (self.unchecked, MirrorState.UNCHECKED)):  # fmt: skip
            if count:
                parts.append(f"{count} {word}")
        return ", ".join(parts)


def human_duration(value: timedelta) -> str:
    """``45s``, ``5m``, ``3h12m``, ``2d4h``: a lag at a glance."""
    seconds = max(0, int(value.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if hours == 0:
        return f"{minutes}m"
    if days == 0:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    rest = hours % 24
    return f"{days}d{rest}h" if rest else f"{days}d"


def judge_repo(check: MirrorCheck | None, history: Sequence[Served], path: str) -> RepoVerdict:
    """One repo on one mirror. ``history``: production's ``repomd.xml`` at ``path``, one of
    them current."""
    now_served = next(s for s in history if s.current)
    if check is None or check.checked_at < now_served.published_at:
        return RepoVerdict(path, MirrorState.UNCHECKED)
    if check.missing:
        return RepoVerdict(path, MirrorState.BEHIND, min(s.published_at for s in history))
    if check.error is not None or check.sha1 is None:
        return RepoVerdict(path, MirrorState.UNREACHABLE)
    if check.sha1 == now_served.sha1:
        return RepoVerdict(path, MirrorState.CURRENT)
    served = [s.published_at for s in history if s.sha1 == check.sha1]
    if not served:
        return RepoVerdict(path, MirrorState.FOREIGN)
    # behind since production published the next one after what the mirror serves
    newer = [s.published_at for s in history if s.published_at > max(served)]
    return RepoVerdict(path, MirrorState.BEHIND, min(newer, default=now_served.published_at))


def judge(
    mirrors: Sequence[str],
    served: Iterable[Served],
    checks: Iterable[MirrorCheck],
    now: datetime,
) -> list[MirrorTarget]:
    """Every mirror's standing for every SIG release production serves, by mirror, SIG
    and release. Repos production no longer serves are left out."""
    history: dict[tuple[str, str], dict[str, list[Served]]] = defaultdict(lambda: defaultdict(list))
    for s in served:
        history[(s.sig, s.release)][s.path].append(s)
    found = {(c.mirror, c.sig, c.release, c.path): c for c in checks}
    out: list[MirrorTarget] = []
    for mirror in mirrors:
        for (sig, release), paths in sorted(history.items()):
            live = {p: h for p, h in paths.items() if any(s.current for s in h)}
            if not live:
                continue
            verdicts = [judge_repo(found.get((mirror, sig, release, p)), h, p)
                        for p, h in sorted(live.items())]  # fmt: skip
            mine = [found[k] for p in live if (k := (mirror, sig, release, p)) in found]
            out.append(_standing(mirror, sig, release, verdicts, mine, now))
    return out


def _standing(
    mirror: str,
    sig: str,
    release: str,
    verdicts: Sequence[RepoVerdict],
    checks: Sequence[MirrorCheck],
    now: datetime,
) -> MirrorTarget:
    counts = {state: sum(v.state is state for v in verdicts) for state in MirrorState}
    state = next(s for s in _SEVERITY if counts[s])
    behind = [v.since for v in verdicts if v.state is MirrorState.BEHIND and v.since]
    since = min(behind) if behind else None
    errors = [c.error for c in checks if c.error is not None and not c.missing]
    return MirrorTarget(
        mirror, sig, release, state, since, now - since if since is not None else None,
        max((c.checked_at for c in checks), default=None), errors[0] if errors else None,
        counts,
    )  # fmt: skip


def summarize(targets: Iterable[MirrorTarget]) -> dict[TargetKey, MirrorSummary]:
    """Each production target's mirrors, counted."""
    grouped: dict[TargetKey, list[MirrorTarget]] = defaultdict(list)
    for t in targets:
        grouped[t.key].append(t)
    out: dict[TargetKey, MirrorSummary] = {}
    for key, rows in grouped.items():
        states = [r.state for r in rows]
        lags = [r.lag for r in rows if r.lag is not None and r.state is MirrorState.BEHIND]
        out[key] = MirrorSummary(
            len(rows),
            states.count(MirrorState.CURRENT),
            states.count(MirrorState.BEHIND),
            states.count(MirrorState.FOREIGN),
            states.count(MirrorState.UNREACHABLE),
            states.count(MirrorState.UNCHECKED),
            max(lags, default=None),
        )
    return out
