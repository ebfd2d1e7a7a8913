"""Fetching one variant's upstream metadata for a compose (DESIGN.md section 7).

``repomd.xml``, then the package metadata (primary, filelists, other) and the
records carried over as they are (comps, modules, updateinfo), each verified
against the checksum and size ``repomd.xml`` gives; primary is read, filelists
and other must list its packages in its order; then the variant's packages
are chosen (:func:`reconciler.placement.choose`), and a refusal stops the
compose here, naming the href. Every error names the URL of the file concerned
(or of ``repomd.xml``, which names it).

A variant that carries module metadata and keeps fewer than all versions
(``keep_versions`` > 0) is chosen module by module instead
(:func:`reconciler.modularity.choose_modular`: why, there), and its
``modules.yaml`` is written again without the stream versions it no longer has.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import repodata
from .composefiles import CarriedFile
from .errors import IntegrityError, ReconcilerError, UpstreamError
from .layout import Variant
from .modularity import ModularChoice, choose_modular, modular_packages
from .modulemd import ModulesFile, read_modules, write_modules
from .placement import Selection, VariantSource, choose, url_of
from .selection import check_location, identity_problem
from .upstream import Expected, Upstream, new_hash
from .vocabulary import VariantKind

log = logging.getLogger(__name__)

#: The package metadata a compose reads (and rewrites with its own hrefs).
PACKAGE_METADATA = frozenset({"primary", "filelists", "other"})
#: The record type of module metadata.
MODULES = "modules"
#: The file name suffixes of compressed metadata.
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zck")


@dataclass(frozen=True, slots=True)
class FetchedVariant:
    """One variant's upstream metadata in the work directory, and its selection."""

    selection: Selection
    repomd_sha256: str
    meta: Mapping[str, Path]  # primary, filelists, other: the local files
    extras: tuple[tuple[str, Path], ...]  # (record type, local file) carried as they are
    carried: tuple[CarriedFile, ...] = ()  # the extras' names and checksums

    @property
    def variant(self) -> Variant:
        return self.selection.variant

    @property
    def url(self) -> str:
        return self.selection.source.url


def fetch_variant(
    up: Upstream, url: str, work: Path, variant: Variant, keep_versions: int, hashed: bool
) -> FetchedVariant:
    """Fetch ``variant``'s metadata from ``url`` into ``work`` and choose its packages."""
    vdir = work / f"{variant.repo}.{variant.upstream_arch}"
    (vdir / "repodata").mkdir(parents=True)
    repomd_url = f"{url}/repodata/repomd.xml"
    raw = up.get(repomd_url)
    (vdir / "repodata" / "repomd.xml").write_bytes(raw)
    records = repodata.parse_repomd(vdir / "repodata" / "repomd.xml", repomd_url)
    meta: dict[str, Path] = {}
    sources: dict[str, str] = {}
    extras: list[tuple[str, Path]] = []
    sums: dict[Path, str] = {}  # carried file -> its sha256
    carried: dict[str, str] = {}  # file name in the composed repodata -> record type
    for rec in records:
        if rec.type not in PACKAGE_METADATA and rec.type not in repodata.CARRIED_TYPES:
            log.info("%s: not carrying metadata record %r", url, rec.type)
            continue
        try:
            href = check_location(rec.href)
            new_hash(rec.checksum_type)
        except ReconcilerError as exc:  # neither names the URL
            raise type(exc)(f"{repomd_url}: {rec.type} record: {exc}") from None
        if rec.type in repodata.CARRIED_TYPES:
            _claim_name(carried, rec, repomd_url)
        local = vdir / f"{rec.type}-{href.name}"
        source = url_of(url, str(href))
        up.download(source, local, Expected(rec.checksum_type, rec.checksum, rec.size))
        if rec.type in repodata.CARRIED_TYPES:
            named = vdir / "extras" / rec.type / rec.plain_name
            named.parent.mkdir(parents=True)
            local.rename(named)
            sums[named] = repodata.check_carried(named, rec.type, source)
            extras.append((rec.type, named))
        else:
            meta[rec.type] = local
        sources[rec.type] = source
    facts = repodata.scan_primary(meta["primary"], sources["primary"])
    pkgids = [f.pkgid for f in facts]
    for kind in ("filelists", "other"):
        if kind in meta:  # createrepo_c reads them in step with primary: they must agree
            repodata.check_in_step(meta[kind], kind, pkgids, sources[kind], sources["primary"])
    upstream = VariantSource(variant, url, tuple(facts))
    choice, modules = _choose(up, upstream, extras, sources, keep_versions, hashed)
    selection = choice.selection
    if selection.problem is not None:
        raise UpstreamError(selection.problem)
    _check_chosen(selection, sources["primary"])
    if modules is not None and choice.filters_modules:
        filtered = _filter_modules(modules, set(carried), choice, sources[MODULES])
        sums[filtered] = repodata.check_carried(filtered, MODULES, sources[MODULES])
        extras = [(kind, filtered if kind == MODULES else p) for kind, p in extras]
    log.info("%s: %d packages upstream, %d chosen", url, len(facts), len(selection.chosen))
    return FetchedVariant(
        selection,
        hashlib.sha256(raw).hexdigest(),
        meta,
        tuple(extras),
        tuple(CarriedFile(kind, path.name, sums[path]) for kind, path in extras),
    )


