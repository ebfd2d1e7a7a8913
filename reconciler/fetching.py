"""Fetching one variant's upstream metadata for a compose (DESIGN.md section 7).

``repomd.xml``, then the package metadata (primary, filelists, other) and the
records carried over as they are (comps, modules, updateinfo), each verified
against the checksum and size ``repomd.xml`` gives; then the variant's packages
are chosen (:func:`reconciler.placement.choose`), and a refusal stops the
compose here, naming the href.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import repodata
from .errors import UpstreamError
from .layout import Variant
from .names import safe_relpath
from .placement import Selection, VariantSource, choose
from .upstream import Expected, Upstream

log = logging.getLogger(__name__)

#: The package metadata a compose reads (and rewrites with its own hrefs).
PACKAGE_METADATA = frozenset({"primary", "filelists", "other"})


@dataclass(frozen=True, slots=True)
class FetchedVariant:
    """One variant's upstream metadata in the work directory, and its selection."""

    selection: Selection
    repomd_sha256: str
    meta: Mapping[str, Path]  # primary, filelists, other: the local files
    extras: tuple[tuple[str, Path], ...]  # (record type, local file) carried as they are

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
    raw = up.get(f"{url}/repodata/repomd.xml")
    (vdir / "repodata" / "repomd.xml").write_bytes(raw)
    records = repodata.parse_repomd(vdir / "repodata" / "repomd.xml", f"{url}/repodata/repomd.xml")
    meta: dict[str, Path] = {}
    extras: list[tuple[str, Path]] = []
    for rec in records:
        if rec.type not in PACKAGE_METADATA and rec.type not in repodata.CARRIED_TYPES:
            log.info("%s: not carrying metadata record %r", url, rec.type)
            continue
        href = safe_relpath(rec.href)
        local = vdir / f"{rec.type}-{PurePosixPath(href).name}"
        up.download(f"{url}/{href}", local, Expected(rec.checksum_type, rec.checksum, rec.size))
        if rec.type in repodata.CARRIED_TYPES:
            named = vdir / "extras" / rec.type / rec.plain_name
            named.parent.mkdir(parents=True)
            local.rename(named)
            extras.append((rec.type, named))
        else:
            meta[rec.type] = local
    facts = repodata.scan_primary(meta["primary"], f"{url}/{records[0].href}")
    selection = choose(VariantSource(variant, url, tuple(facts)), keep_versions, hashed)
    if selection.problem is not None:
        raise UpstreamError(selection.problem)
    log.info("%s: %d packages upstream, %d chosen", url, len(facts), len(selection.chosen))
    return FetchedVariant(selection, hashlib.sha256(raw).hexdigest(), meta, tuple(extras))
