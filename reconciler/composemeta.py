"""Compose metadata on disk: ``COMPOSE_ID``, ``STATUS``, productmd's
``composeinfo.json`` and ``rpms.json``, and the reconciler's own record.

Also reads them back, as facts, for the next compose and for observing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .fsutil import READ_ONLY, atomic_write, read_only
from .layout import ComposeTree, Variant, productmd_variant_id
from .names import COMPOSE_ID_RE
from .selection import PackageFact
from .vocabulary import ComposeStatus, VariantKind

RECORD_NAME = "reconciler.json"


@dataclass(frozen=True)
class ComposeRecord:
    """What the reconciler remembers of a compose (``compose/metadata/reconciler.json``)."""

    compose_id: str
    sig: str
    release: str
    started: str
    finished: str
    upstream: Mapping[str, str]  # variant -> sha256 of its upstream repomd.xml
    upstream_revision: str  # digest over all of them
    refresh: int = 0
    signature_keys: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    stats: Mapping[str, int] = field(default_factory=dict)
    git_revision: str | None = None  # the desired-state commit that asked for it

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ComposeRecord:
        raw = json.loads(text)
        raw["signature_keys"] = tuple(raw.get("signature_keys", ()))
        raw["variants"] = tuple(raw.get("variants", ()))
        raw["missing"] = tuple(raw.get("missing", ()))
        return cls(**raw)


@dataclass(frozen=True, order=True)
class ComposeOnDisk:
    """A compose directory as found on disk (a fact)."""

    date: str
    respin: int
    compose_id: str
    status: ComposeStatus | None
    path: Path


def write_status(compose_dir: Path, status: ComposeStatus) -> None:
    atomic_write(compose_dir / "STATUS", f"{status.value}\n", READ_ONLY)


def read_status(compose_dir: Path) -> ComposeStatus | None:
    try:
        return ComposeStatus(compose_dir.joinpath("STATUS").read_text().strip())
    except (OSError, ValueError):
        return None


def list_composes(tree: ComposeTree) -> list[ComposeOnDisk]:
    """Compose directories of one SIG release, oldest first."""
    found: list[ComposeOnDisk] = []
    try:
        entries = list(tree.release_dir.iterdir())
    except FileNotFoundError:
        return []
    for entry in entries:
        m = COMPOSE_ID_RE.fullmatch(entry.name)
        if not m or m["sig"] != tree.sig or m["release"] != tree.release or entry.is_symlink():
            continue
        if entry.is_dir():
            found.append(
                ComposeOnDisk(m["date"], int(m["respin"]), entry.name, read_status(entry), entry)
            )
    return sorted(found)


def read_record(tree: ComposeTree, cid: str) -> ComposeRecord | None:
    path = tree.metadata_dir(cid) / RECORD_NAME
    try:
        return ComposeRecord.from_json(path.read_text())
    except (OSError, ValueError, TypeError):
        return None


def upstream_revision(digests: Mapping[str, str]) -> str:
    """One digest over every variant's ``repomd.xml`` digest (what a compose was made from)."""
    h = hashlib.sha256()
    for key in sorted(digests):
        h.update(f"{key}\t{digests[key]}\n".encode())
    return h.hexdigest()


def _srpm_nevra(sourcerpm: str) -> str | None:
    import productmd.common  # imported here: productmd is slow to import and rarely needed

    if not sourcerpm:
        return None
    nvra = productmd.common.parse_nvra(sourcerpm)
    return f"{nvra['name']}-{nvra['epoch'] or 0}:{nvra['version']}-{nvra['release']}.{nvra['arch']}"


def write_productmd(
    tree: ComposeTree,
    cid: str,
    *,
    date: str,
    respin: int,
    contents: Mapping[Variant, Iterable[PackageFact]],
    repo_arches: Mapping[str, tuple[str, ...]],
) -> None:
    """Write ``composeinfo.json`` and ``rpms.json`` so that productmd loads the compose."""
    import productmd.composeinfo
    import productmd.rpms

    meta_dir = tree.metadata_dir(cid)
    meta_dir.mkdir(parents=True, exist_ok=True)

    ci = productmd.composeinfo.ComposeInfo()
    ci.release.name = f"SIG {tree.sig}"
    ci.release.short = f"SIG-{tree.sig}"
    ci.release.version = tree.release
    ci.release.type = "ga"
    ci.compose.date = date
    ci.compose.respin = respin
    ci.compose.type = "production"
    ci.compose.id = cid

    rpms = productmd.rpms.Rpms()
    rpms.compose.id, rpms.compose.date = cid, date
    rpms.compose.respin, rpms.compose.type = respin, "production"

    present = {v.repo for v in contents}
    for repo, arches in sorted(repo_arches.items()):
        if repo not in present:
            continue
        variant = productmd.composeinfo.Variant(ci)
        variant.id = variant.uid = productmd_variant_id(repo)
        variant.name, variant.type = repo, "variant"
        variant.arches = set(arches)
        ci.variants.add(variant)
    for v, facts in sorted(contents.items()):
        pm_variant = ci.variants[productmd_variant_id(v.repo)]
        rel = str(tree.variant_path_in_compose(v))
        arches = repo_arches[v.repo] if v.kind is VariantKind.SOURCE else (v.arch,)
        for arch in arches:
            paths = pm_variant.paths
            if v.kind is VariantKind.BINARY:
                paths.repository[arch] = rel
                paths.packages[arch] = f"{rel}/Packages"
            elif v.kind is VariantKind.DEBUG:
                paths.debug_repository[arch] = rel
                paths.debug_packages[arch] = f"{rel}/Packages"
            else:
                paths.source_repository[arch] = rel
                paths.source_packages[arch] = f"{rel}/Packages"
        for fact in facts:
            for arch in arches:
                rpms.add(
                    pm_variant.uid,
                    arch,
                    fact.nevra,
                    f"{rel}/{fact.href}",
                    None,
                    v.kind.value,
                    None if v.kind is VariantKind.SOURCE else _srpm_nevra(fact.sourcerpm),
                )
    ci.dump(str(meta_dir / "composeinfo.json"))
    rpms.dump(str(meta_dir / "rpms.json"))
    for name in ("composeinfo.json", "rpms.json"):
        read_only(meta_dir / name)