def _choose(
    up: Upstream,
    source: VariantSource,
    extras: list[tuple[str, Path]],
    sources: Mapping[str, str],
    keep_versions: int,
    hashed: bool,
) -> tuple[ModularChoice, ModulesFile | None]:
    """The variant's selection, module by module where it has modules and a filter (and
    then its modules file, read)."""
    paths = [p for kind, p in extras if kind == MODULES]
    if keep_versions == 0 or not paths:
        return ModularChoice(choose(source, keep_versions, hashed)), None
    if len(paths) > 1:  # one is read by dnf; which one, the compose cannot know
        raise UpstreamError(f"{sources[MODULES]}: more than one modules record")
    modules = read_modules(paths[0], sources[MODULES], up.config.max_metadata_bytes)
    if not modular_packages(source.packages, modules.streams):  # they name none of them
        return ModularChoice(choose(source, keep_versions, hashed)), None
    return choose_modular(source, modules.streams, keep_versions, hashed), modules


def _filter_modules(
    modules: ModulesFile, taken: set[str], choice: ModularChoice, source: str
) -> Path:
    """A modules file without the stream versions that ``choice`` drops (gzip-compressed,
    named ``<name>.gz``), to carry in place of the upstream's (``modules.path``)."""
    path = modules.path
    name = path.name
    for suffix in _COMPRESSED:
        name = name.removesuffix(suffix)
    name = f"{name}.gz"
    if name != path.name and name in taken:
        raise UpstreamError(f"{source}: the filtered modules file would be named {name!r}, "
                            "as another carried file is")  # fmt: skip
    dest = path.parent.parent / f"{MODULES}-filtered" / name
    dest.parent.mkdir()
    write_modules(modules, choice.dropped_streams, dest, source)
    log.info(
        "%s: leaving out module versions %s (not kept by keep_versions)",
        source, ", ".join(s.nsvc for s in choice.dropped_streams),
    )  # fmt: skip
    return dest


def _check_chosen(selection: Selection, primary_url: str) -> None:
    """Refuse a chosen package that could not be verified (its checksum type is unknown
    here) or recorded in the compose's ``rpms.json``; the error names primary's URL."""
    is_source = selection.variant.kind is VariantKind.SOURCE
    for fact in selection.chosen:
        try:
            new_hash(fact.checksum_type)
        except IntegrityError as exc:
            raise IntegrityError(f"{primary_url}: package {fact.nevra}: {exc}") from None
        problem = identity_problem(fact, is_source)
        if problem is not None:
            raise UpstreamError(f"{primary_url}: package {fact.nevra}: {problem}")


def _claim_name(carried: dict[str, str], rec: repodata.MetaFile, repomd_url: str) -> None:
    """Refuse a carried record whose file name (without its checksum) is empty, or is the
    name of another file of the composed repodata: createrepo_c first writes them all to
    ``repodata/`` under these names. ``carried`` maps the names taken to record types."""
    name = rec.plain_name
    taken = carried.setdefault(name, rec.type)
    if taken != rec.type:
        raise UpstreamError(f"{repomd_url}: {rec.type} record: {taken} has the file name {name!r}")
    if not name or name in repodata.WRITTEN:
        raise UpstreamError(
            f"{repomd_url}: {rec.type} record: the compose cannot carry a file named {name!r}"
        )
