"""Build the inputs of a compose's placement plan from plain data (the golden cases).

A package is written ``{nevra: name-[epoch:]version-release.arch, id: <pkgid>, size: N}``,
with an optional ``href`` (default ``Packages/<name>-<version>-<release>.<arch>.rpm``).
A variant is written as the build system names it: ``repo/arch``, ``repo/arch-debug``
or ``repo/src``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reconciler.composefiles import SourceFile
from reconciler.layout import Variant
from reconciler.placement import (
    PlacementPlan,
    Previous,
    VariantSource,
    choose,
    plan,
    previous_index,
)
from reconciler.selection import PackageFact
from reconciler.vocabulary import VariantKind

UPSTREAM = "https://build.invalid/v1/projects/p/repo"
#: The previous compose's SIG directory (the root of its manifest's paths; never read).
PREVIOUS_ROOT = Path("/compose/9/SIG-core-9-20261101.0/compose/9/core")


def variant(key: str) -> Variant:
    repo, arch = key.split("/")
    if arch == "src":
        return Variant(repo, "src", VariantKind.SOURCE)
    if arch.endswith("-debug"):
        return Variant(repo, arch.removesuffix("-debug"), VariantKind.DEBUG)
    return Variant(repo, arch, VariantKind.BINARY)


def package(raw: dict[str, Any]) -> PackageFact:
    rest, arch = raw["nevra"].rsplit(".", 1)
    name, version, release = rest.rsplit("-", 2)
    epoch, _, version = version.rpartition(":")
    href = raw.get("href", f"Packages/{name}-{version}-{release}.{arch}.rpm")
    return PackageFact(
        pkgid=str(raw["id"]),
        checksum_type="sha256",
        name=name,
        epoch=epoch or "0",
        version=version,
        release=release,
        arch=arch,
        size=int(raw.get("size", 1000)),
        href=href,
    )


def sources(raw: dict[str, list[dict[str, Any]]]) -> list[VariantSource]:
    return [
        VariantSource(variant(key), f"{UPSTREAM}/{key}", tuple(package(p) for p in packages))
        for key, packages in raw.items()
    ]


def previous(raw: dict[str, Any] | None) -> Previous | None:
    """``{id: <compose ID>, packages: {variant: [package...]}}``; a package may give the
    ``mtime`` its previous compose's manifest lists."""
    if raw is None:
        return None
    repos = [
        (variant(key), [package(p) for p in packages])
        for key, packages in raw.get("packages", {}).items()
    ]
    manifest = [
        SourceFile(str(v.rel_dir / fact.href), PREVIOUS_ROOT, fact.size, int(p["mtime"]))
        for (v, facts), packages in zip(repos, raw.get("packages", {}).values(), strict=True)
        for fact, p in zip(facts, packages, strict=True)
        if "mtime" in p
    ]
    return previous_index(raw["id"], repos, manifest if raw.get("manifest", True) else None)


def make_plan(case: dict[str, Any]) -> PlacementPlan:
    keep = int(case.get("keep_versions", 1))
    hashed = bool(case.get("hashed", True))
    selections = [choose(s, keep, hashed) for s in sources(case["variants"])]
    return plan(selections, previous(case.get("previous")))
