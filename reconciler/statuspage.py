"""What the status page shows, gathered from the state and the composes' metadata.

Reads only: the state database (statuses, targets, history, the source record,
unmanaged and drift counts), the desired-state clone for a commit's summary and
author (one ``git log -1``, cached by sha), and a compose's manifest
(``reconciler-files.tsv``, cached by compose: composes are immutable) for the
package counts of a SIG release. It never walks a published tree.
:mod:`reconciler.pagerender` turns these records into HTML.

Two places are filled by other parts when they have data, and are left out of the
page when they have none: :class:`MirrorCell` (mirror propagation of a production
target) and :class:`PackageDiff` (what a pending action changes in a target).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from . import packagediff, propagation
from .endoflife import is_eol
from .errors import ReconcilerError
from .facts import TargetKey
from .hostconfig import HostConfig
from .manifest import read_manifest
from .names import compose_release
from .observing import unmanaged_summaries
from .state import HistoryEntry, StateDB, TargetStatus
from .vocabulary import (
    RELEASE_STAGES,
    TROUBLE_STATES,
    PackageChangeKind,
    Result,
    Stage,
    TargetState,
    Trigger,
)

#: History rows kept per SIG release on the main page, and on a release's own page.
HISTORY_PER_RELEASE = 10
HISTORY_ON_RELEASE_PAGE = 100
#: History rows read for the main page (the newest; older ones are on the release pages).
HISTORY_READ = 1000


@dataclass(frozen=True, slots=True)
class MirrorCell:
    """Mirror propagation of one production target, as the mirror check last saw it:
    how many mirrors serve what production serves, how many lag (and the oldest lag in
    seconds), how many could not be reached. Filled by the mirror checker; absent
    (None) on the page until it has checked."""

    current: int
    behind: int
    unreachable: int
    oldest_lag_s: float | None = None


@dataclass(frozen=True, slots=True)
class PackageDiff:
    """What a pending compose or promote action changes in a target: counts first, then
    up to a page's worth of lines (``name old -> new``). Filled by the plan's package
    diff; the page shows the section only when there is one."""

    sig: str
    release: str
    stage: Stage
    action: str  # the action as the plan describes it ("promote X to production")
    added: int
    removed: int
    upgraded: int
    downgraded: int
    lines: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Cell:
    """One target: a SIG release at one stage."""

    stage: Stage
    state: TargetState
    desired: str | None
    actual: str | None
    reason: str
    since: datetime  # when it got what it holds (its last publish), else the last check
    checked: datetime
    unmanaged: int | None  # files; None: never walked (or not a published stage)
    drift: int
    mirrors: MirrorCell | None = None


@dataclass(frozen=True, slots=True)
class HistoryRow:
    at: datetime
    action: str
    stage: Stage | None
    compose_id: str | None
    result: Result
    error: str | None
    revision: str | None
    link: str | None  # the commit on the forge (``commit_url``)
    actor: str | None
    trigger: Trigger | None
    reason: str


@dataclass(frozen=True, slots=True)
class ReleaseRow:
    sig: str
    release: str
    cells: tuple[Cell | None, ...]  # compose, staging, production (None: no status)
    history: tuple[HistoryRow, ...]

    @property
    def eol(self) -> bool:
        """An ``eol: true`` release (its rows say so: :data:`endoflife.EOL_NOTE`)."""
        return any(c is not None and is_eol(c.reason) for c in self.cells)


@dataclass(frozen=True, slots=True)
class Revision:
    sha: str
    link: str | None
    summary: str | None  # None: the clone does not have it (or no git source)
    author: str | None
    committed_at: datetime | None


@dataclass(frozen=True, slots=True)
class LastPass:
    finished: datetime
    seconds: float
    ok: bool
    error: str | None


@dataclass(frozen=True, slots=True)
class Leader:
    """Who holds the leader lease (publishes), since when; ``live`` False: it expired."""

    holder: str
    term: int
    since: datetime
    live: bool


@dataclass(frozen=True, slots=True)
class StatusPage:
    generated_at: datetime
    revision: Revision | None
    problems: tuple[str, ...]  # why the newest revision was not taken
    last_pass: LastPass | None  # None: not known here (the running loop knows)
    rows: tuple[ReleaseRow, ...]
    trouble: tuple[tuple[str, str, Cell], ...]  # Blocked and Failed targets: sig, release
    refresh_s: int | None = None  # served pages refresh themselves; an export does not
    diffs: tuple[PackageDiff, ...] = ()
    show_mirrors: bool = False
    leader: Leader | None = None


@dataclass(frozen=True, slots=True)
class RepoCount:
    repo: str
    arch: str
    packages: int
    bytes: int


@dataclass(frozen=True, slots=True)
class StageContents:
    cell: Cell | None
    compose_id: str | None
    repos: tuple[RepoCount, ...]  # empty: no compose, or it has no manifest
    stage: Stage = Stage.COMPOSE


@dataclass(frozen=True, slots=True)
class ReleasePage:
    generated_at: datetime
    sig: str
    release: str
    stages: tuple[StageContents, ...]
    history: tuple[HistoryRow, ...]
    refresh_s: int | None = None


@dataclass(frozen=True)
class Extras:
    """What other parts add to the page (mirrors per production target, diffs)."""

    mirrors: Mapping[TargetKey, MirrorCell] = field(default_factory=dict)
    diffs: tuple[PackageDiff, ...] = ()


#: at most this many lines of one action's package diff on the page (then folded)
DIFF_LINES = 60


def extras_from(
    host: HostConfig, state: StateDB, diffs: Sequence[packagediff.PackageDiff] = ()
) -> Extras:
    """The page's extras from the state (mirror propagation, when mirrors are
    configured) and from the package diffs of the actions the last pass left pending."""
    mirrors: dict[TargetKey, MirrorCell] = {}
    if host.mirrors:
        names = [m.name for m in host.mirrors]
        for key, s in propagation.summaries(state, names).items():
            lag = s.oldest_lag.total_seconds() if s.oldest_lag is not None else None
            mirrors[key] = MirrorCell(s.current, s.behind, s.unreachable, lag)
    return Extras(mirrors, tuple(_page_diff(d) for d in diffs if not d.note))


def _page_diff(d: packagediff.PackageDiff) -> PackageDiff:
    counts = dict.fromkeys(PackageChangeKind, 0)
    for repo in d.repos:
        for change in repo.changes:
            counts[change.kind] += 1
    what = d.compose_id or "the new compose"
    action = f"compose {d.sig} {d.release}" if d.stage is Stage.COMPOSE else f"{what} to {d.stage}"
    lines = tuple("  " * depth + text for depth, text in d.lines())[:DIFF_LINES]
    k = PackageChangeKind
    return PackageDiff(d.sig, d.release, d.stage, action, counts[k.ADDED], counts[k.REMOVED],
                       counts[k.UPGRADED], counts[k.DOWNGRADED], lines)  # fmt: skip


_STAGES = tuple(Stage)
_commit_lock = threading.Lock()
_commits: dict[tuple[str, str], tuple[str, str, datetime] | None] = {}


def commit_info(host: HostConfig, sha: str) -> tuple[str, str, datetime] | None:
    """Summary, author and date of a desired-state commit from the state's clone (cached
    by sha: a commit never changes); None without a git source or when it is not there."""
    if host.git is None:
        return None
    key = (str(host.layout.git), sha)
    with _commit_lock:
        if key in _commits:
            return _commits[key]
    from .gitrepo import GitRepo
    from .gitsource import GitSource

    try:  # the clone the loop fetches into (its place is GitSource's to say)
        repo_dir = GitSource(host.git, host.layout.git).repo_dir
        commit = GitRepo(host.git, repo_dir).commit(sha)
        found: tuple[str, str, datetime] | None = (
            commit.summary, commit.author, commit.committed_at
        )  # fmt: skip
    except ReconcilerError:
        found = None
    with _commit_lock:
        if len(_commits) > 1000:  # bounded: a long-running loop sees many revisions
            _commits.clear()
        _commits[key] = found
    return found


def _row(h: HistoryEntry, host: HostConfig) -> HistoryRow:
    return HistoryRow(h.started_at, h.action, h.stage, h.compose_id, h.result, h.error,
                      h.revision, host.commit_link(h.revision), h.actor or h.author, h.trigger,
                      h.reason)  # fmt: skip


def _cells(state: StateDB, statuses: Sequence[TargetStatus]) -> dict[tuple[str, str], list[Cell]]:
    held = {(t.sig, t.release, t.stage): t.published_at for t in state.targets.all()}
    unmanaged = unmanaged_summaries(state)
    out: dict[tuple[str, str], list[Cell]] = defaultdict(list)
    for s in statuses:
        key = TargetKey(s.stage, s.sig, s.release)
        walked = unmanaged.get(key)
        drift = len(state.sources.drift(key)) if s.stage is not Stage.COMPOSE else 0
        since = held.get((s.sig, s.release, s.stage), s.updated_at)
        out[(s.sig, s.release)].append(
            Cell(
                s.stage,
                s.state,
                s.desired,
                s.actual,
                s.reason,
                since,
                s.updated_at,
                None if walked is None else walked.files,
                drift,
            )
        )
    return out


def _by_stage(
    cells: Sequence[Cell], extras: Extras, sig: str, release: str
) -> tuple[Cell | None, ...]:
    found = {c.stage: c for c in cells}
    out: list[Cell | None] = []
    for stage in _STAGES:
        cell = found.get(stage)
        mirror = extras.mirrors.get(TargetKey(stage, sig, release))
        if cell is not None and mirror is not None:
            cell = dataclasses.replace(cell, mirrors=mirror)
        out.append(cell)
    return tuple(out)


def gather(
    host: HostConfig,
    state: StateDB,
    last_pass: Mapping[str, Any] | None = None,
    extras: Extras | None = None,
    refresh_s: int | None = None,
) -> StatusPage:
    """Everything the main page shows, from the state (and the clone, for the revision)."""
    extras = extras or Extras()
    statuses = state.targets.statuses()
    cells = _cells(state, statuses)
    history: dict[tuple[str, str], list[HistoryRow]] = defaultdict(list)
    for h in state.history.entries(HISTORY_READ):
        kept = history[(h.sig, h.release)]
        if len(kept) < HISTORY_PER_RELEASE:
            kept.append(_row(h, host))
    rows = tuple(
        ReleaseRow(sig, release, _by_stage(c, extras, sig, release), tuple(history[(sig, release)]))
        for (sig, release), c in cells.items()
    )
    trouble = tuple(
        (r.sig, r.release, c)
        for r in rows
        for c in r.cells
        if c is not None and c.state in TROUBLE_STATES
    )
    held = state.leases.current()
    leader = None
    if held is not None:
        since = datetime.fromtimestamp(held.since, UTC)
        leader = Leader(held.holder, held.term, since, held.live(state.clock()))
    source = state.sources.source()
    revision = None
    if source.good_revision:
        info = commit_info(host, source.good_revision)
        summary, author, at = info if info is not None else (None, None, None)
        revision = Revision(source.good_revision, host.commit_link(source.good_revision),
                            summary, author, at)  # fmt: skip
    return StatusPage(
        generated_at=datetime.now(UTC), revision=revision, problems=source.problems,
        last_pass=last_pass_of(last_pass) or _kept_pass(state), rows=rows, trouble=trouble,
        refresh_s=refresh_s, diffs=extras.diffs, show_mirrors=bool(extras.mirrors),
        leader=leader,
    )  # fmt: skip


def _kept_pass(state: StateDB) -> LastPass | None:
    """The last pass as the loop kept it in the state (the exported page)."""
    kept = state.history.last_pass()
    if kept is None:
        return None
    return LastPass(kept.finished_at, kept.seconds, kept.ok, kept.error)


def last_pass_of(last: Mapping[str, Any] | None) -> LastPass | None:
    if not last or last.get("finished") is None:
        return None
    return LastPass(datetime.fromtimestamp(float(last["finished"]), UTC),
                    float(last.get("seconds") or 0.0), bool(last.get("ok")),
                    last.get("error"))  # fmt: skip


@functools.lru_cache(maxsize=256)
def repo_counts(manifest: Path) -> tuple[RepoCount, ...]:
    """Packages and their bytes per repo and arch of a compose, from its manifest (cached:
    a finished compose never changes); empty without a readable manifest."""
    try:
        files = read_manifest(manifest, manifest.parent)
    except ReconcilerError:
        files = None
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for f in files or ():
        parts = PurePosixPath(f.rel).parts
        if len(parts) < 4 or parts[2] != "Packages" or not parts[-1].endswith(".rpm"):
            continue
        arch, repo = ("src", parts[1]) if parts[0] == "source" else (parts[0], parts[1])
        count = counts[(repo, arch)]
        count[0] += 1
        count[1] += f.size
    return tuple(RepoCount(r, a, n, b) for (r, a), (n, b) in sorted(counts.items()))


def release_page(
    host: HostConfig, state: StateDB, sig: str, release: str, refresh_s: int | None = None
) -> ReleasePage | None:
    """One SIG release: what each stage holds, per repo and arch; None if unknown."""
    statuses = [s for s in state.targets.statuses() if (s.sig, s.release) == (sig, release)]
    if not statuses:
        return None
    cells = {c.stage: c for c in _cells(state, statuses)[(sig, release)]}
    stages = []
    # a point release has only its vault; a release its own stages (its vaults are rows
    # of their own)
    shown = (Stage.VAULT,) if set(cells) == {Stage.VAULT} else RELEASE_STAGES
    for stage in shown:
        cell = cells.get(stage)
        cid = cell.actual if cell is not None else None
        # a vault target's release is a point release: its compose ID names the release
        tree = host.compose_tree(sig, compose_release(release, cid))
        repos = repo_counts(tree.manifest(cid)) if cid else ()
        stages.append(StageContents(cell, cid, repos, stage))
    history = tuple(
        _row(h, host)
        for h in state.history.entries(HISTORY_ON_RELEASE_PAGE * 5, sig=sig)
        if h.release == release
    )[:HISTORY_ON_RELEASE_PAGE]
    return ReleasePage(datetime.now(UTC), sig, release, tuple(stages), history, refresh_s)
