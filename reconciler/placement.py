"""Where each package of a compose comes from: the placement plan. Pure: no I/O, no clock.

A compose is a pipeline of typed hand-offs (DESIGN.md section 7):

1. upstream records: a :class:`VariantSource` per variant, every package its
   ``primary.xml`` lists (fetched by :mod:`reconciler.fetching`);
2. :func:`choose`, per variant: REFUSE a location that leaves the repo, holds a
   control character, has too long a file name or is not an ``.rpm`` (every
   package, chosen or not), DROP
   what ``keep_versions`` does not keep, and REFUSE a file name two different
   packages claim; the rest is the variant's :class:`Selection`;
3. :func:`plan`, across the variants: one step per distinct package (by
   checksum) with every place it goes: LINK it from the previous compose when
   that holds the same checksum (of the same type) and size, else DOWNLOAD it
   (largest first); variants that disagree on a checksum's type or size stop it;
4. :mod:`reconciler.placing` carries the plan out; :mod:`reconciler.repodata`
   writes the metadata from the selections' hrefs.

A plan with a refusal is not carried out: the compose stops with
:attr:`Selection.problem` (the message names the href).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from sys import intern

from .composefiles import SourceFile
from .errors import UnsafePathError
from .layout import Variant
from .names import safe_relpath
from .selection import PackageFact, by_file_name, check_href, newest_first, target_href
from .vocabulary import PlacementKind


@dataclass(frozen=True, slots=True)
class VariantSource:
    """One variant's upstream repository: its URL and the packages its metadata lists."""

    variant: Variant
    url: str
    packages: tuple[PackageFact, ...]


@dataclass(frozen=True, slots=True)
class Target:
    """A place in the compose: ``href`` (``Packages/[<l>/]<file>``) in a variant's repo."""

    variant: Variant
    href: str

    @property
    def rel(self) -> PurePosixPath:
        """The path under the compose's SIG directory."""
        return self.variant.rel_dir / self.href


@dataclass(frozen=True, slots=True)
class PreviousPackage:
    """A package the previous compose holds: where, how big, and its manifest's mtime."""

    pkgid: str
    size: int
    variant: Variant
    href: str  # checked and normalised, relative to the variant's directory
    mtime_ns: int | None  # None: the previous compose has no manifest (stat it when linked)
    sha256: str | None = None  # from the previous compose's manifest (v2), if it says
    checksum_type: str = "sha256"  # what kind of checksum ``pkgid`` is

    @property
    def rel(self) -> PurePosixPath:
        return self.variant.rel_dir / self.href


@dataclass(frozen=True, slots=True)
class Previous:
    """The previous finished compose's packages, by checksum (its first variant wins)."""

    compose_id: str
    packages: Mapping[str, PreviousPackage]


@dataclass(frozen=True, slots=True)
class PlacementStep:
    """What happens to one upstream package, and why."""

    kind: PlacementKind
    fact: PackageFact
    reason: str
    base: str = ""  # LINK and DOWNLOAD: the URL of the upstream repository that serves it
    targets: tuple[Target, ...] = ()  # LINK and DOWNLOAD: every place in the compose
    source: PreviousPackage | None = None  # LINK: the previous compose's copy

    @property
    def url(self) -> str:
        """Where the build system serves it. Made when asked: a compose after a small change
        links almost every package, and a URL kept for each of 100,000 steps was memory
        (and time: each is percent-encoded character by character) spent on nothing."""
        return url_of(self.base, self.fact.href) if self.base else ""

    def describe(self) -> str:
        if self.kind is PlacementKind.DROP:
            subject = self.fact.nevra
        elif self.kind is PlacementKind.REFUSE:
            subject = repr(self.fact.href)
        else:
            subject = f"{self.fact.filename} -> {', '.join(str(t.rel) for t in self.targets)}"
        return f"{self.kind.value} {subject}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Selection:
    """One variant after :func:`choose`: what it takes, drops and refuses."""

    source: VariantSource
    hashed: bool
    chosen: tuple[PackageFact, ...]  # sorted by file name
    dropped: tuple[PlacementStep, ...] = ()
    unsafe: tuple[PlacementStep, ...] = ()  # REFUSE: locations that may not be used
    clashes: tuple[PlacementStep, ...] = ()  # REFUSE: file names another package claims

    @property
    def refused(self) -> tuple[PlacementStep, ...]:
        return (*self.unsafe, *self.clashes)

    @property
    def variant(self) -> Variant:
        return self.source.variant

    def target(self, fact: PackageFact) -> Target:
        return Target(self.variant, target_href(fact.filename, self.hashed))

    @property
    def hrefs(self) -> dict[str, str]:
        """``pkgid -> href`` in the composed repo (what its metadata will say)."""
        return {f.pkgid: self.target(f).href for f in self.chosen}

    @property
    def composed(self) -> list[PackageFact]:
        """The chosen packages as the composed repo lists them (hrefs rewritten)."""
        return [replace(f, href=self.target(f).href) for f in self.chosen]

    @property
    def problem(self) -> str | None:
        """Why the compose must stop (the first refusal), or None."""
        if self.unsafe:
            first = self.unsafe[0]
            where = f"{self.source.url}/repodata/repomd.xml"
            return f"{where}: package {first.fact.nevra}: {first.reason}"
        if self.clashes:
            dups = [s.targets[0].href for s in self.clashes]
            return f"{self.source.url}: different packages share the file names {dups}"
        return None


