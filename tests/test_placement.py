"""A compose's placement plan is pure: golden cases (tests/golden/placement/*.yaml) and
properties. Each case gives upstream packages per variant (and the previous compose);
it expects the plan's steps in order (refusals, drops, links, downloads largest first),
each with its reason, and the problem that stops the compose, if any."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.layout import Variant
from reconciler.placement import Previous, PreviousPackage, VariantSource, choose, plan
from reconciler.selection import PackageFact
from reconciler.vocabulary import PlacementKind, VariantKind

from .placement_support import PREVIOUS_ROOT, make_plan, package, previous, variant

GOLDEN = sorted((Path(__file__).parent / "golden" / "placement").glob("*.yaml"))


@pytest.mark.parametrize("case_file", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden(case_file: Path) -> None:
    case: dict[str, Any] = yaml.safe_load(case_file.read_text())
    result = make_plan(case)
    expect = case["expect"]
    assert result.describe() == expect["steps"], case["description"]
    assert all(s.reason for s in result.steps), "every step has a reason"
    fragments = expect.get("problem")
    if fragments is None:
        assert result.problem is None, result.problem
    else:
        assert result.problem is not None
        for fragment in fragments:
            assert fragment in result.problem, (fragment, result.problem)
    linked = {s.fact.filename: s.source.mtime_ns for s in result.links if s.source}
    for name, mtime in expect.get("mtimes", {}).items():
        assert linked[name] == mtime, (name, linked)


def test_there_are_golden_cases_for_each_kind_of_step() -> None:
    assert len(GOLDEN) >= 10
    kinds = set()
    for case_file in GOLDEN:
        kinds |= {s.kind for s in make_plan(yaml.safe_load(case_file.read_text())).steps}
    assert kinds == set(PlacementKind)


def test_the_previous_index_takes_the_first_variant_and_the_manifest_mtime() -> None:
    prev = previous(
        {
            "id": "SIG-core-9-20261101.0",
            "packages": {
                "core-common/x86_64": [
                    {"nevra": "sig-data-1.0-1.noarch", "id": "d", "size": 7, "mtime": 11},
                    {"nevra": "sig-hello-1.0-1.x86_64", "id": "h", "size": 9},
                ],
                "core-common/aarch64": [
                    {"nevra": "sig-data-1.0-1.noarch", "id": "d", "size": 7, "mtime": 22}
                ],
            },
        }
    )
    assert prev is not None
    data = prev.packages["d"]
    assert (str(data.rel), data.mtime_ns) == (
        "x86_64/core-common/Packages/sig-data-1.0-1.noarch.rpm",
        11,
    )
    assert prev.packages["h"].mtime_ns is None  # not in the manifest: stat it when linked
    assert PREVIOUS_ROOT.is_absolute()


def test_a_link_source_is_the_previous_variant_and_href_not_the_new_one() -> None:
    old = Variant("core-common", "x86_64", VariantKind.BINARY)
    fact = package({"nevra": "sig-data-1.0-1.noarch", "id": "d", "size": 7})
    prev = Previous(
        "SIG-core-9-20261101.0", {"d": PreviousPackage("d", 7, old, "Packages/x.rpm", 5)}
    )
    new = Variant("core-infra", "x86_64", VariantKind.BINARY)
    result = plan([choose(VariantSource(new, "u", (fact,)), 1, True)], prev)
    (step,) = result.links
    assert step.source is not None and str(step.source.rel) == "x86_64/core-common/Packages/x.rpm"
    assert [str(t.rel) for t in step.targets] == [
        "x86_64/core-infra/Packages/s/sig-data-1.0-1.noarch.rpm"
    ]
    assert step.url == "u/Packages/sig-data-1.0-1.noarch.rpm"


def test_the_selection_gives_the_hrefs_the_composed_metadata_says() -> None:
    x86 = variant("core-common/x86_64")
    facts = (
        package({"nevra": "Sig-hello-1.0-1.x86_64", "id": "h", "href": "a/b/Sig-hello.rpm"}),
        package({"nevra": "sig-tools-1.0-1.x86_64", "id": "t"}),
    )
    selection = choose(VariantSource(x86, "u", facts), 1, hashed=True)
    assert selection.hrefs == {
        "h": "Packages/s/Sig-hello.rpm",
        "t": "Packages/s/sig-tools-1.0-1.x86_64.rpm",
    }
    assert [f.href for f in selection.composed] == list(selection.hrefs.values())
    assert selection.problem is None


# --- properties -----------------------------------------------------------------

VARIANTS = [variant(k) for k in ("core-common/x86_64", "core-common/aarch64", "core-common/src")]
fact_st = st.builds(
    lambda name, ver, rel, arch, size, n: PackageFact(
        pkgid=f"{name}-{ver}-{rel}-{arch}-{n}",
        checksum_type="sha256",
        name=name,
        epoch="0",
        version=ver,
        release=rel,
        arch=arch,
        size=size,
        href=f"Packages/{name}-{ver}-{rel}.{arch}.rpm",
    ),
    st.sampled_from(["sig-hello", "sig-tools", "sig-data"]),
    st.sampled_from(["1.0", "1.1", "1.10", "2.0~rc1"]),
    st.sampled_from(["1", "2"]),
    st.sampled_from(["x86_64", "noarch"]),
    st.integers(1, 5000),
    st.integers(0, 1),
)
world_st = st.fixed_dictionaries(
    {
        "upstream": st.lists(st.lists(fact_st, max_size=8), min_size=3, max_size=3),
        "previous": st.lists(fact_st, max_size=6),
        "keep": st.integers(0, 3),
        "hashed": st.booleans(),
    }
)


def _plan_of(world: dict[str, Any]) -> Any:
    sources = [
        VariantSource(v, f"u/{v}", tuple(f))
        for v, f in zip(VARIANTS, world["upstream"], strict=True)
    ]
    selections = [choose(s, world["keep"], world["hashed"]) for s in sources]
    prev_packages = {
        f.pkgid: PreviousPackage(f.pkgid, f.size, VARIANTS[0], f.href, None)
        for f in world["previous"]
    }
    return selections, plan(selections, Previous("SIG-core-9-20261101.0", prev_packages))


@settings(max_examples=300, deadline=None)
@given(world=world_st)
def test_every_upstream_package_is_placed_dropped_or_refused(world: dict[str, Any]) -> None:
    selections, result = _plan_of(world)
    assert _plan_of(world)[1] == result, "the same inputs give the same plan"
    placed = {s.fact.pkgid for s in result.placements}
    assert len(placed) == len(result.placements), "each package is placed once"
    for selection, facts in zip(selections, world["upstream"], strict=True):
        taken = {f.pkgid for f in selection.chosen}
        others = {s.fact.pkgid for s in (*selection.dropped, *selection.refused)}
        assert taken | others == {f.pkgid for f in facts}
        assert taken <= placed and not taken & others
        if world["keep"]:
            per_name = {}
            for f in selection.chosen:
                per_name[(f.name, f.arch)] = per_name.get((f.name, f.arch), 0) + 1
            assert all(n <= world["keep"] for n in per_name.values())


@settings(max_examples=300, deadline=None)
@given(world=world_st)
def test_links_need_the_same_checksum_and_size_and_downloads_go_largest_first(
    world: dict[str, Any],
) -> None:
    _selections, result = _plan_of(world)
    previous_sizes = {f.pkgid: f.size for f in world["previous"]}
    for step in result.links:
        assert previous_sizes[step.fact.pkgid] == step.fact.size
    for step in result.downloads:
        assert previous_sizes.get(step.fact.pkgid) != step.fact.size
    sizes = [s.fact.size for s in result.downloads]
    assert sizes == sorted(sizes, reverse=True)
    targets = [t for s in result.placements for t in s.targets]
    assert len(targets) == len(set(targets)), "no two packages share a place"
