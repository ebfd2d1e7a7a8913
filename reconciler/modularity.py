"""``keep_versions`` in a repository that carries module metadata. Pure: no I/O.

A ``modules.yaml`` lists module stream versions (``modulemd`` documents), each
with the packages it is built of (``data.artifacts.rpms``, NEVRAs). dnf treats a
package that is an artifact of any module as *modular*: it is hidden unless its
stream is enabled (or default), and an enabled stream hides the non-modular
packages of the same names. So a package filter that ignores modules breaks
clients both ways:

- modular and non-modular builds of a name are not one line of versions: keeping
  only the newest ``name.arch`` drops a non-modular ``foo-1.0`` for a modular
  ``foo-2.0`` that clients without the stream cannot see (``dnf install foo``: no
  match), and drops whole older streams (``foo:1``) for a newer one (``foo:2``);
- a ``modules.yaml`` carried as it is names artifacts that are gone, and one whose
  artifact lists were trimmed to the kept packages describes stream versions that
  were never built (a partial version installs with dependencies missing), while a
  version left out of it turns the packages it still has into non-modular ones
  that every client then sees as updates.

Neither "filter each artifact list" nor refusing every modular repo is right, so
this does what ``dnf reposync --newest-only`` does (dnf-plugins-core
``reposync._get_latest``), for any N: the non-modular packages keep their newest
``keep_versions`` per ``name.arch`` among themselves; each module stream
(``name:stream``) keeps its newest ``keep_versions`` versions (every context of
them), plus any version that holds one of the stream's newest ``keep_versions``
builds of a package, and with each kept version all of its artifacts; every other
artifact is dropped (unless a kept version names it too), and the documents of
the versions not kept leave ``modules.yaml``. A stream therefore never vanishes,
a kept version is whole, and a dropped one leaves nothing modular behind; the
other documents (``modulemd-defaults``, ``modulemd-obsoletes``, translations)
stay as they are, since every stream they name is still there.

A module document whose artifacts are none of this repository's packages (they
live in another repository, or it names none) is kept as it is: this repository's
package filter has nothing to say about it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from .placement import PlacementStep as Step
from .placement import Selection, VariantSource, choose
from .selection import PackageFact, newest_first
from .vocabulary import PlacementKind


@dataclass(frozen=True, slots=True)
class ModuleStream:
    """One ``modulemd`` document of a ``modules.yaml``: a version of a module stream (in
    one context), and the NEVRAs of the packages it is built of."""

    index: int  # its position among the file's documents (0-based)
    name: str
    stream: str
    version: int
    context: str
    artifacts: frozenset[str]  # normalised by :func:`nevra_key`

    @property
    def name_stream(self) -> str:
        return f"{self.name}:{self.stream}"

    @property
    def nsvc(self) -> str:
        return f"{self.name}:{self.stream}:{self.version}:{self.context}"


@dataclass(frozen=True, slots=True)
class ModularChoice:
    """A variant's selection with modules taken into account, and the module documents
    (stream versions) that leave its ``modules.yaml``."""

    selection: Selection
    dropped_streams: tuple[ModuleStream, ...] = ()

    @property
    def filters_modules(self) -> bool:
        return bool(self.dropped_streams)


def nevra_key(nevra: str) -> str:
    """``name-epoch:version-release.arch`` with the epoch spelled out (modulemd writes
    it always, ``0:`` too; an artifact without one means epoch 0)."""
    rest, dot, arch = nevra.rpartition(".")
    nv, dash, release = rest.rpartition("-")
    name, dash2, version = nv.rpartition("-")
    if not (dot and dash and dash2 and name and version and release and arch):
        return nevra  # not a NEVRA: matches no package
    if ":" not in version:
        version = f"0:{version}"
    return f"{name}-{version}-{release}.{arch}"


def modular_packages(
    facts: Iterable[PackageFact], streams: Iterable[ModuleStream]
) -> frozenset[str]:
    """The pkgids of ``facts`` that some module names as an artifact."""
    artifacts = frozenset().union(*(s.artifacts for s in streams))
    return frozenset(f.pkgid for f in facts if f.nevra in artifacts)


def choose_modular(
    source: VariantSource, streams: Sequence[ModuleStream], keep_versions: int, hashed: bool
) -> ModularChoice:
    """:func:`reconciler.placement.choose` for a repository with modules (see the
    module's docstring): the same refusals, the module-aware ``keep_versions``."""
    every = choose(source, 0, hashed)  # refuses every unsafe location, kept or not
    if every.unsafe or keep_versions == 0:
        return ModularChoice(every)
    facts = _distinct(source.packages)
    modular = modular_packages(facts, streams)
    keep: set[str] = set()
    drops: dict[str, str] = {}  # pkgid -> why it is not taken
    for ordered in newest_first(f for f in facts if f.pkgid not in modular):
        kept = ordered[:keep_versions]
        why = f"keep_versions {keep_versions} keeps {', '.join(f.nevra for f in kept)}"
        keep.update(f.pkgid for f in kept)
        drops.update((f.pkgid, why) for f in ordered[keep_versions:])
    present = {f.nevra for f in facts if f.pkgid in modular}
    kept_streams, dropped_streams = _keep_streams(facts, streams, present, keep_versions)
    claimed = frozenset().union(*(s.artifacts for s in kept_streams))
    for fact in (f for f in facts if f.pkgid in modular):
        if fact.nevra in claimed:
            keep.add(fact.pkgid)
        else:
            gone = ", ".join(s.nsvc for s in dropped_streams if fact.nevra in s.artifacts)
            drops[fact.pkgid] = f"keep_versions {keep_versions} does not keep module {gone}"
    kept_source = replace(source, packages=tuple(f for f in source.packages if f.pkgid in keep))
    dropped = tuple(
        Step(PlacementKind.DROP, f, drops[f.pkgid])
        for f in sorted(facts, key=lambda f: (f.filename, f.pkgid))
        if f.pkgid not in keep
    )
    selection = replace(choose(kept_source, 0, hashed), source=source, dropped=dropped)
    return ModularChoice(selection, dropped_streams)


def _distinct(packages: Iterable[PackageFact]) -> list[PackageFact]:
    """Each package once (its first record), as :func:`newest_first` takes them."""
    seen: set[str] = set()
    out: list[PackageFact] = []
    for fact in packages:
        if fact.pkgid not in seen:
            seen.add(fact.pkgid)
            out.append(fact)
    return out


def _keep_streams(
    facts: Sequence[PackageFact],
    streams: Sequence[ModuleStream],
    present: set[str],
    keep_versions: int,
) -> tuple[list[ModuleStream], tuple[ModuleStream, ...]]:
    """(the stream versions kept, those that leave ``modules.yaml``), per name:stream."""
    groups: dict[str, list[ModuleStream]] = defaultdict(list)
    for s in streams:
        groups[s.name_stream].append(s)
    by_nevra: dict[str, list[PackageFact]] = defaultdict(list)
    for fact in facts:
        by_nevra[fact.nevra].append(fact)
    kept: list[ModuleStream] = []
    dropped: list[ModuleStream] = []
    for members in groups.values():
        versions = sorted({s.version for s in members}, reverse=True)
        wanted = set(versions[:keep_versions])
        in_stream = sorted({n for s in members for n in s.artifacts if n in present})
        # a version holding one of the stream's newest builds of a package is kept too
        # (dnf reposync: the newest NEVRA may belong to an older version)
        for ordered in newest_first(f for n in in_stream for f in by_nevra[n]):
            for fact in ordered[:keep_versions]:
                wanted.add(max(s.version for s in members if fact.nevra in s.artifacts))
        for s in members:
            if s.version in wanted or not (s.artifacts & present):
                kept.append(s)
            else:
                dropped.append(s)
    return kept, tuple(sorted(dropped, key=lambda s: s.index))
