"""Where things are in the compose tree (DESIGN.md section 5). Pure: no I/O.

<root>/<release>/SIG-<sig>-<release>-<YYYYMMDD>.<respin>/
  COMPOSE_ID, STATUS, logs/
  compose/metadata/{composeinfo,rpms,reconciler}.json
  compose/<release>/<sig>/<arch>/<repo>[-debug]/   compose/<release>/<sig>/source/<repo>/
  compose/<release>/<sig>/metadata/<GPG keys>
<root>/<release>/latest-SIG-<sig>-<release> -> the newest FINISHED compose
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath

from .names import compose_id, latest_link_name
from .spec import ReleaseSpec


class VariantKind(StrEnum):
    BINARY = "binary"
    DEBUG = "debug"
    SOURCE = "source"


@dataclass(frozen=True, slots=True, order=True)
class Variant:
    """One repository of a compose: a repo for an arch, its -debug twin, or its sources."""

    repo: str
    arch: str  # the binary arch; "src" for the source variant
    kind: VariantKind

    @property
    def upstream_arch(self) -> str:
        """The ``{arch}`` of the build system's URL template."""
        if self.kind is VariantKind.DEBUG:
            return f"{self.arch}-debug"
        return "src" if self.kind is VariantKind.SOURCE else self.arch

    @property
    def rel_dir(self) -> PurePosixPath:
        """Path under ``compose/<release>/<sig>/`` (and under a published SIG tree)."""
        if self.kind is VariantKind.SOURCE:
            return PurePosixPath("source", self.repo)
        suffix = "-debug" if self.kind is VariantKind.DEBUG else ""
        return PurePosixPath(self.arch, f"{self.repo}{suffix}")

    def __str__(self) -> str:
        return f"{self.repo}/{self.upstream_arch}"


def variants_of(
    release: ReleaseSpec,
    repos: frozenset[str] | None = None,
    arches: frozenset[str] | None = None,
) -> list[Variant]:
    """Every variant a release composes, optionally only some repos and arches."""
    out: list[Variant] = []
    for repo, repo_spec in sorted(release.repos.items()):
        if repos is not None and repo not in repos:
            continue
        repo_arches = [a for a in repo_spec.arches if arches is None or a in arches]
        for arch in repo_arches:
            out.append(Variant(repo, arch, VariantKind.BINARY))
            if release.compose.debug:
                out.append(Variant(repo, arch, VariantKind.DEBUG))
        if release.compose.source and repo_arches:
            out.append(Variant(repo, "src", VariantKind.SOURCE))
    return out


def productmd_variant_id(repo: str) -> str:
    """productmd variant IDs are alphanumeric: ``core-common`` -> ``CoreCommon``."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[-._]", repo) if part)


@dataclass(frozen=True, slots=True)
class ComposeTree:
    """Paths of one SIG release under the compose root."""

    root: Path
    sig: str
    release: str

    @property
    def release_dir(self) -> Path:
        return self.root / self.release

    @property
    def latest_link(self) -> Path:
        return self.release_dir / latest_link_name(self.sig, self.release)

    @property
    def lock_file(self) -> Path:
        return self.release_dir / f".{latest_link_name(self.sig, self.release)}.lock"

    def compose_id(self, date: str, respin: int) -> str:
        return compose_id(self.sig, self.release, date, respin)

    def compose_dir(self, cid: str) -> Path:
        return self.release_dir / cid

    def sig_dir(self, cid: str) -> Path:
        """``compose/<release>/<sig>``: what staging and production mirror."""
        return self.compose_dir(cid) / "compose" / self.release / self.sig

    def variant_dir(self, cid: str, variant: Variant) -> Path:
        return self.sig_dir(cid).joinpath(*variant.rel_dir.parts)

    def metadata_dir(self, cid: str) -> Path:
        return self.compose_dir(cid) / "compose" / "metadata"

    def manifest(self, cid: str) -> Path:
        """Every file of the compose's SIG directory with its size and mtime (for publishing)."""
        return self.metadata_dir(cid) / "reconciler-files.tsv"

    def changes(self, cid: str) -> Path:
        """What the compose changed relative to the compose it was made on top of."""
        return self.metadata_dir(cid) / "reconciler-changes.tsv"

    def variant_path_in_compose(self, variant: Variant) -> PurePosixPath:
        """A variant's path relative to ``compose/`` (productmd's paths are relative to it)."""
        return PurePosixPath(self.release, self.sig, variant.rel_dir)