@dataclass(frozen=True, slots=True)
class PlacementPlan:
    """Every package of a compose: placed (LINK, DOWNLOAD), dropped or refused."""

    placements: tuple[PlacementStep, ...]  # one per distinct package, variant and name order
    dropped: tuple[PlacementStep, ...] = ()
    refused: tuple[PlacementStep, ...] = ()
    problem: str | None = None

    @property
    def links(self) -> tuple[PlacementStep, ...]:
        return tuple(s for s in self.placements if s.kind is PlacementKind.LINK)

    @property
    def downloads(self) -> tuple[PlacementStep, ...]:
        """The downloads in the order they start: largest first."""
        return largest_first(s for s in self.placements if s.kind is PlacementKind.DOWNLOAD)

    @property
    def steps(self) -> tuple[PlacementStep, ...]:
        return (*self.refused, *self.dropped, *self.links, *self.downloads)

    def describe(self) -> list[str]:
        return [s.describe() for s in self.steps]


#: What a URL's path holds as it is (RFC 3986's unreserved, sub-delims, ":", "@" and "/").
_URL_PATH_SAFE = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/"
)


def url_of(base: str, href: str) -> str:
    """The URL of ``href`` (a path inside the repository at ``base``, as metadata gives
    it): any other character percent-encoded (as UTF-8), so that a file whose name holds
    a space, ``%``, ``?``, ``#`` or a letter outside ASCII is asked for by that name."""
    path = "".join(
        c
        if c in _URL_PATH_SAFE
        else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
        for c in href
    )
    return f"{base}/{path}"


def largest_first(steps: Iterable[PlacementStep]) -> tuple[PlacementStep, ...]:
    """Downloads start largest first, so that a big package does not begin last and keep
    one thread busy after the others have finished (ties keep their order)."""
    return tuple(sorted(steps, key=lambda s: s.fact.size, reverse=True))


def choose(source: VariantSource, keep_versions: int, hashed: bool) -> Selection:
    """Check every upstream package of one variant, then keep the newest ``keep_versions``
    of each name.arch (0 keeps all) and claim their places in the compose."""
    unsafe: list[PlacementStep] = []
    safe: list[PackageFact] = []
    for fact in source.packages:
        try:
            check_href(fact)
        except UnsafePathError as exc:
            unsafe.append(PlacementStep(PlacementKind.REFUSE, fact, str(exc)))
        else:
            safe.append(fact)
    chosen: list[PackageFact] = []
    dropped: list[PlacementStep] = []
    for ordered in newest_first(safe):
        kept = ordered if keep_versions == 0 else ordered[:keep_versions]
        chosen.extend(kept)
        if len(ordered) > len(kept):
            why = f"keep_versions {keep_versions} keeps {', '.join(f.nevra for f in kept)}"
            dropped.extend(PlacementStep(PlacementKind.DROP, f, why) for f in ordered[len(kept) :])
    selection = Selection(source, hashed, tuple(by_file_name(chosen)))
    taken, clashes = _claim_names(selection)
    return replace(
        selection,
        chosen=taken,
        dropped=tuple(sorted(dropped, key=lambda s: (s.fact.filename, s.fact.pkgid))),
        unsafe=tuple(unsafe),
        clashes=clashes,
    )


def _claim_names(
    selection: Selection,
) -> tuple[tuple[PackageFact, ...], tuple[PlacementStep, ...]]:
    """(the packages that keep their place, a REFUSE for each whose place an earlier,
    different package has claimed)."""
    claimed: dict[str, PackageFact] = {}
    kept: list[PackageFact] = []
    refused: list[PlacementStep] = []
    for fact in selection.chosen:
        target = selection.target(fact)
        first = claimed.setdefault(target.href, fact)
        if first.pkgid == fact.pkgid:
            kept.append(fact)
        else:
            why = f"{target.href} is the file of another package too ({first.pkgid[:12]})"
            refused.append(PlacementStep(PlacementKind.REFUSE, fact, why, targets=(target,)))
    return tuple(kept), tuple(refused)


