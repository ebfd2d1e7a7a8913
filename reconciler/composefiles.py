"""The files of a compose as records, and what changed between two composes. Pure: no I/O.

A :class:`SourceFile` is one file of a compose's SIG directory with the size
and mtime it has there; :class:`Changes` is what a compose changed relative to
the compose it was made on top of. :mod:`reconciler.manifest` reads and writes
both; composing computes them (:func:`diff`), and a publish's change set
(:mod:`reconciler.changeset`) folds a chain of them (:func:`combine`).

A :class:`RepoContent` is what a composed repository's metadata is written from;
two composes whose repo has the same one can share that repo's ``repodata/``
(composing links the previous compose's, so that nothing a mirror or a dnf cache
holds changes for a repo that did not).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .vocabulary import PublishPhase

REPOMD = "repodata/repomd.xml"


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One file of a compose's SIG directory (``root``); ``rel`` is relative to it.

    ``sha256`` is what its bytes must hash to (manifest v2), None when not known (a
    manifest v1, a walk of the compose).
    """

    rel: str
    root: Path
    size: int
    mtime_ns: int
    sha256: str | None = None

    @property
    def path(self) -> Path:
        return self.root / self.rel

    @property
    def is_repomd(self) -> bool:
        return self.rel == REPOMD or self.rel.endswith(f"/{REPOMD}")

    @property
    def phase(self) -> PublishPhase:
        """When a publish places it: packages and other files, metadata, repomd.xml and
        its signature ``repomd.xml.asc`` (right after it: :mod:`reconciler.publishing`) last."""
        if self.is_repomd or self.rel.endswith(f"/{REPOMD}.asc") or self.rel == f"{REPOMD}.asc":
            return PublishPhase.REPOMD
        return PublishPhase.METADATA if "/repodata/" in f"/{self.rel}" else PublishPhase.PACKAGES


@dataclass(frozen=True, slots=True)
class CarriedFile:
    """A metadata file a composed repo carries as it is (comps, modules, updateinfo):
    its record type, its file name without the checksum prefix, its sha256."""

    type: str
    name: str
    sha256: str


@dataclass(frozen=True, slots=True)
class RepoContent:
    """What a composed repo's ``repodata/`` is written from, and so all it depends on: its
    packages (``pkgid``, checksum type, ``location_href``; the pkgid is the checksum of
    the RPM's bytes, which the package's records are read from) and the files it carries.

    The GPG keys beside ``repodata/`` are not part of it: no metadata names them.
    """

    packages: frozenset[tuple[str, str, str]]
    carried: frozenset[CarriedFile]

    @classmethod
    def of(
        cls, packages: Iterable[tuple[str, str, str]], carried: Iterable[CarriedFile]
    ) -> RepoContent:
        return cls(
            frozenset((pkgid, kind.lower(), href) for pkgid, kind, href in packages),
            frozenset(carried),
        )


@dataclass(frozen=True, slots=True)
class Changes:
    """What a compose changed relative to ``base`` (the compose it was made on top of)."""

    base: str
    added: tuple[SourceFile, ...]  # new, or a different size or mtime than in ``base``
    removed: tuple[str, ...]  # relpaths ``base`` has and this compose does not


def diff(base: str, old: Iterable[SourceFile], new: Iterable[SourceFile]) -> Changes:
    """The changes from the files ``old`` (of compose ``base``) to ``new``."""
    before = {f.rel: f for f in old}  # the records themselves: no tuple for each file
    after = list(new)
    added = tuple(f for f in after if _changed(before.get(f.rel), f))
    now = {f.rel for f in after}
    return Changes(base, added, tuple(sorted(rel for rel in before if rel not in now)))


def _changed(was: SourceFile | None, now: SourceFile) -> bool:
    return was is None or (was.size, was.mtime_ns) != (now.size, now.mtime_ns)


def combine(chain: Sequence[Changes]) -> tuple[list[SourceFile], list[str]]:
    """Changes applied one after the other, oldest first: (files to place, relpaths gone).

    Read every link of the chain with the last compose's directory as ``root``: the
    files to place are taken from there.
    """
    final: dict[str, SourceFile | None] = {}
    for changes in chain:
        for rel in changes.removed:
            final[rel] = None
        for f in changes.added:
            final[f.rel] = f
    place = [f for f in final.values() if f is not None]
    gone = [rel for rel, f in final.items() if f is None]
    return sorted(place, key=lambda f: f.rel), sorted(gone)
