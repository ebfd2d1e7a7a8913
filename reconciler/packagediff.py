"""What a publish ships: the package diff between two composes, per repo. Pure: no I/O.

Given the packages and advisories of each repo of the compose a target holds and of
the compose it will hold (read by :mod:`reconciler.diffing` from the composes'
``rpms.json`` and updateinfo), :func:`package_diff` says which packages are added,
removed, upgraded and downgraded, ordered by rpm's own version comparison, with the
arches collapsed where they agree, and which advisories arrive. The records render
themselves as plain lines (counts first, each list folded after :data:`FOLD` entries);
``reporting`` indents or escapes them for text and markdown.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cmp_to_key
from typing import Any

from .selection import rpmvercmp
from .vocabulary import PackageChangeKind, Stage

#: How many changes (and advisories) of one repo are listed before "and N more": a
#: reviewer reads twenty lines; the counts above them say how many there are in all.
FOLD = 20
NOARCH = "noarch"
#: The order of a repo's list: what most reviews look for first.
_KIND_ORDER = {k: i for i, k in enumerate(PackageChangeKind)}


@dataclass(frozen=True, order=True, slots=True)
class Nevra:
    """One package of a repo: ``name-epoch:version-release.arch``."""

    name: str
    epoch: str
    version: str
    release: str
    arch: str

    @classmethod
    def parse(cls, text: str) -> Nevra:
        """``name-[epoch:]version-release.arch`` (productmd's form); ValueError if not."""
        rest, dot, arch = text.rpartition(".")
        parts = rest.rsplit("-", 2)
        if not dot or len(parts) != 3 or not all(parts) or not arch:
            raise ValueError(f"not a name-epoch:version-release.arch: {text!r}")
        name, ev, release = parts
        epoch, colon, version = ev.rpartition(":")
        if colon and not epoch.isdigit():
            raise ValueError(f"not a numeric epoch: {text!r}")
        return cls(name, str(int(epoch)) if epoch else "0", version, release, arch)

    @property
    def evr(self) -> str:
        """``[epoch:]version-release``, the epoch shown when it is not 0 (as rpm does)."""
        head = f"{self.epoch}:" if self.epoch not in {"", "0"} else ""
        return f"{head}{self.version}-{self.release}"


def compare_evr(a: Nevra, b: Nevra) -> int:
    """rpm's order of two packages' epoch, version and release."""
    for x, y in ((a.epoch or "0", b.epoch or "0"), (a.version, b.version), (a.release, b.release)):
        c = rpmvercmp(x, y)
        if c:
            return c
    return 0


_by_evr = cmp_to_key(compare_evr)


@dataclass(frozen=True, order=True, slots=True)
class Advisory:
    """One updateinfo record: its ID, type (security, bugfix, ...) and severity."""

    id: str
    type: str = ""
    severity: str = ""

    def describe(self) -> str:
        what = ", ".join(x for x in (self.type, self.severity) if x)
        return f"{self.id} ({what})" if what else self.id


@dataclass(frozen=True)
class RepoContents:
    """What one repo of a compose holds, every arch and variant together."""

    packages: frozenset[Nevra] = frozenset()
    advisories: frozenset[Advisory] = frozenset()


@dataclass(frozen=True)
class PackageChange:
    """One line of a diff: a name whose arches changed alike.

    ``arches`` are the arches it had (or, when added, has); ``to_arches`` are given
    only when they differ (a package that became ``noarch``, or stopped being it).
    """

    kind: PackageChangeKind
    name: str
    old: str  # the epoch:version-release held ("" when added)
    new: str  # ... and to be held ("" when removed)
    arches: tuple[str, ...]
    to_arches: tuple[str, ...] = ()

    def describe(self) -> str:
        arches = ", ".join(self.arches)
        if self.to_arches:
            arches += " -> " + ", ".join(self.to_arches)
        if self.kind is PackageChangeKind.ADDED:
            return f"{self.kind} {self.name} {self.new} ({arches})"
        if self.kind is PackageChangeKind.REMOVED:
            return f"{self.kind} {self.name} {self.old} ({arches})"
        return f"{self.kind} {self.name} {self.old} -> {self.new} ({arches})"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PackageChange:
        return cls(PackageChangeKind(raw["kind"]), raw["name"], raw["old"], raw["new"],
                   tuple(raw["arches"]), tuple(raw["to_arches"]))  # fmt: skip


def _counts(changes: Iterable[PackageChange]) -> dict[PackageChangeKind, int]:
    counts = dict.fromkeys(PackageChangeKind, 0)
    for c in changes:
        counts[c.kind] += 1
    return counts


def _count_text(counts: Mapping[PackageChangeKind, int], advisories: int) -> str:
    said = [f"{n} {kind}" for kind, n in counts.items() if n]
    text = ", ".join(said) or "no package changes"
    if advisories:
        text += f"; {advisories} advisor{'y' if advisories == 1 else 'ies'} arriving"
    return text


def _folded(lines: list[str], limit: int) -> list[str]:
    if len(lines) <= limit:
        return lines
    return [*lines[:limit], f"and {len(lines) - limit} more"]


@dataclass(frozen=True)
class RepoDiff:
    """The changes of one repo and the advisories that arrive in it."""

    repo: str
    changes: tuple[PackageChange, ...] = ()
    advisories: tuple[Advisory, ...] = ()

    def summary(self) -> str:
        return f"{self.repo}: {_count_text(_counts(self.changes), len(self.advisories))}"

    def advisory_lines(self, limit: int = FOLD) -> list[str]:
        return _folded([f"advisory {a.describe()}" for a in self.advisories], limit)

    def change_lines(self, limit: int = FOLD) -> list[str]:
        return _folded([c.describe() for c in self.changes], limit)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RepoDiff:
        changes = tuple(PackageChange.from_dict(c) for c in raw["changes"])
        return cls(raw["repo"], changes, tuple(Advisory(**a) for a in raw["advisories"]))


@dataclass(frozen=True)
class PackageDiff:
    """What one compose or publish action ships to its target.

    Keyed like the action: ``stage`` (``compose`` for a compose action) and
    ``compose_id`` (None: the compose this plan makes). ``held`` is the compose the
    target holds (None: nothing yet). ``note`` says why there is no diff.
    """

    sig: str
    release: str
    stage: Stage
    compose_id: str | None
    held: str | None = None
    repos: tuple[RepoDiff, ...] = field(default_factory=tuple)
    note: str = ""

    def summary(self) -> str:
        if self.note:
            return self.note
        changes = [c for r in self.repos for c in r.changes]
        arriving = sum(len(r.advisories) for r in self.repos)
        return f"from {self.held or 'nothing'}: {_count_text(_counts(changes), arriving)}"

    def lines(self, limit: int = FOLD) -> list[tuple[int, str]]:
        """The rendering: (depth, line) pairs, counts first; each list folded."""
        out = [(0, self.summary())]
        for repo in self.repos:
            out.append((1, repo.summary()))
            out += [(2, line) for line in repo.advisory_lines(limit)]
            out += [(2, line) for line in repo.change_lines(limit)]
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PackageDiff:
        repos = tuple(RepoDiff.from_dict(r) for r in raw["repos"])
        return cls(raw["sig"], raw["release"], Stage(raw["stage"]), raw["compose_id"],
                   raw["held"], repos, raw["note"])  # fmt: skip


# --- the diff -------------------------------------------------------------------


def _arch_key(arch: str) -> tuple[bool, str]:
    return (arch == "src", arch)  # sources after the binaries


# one arch's change: kind, old evr, new evr, the arch it had, the arch it will have
_ArchChange = tuple[PackageChangeKind, str, str, str, str]


def _versions(old: set[Nevra], new: set[Nevra], arch: str, to: str) -> list[_ArchChange]:
    """One name.arch (or one name across a move from ``arch`` to ``to``): the newest
    version that goes against the newest that comes (an upgrade or a downgrade); further
    versions that go are removed, that come, added. A version that only moves (the same
    epoch:version-release as ``noarch`` now) is removed there and added here."""
    was, will = {p.evr: p for p in old}, {p.evr: p for p in new}
    gone = sorted((was[e] for e in was.keys() - will.keys()), key=_by_evr, reverse=True)
    come = sorted((will[e] for e in will.keys() - was.keys()), key=_by_evr, reverse=True)
    out: list[_ArchChange] = []
    if gone and come and compare_evr(gone[0], come[0]):  # rpm may call two spellings equal
        a, b = gone.pop(0), come.pop(0)
        up = compare_evr(b, a) > 0
        kind = PackageChangeKind.UPGRADED if up else PackageChangeKind.DOWNGRADED
        out.append((kind, a.evr, b.evr, arch, to))
    if arch != to:
        moved = [was[e] for e in sorted(was.keys() & will.keys())]
        gone, come = gone + moved, come + [will[p.evr] for p in moved]
    out += [(PackageChangeKind.REMOVED, p.evr, "", arch, arch) for p in gone]
    out += [(PackageChangeKind.ADDED, "", p.evr, to, to) for p in come]
    return out


def _name_changes(
    old: Mapping[str, set[Nevra]], new: Mapping[str, set[Nevra]]
) -> list[_ArchChange]:
    """One name's changes, arch by arch. A name that moves between ``noarch`` and
    arch-specific builds is compared across that move, not shown as removed and added."""
    out: list[_ArchChange] = []
    for arch in sorted(old.keys() & new.keys()):
        out += _versions(old[arch], new[arch], arch, arch)
    gone, come = sorted(old.keys() - new.keys()), sorted(new.keys() - old.keys())
    if come == [NOARCH] and gone and "src" not in gone:
        for arch in gone:
            out += _versions(old[arch], new[NOARCH], arch, NOARCH)
        return out
    if gone == [NOARCH] and come and "src" not in come:
        for arch in come:
            out += _versions(old[NOARCH], new[arch], NOARCH, arch)
        return out
    out += [c for arch in gone for c in _versions(old[arch], set(), arch, arch)]
    out += [c for arch in come for c in _versions(set(), new[arch], arch, arch)]
    return out


def _by_name(packages: Iterable[Nevra]) -> dict[str, dict[str, set[Nevra]]]:
    out: dict[str, dict[str, set[Nevra]]] = defaultdict(lambda: defaultdict(set))
    for p in packages:
        out[p.name][p.arch].add(p)
    return out


def _collapse(name: str, changes: list[_ArchChange]) -> list[PackageChange]:
    """Arches that changed alike (kind, old and new version) make one line."""
    groups: dict[tuple[PackageChangeKind, str, str], tuple[set[str], set[str]]] = {}
    for kind, old, new, had, will in changes:
        had_set, will_set = groups.setdefault((kind, old, new), (set(), set()))
        had_set.add(had)
        will_set.add(will)
    out = []
    for (kind, old, new), (had_arches, will_arches) in groups.items():
        arches = tuple(sorted(had_arches, key=_arch_key))
        to = tuple(sorted(will_arches, key=_arch_key))
        out.append(PackageChange(kind, name, old, new, arches, () if to == arches else to))
    return out


def _sort_key(c: PackageChange) -> tuple[int, str, tuple[tuple[bool, str], ...], str, str]:
    return (_KIND_ORDER[c.kind], c.name, tuple(map(_arch_key, c.arches)), c.old, c.new)


def repo_diff(repo: str, old: RepoContents, new: RepoContents) -> RepoDiff:
    """The diff of one repo, from what is held (``old``) to what will be (``new``)."""
    before, after = _by_name(old.packages), _by_name(new.packages)
    changed = {p.name for p in old.packages ^ new.packages}
    changes: list[PackageChange] = []
    for name in sorted(changed):
        changes += _collapse(name, _name_changes(before.get(name, {}), after.get(name, {})))
    held = {a.id for a in old.advisories}
    # one line per ID (arches may carry the same advisory); the first in order wins
    arriving: dict[str, Advisory] = {}
    for a in sorted(new.advisories):
        if a.id not in held:
            arriving.setdefault(a.id, a)
    return RepoDiff(repo, tuple(sorted(changes, key=_sort_key)), tuple(arriving.values()))


def package_diff(
    old: Mapping[str, RepoContents], new: Mapping[str, RepoContents]
) -> tuple[RepoDiff, ...]:
    """The diff of every repo of either compose that changed, by repo name."""
    empty = RepoContents()
    diffs = (repo_diff(r, old.get(r, empty), new.get(r, empty)) for r in sorted({*old, *new}))
    return tuple(d for d in diffs if d.changes or d.advisories)