def plan(selections: Sequence[Selection], previous: Previous | None) -> PlacementPlan:
    """Place every chosen package once (by checksum), wherever its variants want it.

    The variants must agree on what a checksum is: one file cannot have two sizes, nor
    be a sha256 in one repository and a sha1 in another (the plan's problem says where).
    """
    first: dict[str, tuple[PackageFact, str]] = {}  # pkgid -> (fact, its repository's URL)
    targets: dict[str, list[Target]] = {}
    conflict: str | None = None
    for selection in selections:
        for fact in selection.chosen:
            known, known_base = first.setdefault(fact.pkgid, (fact, selection.source.url))
            if conflict is None and _kind(known) != _kind(fact):
                conflict = (
                    f"{selection.source.url}/repodata/repomd.xml: package {fact.nevra}: "
                    f"{fact.checksum_type} {fact.pkgid} of {fact.size} bytes, but a "
                    f"{known.checksum_type} of {known.size} bytes at "
                    f"{url_of(known_base, known.href)}"
                )
            targets.setdefault(fact.pkgid, []).append(selection.target(fact))
    names = _names(previous)
    placements = tuple(
        _placement(fact, base, tuple(targets[pkgid]), previous, names)
        for pkgid, (fact, base) in first.items()
    )
    return PlacementPlan(
        placements,
        dropped=tuple(s for sel in selections for s in sel.dropped),
        refused=tuple(s for sel in selections for s in sel.refused),
        problem=next((sel.problem for sel in selections if sel.problem), conflict),
    )


def _kind(fact: PackageFact) -> tuple[str, int]:
    """What two records of one checksum must agree on: its type, and the file's size."""
    return fact.checksum_type.lower(), fact.size


def _names(previous: Previous | None) -> frozenset[str]:
    if previous is None:
        return frozenset()
    return frozenset(PurePosixPath(p.href).name for p in previous.packages.values())


def _placement(
    fact: PackageFact,
    base: str,
    targets: tuple[Target, ...],
    previous: Previous | None,
    names: frozenset[str],
) -> PlacementStep:
    download = PlacementKind.DOWNLOAD
    if previous is None:
        return PlacementStep(download, fact, "no previous compose", base, targets)
    cid = previous.compose_id
    known = previous.packages.get(fact.pkgid)
    if known is None:
        why = (
            f"{cid} has another {fact.filename} (other {fact.checksum_type})"
            if fact.filename in names
            else f"not in {cid}"
        )
        return PlacementStep(download, fact, why, base, targets)
    if known.size != fact.size:
        why = f"{cid} has it with {known.size} bytes, the metadata says {fact.size}"
        return PlacementStep(download, fact, why, base, targets)
    if known.checksum_type.lower() != fact.checksum_type.lower():  # the same value: a lie
        why = (
            f"{cid} has a {known.checksum_type} of that value, the metadata a {fact.checksum_type}"
        )
        return PlacementStep(download, fact, why, base, targets)
    why = intern(f"{cid} has it (same {fact.checksum_type} and size)")  # one, not 100,000
    return PlacementStep(PlacementKind.LINK, fact, why, base, targets, known)


def _kept(given: str, normal: str) -> str:
    """``given`` itself when it is already ``normal``: one string, not two, for each of
    100,000 packages (the previous compose's index is alive for the whole compose)."""
    return given if given == normal else normal


def previous_index(
    compose_id: str,
    repos: Iterable[tuple[Variant, Iterable[PackageFact]]],
    manifest: Iterable[SourceFile] | None,
) -> Previous:
    """The previous compose from its repos' package facts (in variant order: the first
    variant that holds a package wins) and its manifest (the mtimes of its files)."""
    known = {_kept(f.rel, str(PurePosixPath(f.rel))): f for f in manifest or ()}
    packages: dict[str, PreviousPackage] = {}
    for variant, facts in repos:
        rel_dir = variant.rel_dir  # a new path each time it is asked: once per variant
        for fact in facts:
            href = _kept(fact.href, str(safe_relpath(fact.href)))
            listed = known.get(str(rel_dir / href))
            mtime, sha256 = (listed.mtime_ns, listed.sha256) if listed else (None, None)
            packages.setdefault(
                fact.pkgid,
                PreviousPackage(
                    fact.pkgid,
                    fact.size,
                    variant,
                    href,
                    mtime,
                    sha256=sha256,
                    checksum_type=fact.checksum_type,
                ),
            )
    return Previous(compose_id, packages)
