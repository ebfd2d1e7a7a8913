"""Carrying out a compose's placement plan: reuse of the previous compose's files, downloads.

The decisions are :mod:`reconciler.placement`'s; this module only acts on them:
every LINK, in order, here (a copy of a file the previous compose lost since is
downloaded instead); then every DOWNLOAD concurrently, largest first, each
verified against the checksum and size of the metadata
(:meth:`reconciler.upstream.Upstream.download_all`). A package that goes to
several places is placed once and shared with the others. Sharing is a clone
(reflink: blocks shared, inodes not) where the filesystem can, else a hardlink
(:class:`~reconciler.fsutil.Sharer`).

Every package ends read-only (0444: hardlinked, it is one inode in every tree) and with
its sha256 known for the manifest: the metadata's checksum when that is a sha256
(never hashed again), the previous compose's manifest for a linked one, else hashed
once here.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from . import checksums
from .errors import IntegrityError
from .fsutil import READ_ONLY, Sharer, read_only
from .layout import ComposeTree, Variant
from .placement import PlacementPlan, PlacementStep, Target, largest_first
from .progress import Reporter
from .upstream import Expected, Fetched, Upstream
from .vocabulary import PlacementKind

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Placed:
    """A package in place: its paths (first one placed, the rest linked to it) and mtime."""

    step: PlacementStep
    paths: tuple[Path, ...]
    mtime_ns: int
    linked: bool  # from the previous compose (False: downloaded)
    sha256: str  # what its bytes hash to (the manifest says it)


@dataclass
class Counters:
    """What the placing did (threads add to it)."""

    downloaded: int = 0
    downloaded_bytes: int = 0
    linked: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, downloaded: int = 0, nbytes: int = 0, linked: int = 0) -> None:
        with self.lock:
            self.downloaded += downloaded
            self.downloaded_bytes += nbytes
            self.linked += linked


@dataclass
class Placer:
    """Places the packages of compose ``cid`` (and links from ``previous``, a compose ID)."""

    up: Upstream
    tree: ComposeTree
    cid: str
    previous: str | None
    reporter: Reporter
    counters: Counters
    sharer: Sharer = field(default_factory=Sharer)  # decides once: clones, links or copies

    def __post_init__(self) -> None:
        self.sharer.label = self.sharer.label or f"composing in {self.tree.release_dir}"

    #: (compose ID, variant) -> its directory: made once, not for each of 100,000 packages
    _dirs: dict[tuple[str, Variant], Path] = field(default_factory=dict, init=False, repr=False)

    def place(self, plan: PlacementPlan, label: str) -> list[Placed]:
        """Carry out ``plan``; the result is in the order of ``plan.placements``."""
        paths = {s.fact.pkgid: tuple(self._path(t) for t in s.targets) for s in plan.placements}
        for directory in sorted({p.parent for group in paths.values() for p in group}):
            directory.mkdir(parents=True, exist_ok=True)
        done: dict[str, Placed] = {}
        fetch: list[PlacementStep] = []
        for step in plan.placements:
            linked = None
            if step.kind is PlacementKind.LINK:
                linked = self._link(step, paths[step.fact.pkgid])
            if linked is None:
                fetch.append(step)
            else:
                done[step.fact.pkgid] = linked
        downloads = largest_first(fetch)
        jobs = [(s.url, paths[s.fact.pkgid][0], _expected(s)) for s in downloads]

        def downloaded(index: int, got: Fetched) -> None:
            step = downloads[index]
            done[step.fact.pkgid] = self._downloaded(step, paths[step.fact.pkgid], got)

        self.reporter.start(label, sum(s.fact.size for s in downloads))
        try:
            self.up.download_all(jobs, downloaded)
        finally:
            self.reporter.stop()
        return [done[s.fact.pkgid] for s in plan.placements]

    def _dir(self, cid: str, variant: Variant) -> Path:
        found = self._dirs.get((cid, variant))
        if found is None:
            found = self._dirs[(cid, variant)] = self.tree.variant_dir(cid, variant)
        return found

    def _path(self, target: Target) -> Path:
        return self._dir(self.cid, target.variant).joinpath(*PurePosixPath(target.href).parts)

    def _link(self, step: PlacementStep, paths: Sequence[Path]) -> Placed | None:
        """Share the previous compose's copy; None when it is gone (then download it)."""
        assert step.source is not None and self.previous is not None
        source = self._dir(self.previous, step.source.variant).joinpath(
            *PurePosixPath(step.source.href).parts
        )
        first, *rest = paths
        try:
            self.sharer.new(source, first)
        except FileNotFoundError:
            log.warning("%s is gone from the previous compose; downloading it", source)
            return None
        sha256 = _sha256(step, first, step.source.sha256)
        if sha256 is None:
            log.warning("%s does not hash to its metadata's checksum; downloading it", source)
            first.unlink()
            return None
        st = os.lstat(first)
        read_only(first, st)  # a compose made before modes were kept: once per inode
        for target in rest:
            self.sharer.new(first, target)
        mtime_ns = step.source.mtime_ns
        if mtime_ns is None:
            mtime_ns = st.st_mtime_ns
        self.counters.add(linked=1)
        return Placed(step, tuple(paths), mtime_ns, linked=True, sha256=sha256)

    def _downloaded(self, step: PlacementStep, paths: Sequence[Path], got: Fetched) -> Placed:
        """A verified download at ``paths[0]``: made read-only, linked to the rest."""
        first, *rest = paths
        first.chmod(READ_ONLY)
        sha256 = _sha256(step, first)
        if sha256 is None:
            raise IntegrityError(f"{first}: changed after it was downloaded and verified")
        self.counters.add(downloaded=1, nbytes=got.nbytes)
        self.reporter.advance(got.nbytes)
        for target in rest:
            self.sharer.new(first, target)
        return Placed(step, tuple(paths), got.mtime_ns, linked=False, sha256=sha256)


def _expected(step: PlacementStep) -> Expected:
    fact = step.fact
    return Expected(fact.checksum_type, fact.pkgid, fact.size)


def _sha256(step: PlacementStep, path: Path, known: str | None = None) -> str | None:
    """The package's sha256: the metadata's checksum when it is one (nothing is read),
    else ``known`` (the previous compose's manifest), else its bytes hashed once, in the
    metadata's type too (an upstream with sha1 sums): None when that does not match."""
    fact = step.fact
    if fact.checksum_type.lower() == checksums.SHA256:
        return fact.pkgid.lower()
    if known is not None:
        return known
    theirs, sha256 = checksums.digests(path, fact.checksum_type, checksums.SHA256)
    return sha256 if theirs == fact.pkgid.lower() else None
