"""Where every tree, list and state file lives, from validated names. Pure: no I/O.

No other module builds these paths from strings. The compose tree:

<root>/<release>/SIG-<sig>-<release>-<YYYYMMDD>.<respin>/
  COMPOSE_ID, STATUS, logs/
  compose/metadata/{composeinfo,rpms,reconciler}.json
  compose/<release>/<sig>/<arch>/<repo>[-debug]/   compose/<release>/<sig>/source/<repo>/
  compose/<release>/<sig>/metadata/<GPG keys>
<root>/<release>/latest-SIG-<sig>-<release> -> the newest FINISHED compose

A published target (staging or production), :class:`PublishedTree`:
<root>/<category>/<release>/<sig>/     the compose's ``compose/<release>/<sig>/``
<root>/<category>/fullfilelist ...     the mirrors' file lists (production)

The state directory, :class:`StateLayout`:
<state_dir>/state.db  checkout/  candidate/  git/  apply.lock  trigger
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import ClassVar

from .names import compose_id, latest_link_name
from .vocabulary import Stage, VariantKind


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

    #: the manifests of every compose under a compose root, relative to it
    MANIFEST_GLOB: ClassVar[str] = "*/SIG-*/compose/metadata/reconciler-files.tsv"

    def manifest(self, cid: str) -> Path:
        """Every file of the compose's SIG directory with its size and mtime (for publishing)."""
        return self.metadata_dir(cid) / "reconciler-files.tsv"

    def changes(self, cid: str) -> Path:
        """What the compose changed relative to the compose it was made on top of."""
        return self.metadata_dir(cid) / "reconciler-changes.tsv"

    def variant_path_in_compose(self, variant: Variant) -> PurePosixPath:
        """A variant's path relative to ``compose/`` (productmd's paths are relative to it)."""
        return PurePosixPath(self.release, self.sig, variant.rel_dir)


@dataclass(frozen=True, slots=True)
class PublishedTree:
    """Where one SIG release is published at one stage: ``<root>/<category>/<release>/<sig>/``.

    Inventory paths are relative to ``root`` and start with :attr:`prefix`.
    """

    stage: Stage
    root: Path
    category: str
    sig: str
    release: str

    @property
    def prefix(self) -> PurePosixPath:
        return PurePosixPath(self.category, self.release, self.sig)

    @property
    def inventory_prefix(self) -> str:
        """The string every inventory path of this target starts with."""
        return f"{self.prefix}/"

    @property
    def path(self) -> Path:
        return self.root.joinpath(*self.prefix.parts)

    @property
    def category_dir(self) -> Path:
        """``<root>/<category>``: where production's file lists live."""
        return self.root.joinpath(*PurePosixPath(self.category).parts)

    def relpath(self, inside: PurePosixPath) -> str:
        """The inventory path (relative to ``root``) of a path inside the SIG's tree."""
        return str(self.prefix.joinpath(inside))

    def repomd(self, variant: Variant) -> str:
        """The inventory path of a variant's ``repodata/repomd.xml``."""
        return self.relpath(variant.rel_dir / "repodata" / "repomd.xml")


@dataclass(frozen=True, slots=True)
class StateLayout:
    """What the reconciler keeps in its state directory."""

    root: Path

    @property
    def database(self) -> Path:
        return self.root / "state.db"

    def set_aside(self, stamp: str) -> Path:
        """Where ``state rebuild`` keeps a PostgreSQL state it replaces (an export)."""
        return self.root / f"state.before-rebuild-{stamp}.jsonl"

    @property
    def checkout(self) -> Path:
        """The desired state at the last good revision (what passes work from)."""
        return self.root / "checkout"

    @property
    def candidate(self) -> Path:
        """Where a newly fetched revision is exported to be validated."""
        return self.root / "candidate"

    def revision(self, sha: str) -> Path:
        """The desired state at revision ``sha`` (a full commit id), for compose jobs of it."""
        return self.root / "revisions" / sha

    @property
    def git(self) -> Path:
        """The local clone of the desired-state repository."""
        return self.root / "git"

    @property
    def apply_lock(self) -> Path:
        return self.root / "apply.lock"

    @property
    def trigger(self) -> Path:
        """Touched (by the post-receive hook, or POST /trigger) to wake ``run``."""
        return self.root / "trigger"
