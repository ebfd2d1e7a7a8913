"""What a publish ships (``packagediff``, pure): golden cases (tests/golden/packagediff/*.yaml:
two package sets with their advisories, and the rendering expected) and properties."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from reconciler.packagediff import (
    FOLD,
    Advisory,
    Nevra,
    PackageDiff,
    RepoContents,
    package_diff,
)
from reconciler.vocabulary import PackageChangeKind, Stage

GOLDEN = sorted((Path(__file__).parent / "golden" / "packagediff").glob("*.yaml"))
HELD = "SIG-core-9-20261101.0"


def _contents(raw: dict[str, Any]) -> dict[str, RepoContents]:
    return {
        repo: RepoContents(
            frozenset(Nevra.parse(p) for p in body.get("packages", ())),
            frozenset(Advisory(**a) for a in body.get("advisories", ())),
        )
        for repo, body in raw.items()
    }


def _diff(case: dict[str, Any]) -> PackageDiff:
    repos = package_diff(_contents(case["old"]), _contents(case["new"]))
    held = case.get("held", HELD)
    return PackageDiff("core", "9", Stage.PRODUCTION, "SIG-core-9-20261102.0", held, repos)


def render(diff: PackageDiff, limit: int = FOLD) -> str:
    return "".join(f"{'  ' * depth}{line}\n" for depth, line in diff.lines(limit))


@pytest.mark.parametrize("case_file", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden(case_file: Path) -> None:
    case: dict[str, Any] = yaml.safe_load(case_file.read_text())
    diff = _diff(case)
    assert render(diff, case.get("limit", FOLD)) == case["expect"], case["description"]
    # a plan saved as JSON (``plan --out``) carries the diff whole
    raw = json.loads(json.dumps(asdict(diff)))
    assert PackageDiff.from_dict(raw) == diff


def test_the_golden_cases_cover_every_kind_of_change() -> None:
    kinds = {
        c.kind
        for case_file in GOLDEN
        for r in _diff(yaml.safe_load(case_file.read_text())).repos
        for c in r.changes
    }
    assert kinds == set(PackageChangeKind)


@pytest.mark.parametrize(
    ("text", "parsed", "evr"),
    [
        ("sig-hello-0:1.0-1.x86_64", Nevra("sig-hello", "0", "1.0", "1", "x86_64"), "1.0-1"),
        (
            "sig-hello-1.0-1.el9.noarch",
            Nevra("sig-hello", "0", "1.0", "1.el9", "noarch"),
            "1.0-1.el9",
        ),
        ("perl-Foo-Bar-2:0.1-3.src", Nevra("perl-Foo-Bar", "2", "0.1", "3", "src"), "2:0.1-3"),
    ],
)
def test_nevra_parse(text: str, parsed: Nevra, evr: str) -> None:
    assert Nevra.parse(text) == parsed and parsed.evr == evr


@pytest.mark.parametrize("text", ["sig-hello", "hello-1.0.x86_64", "a-x:1-1.x86_64", "-1-1."])
def test_nevra_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a"):
        Nevra.parse(text)


def test_several_versions_of_one_name_arch() -> None:
    """keep_versions 2: 1.0 and 2.0 held, 2.0 and 3.0 to be: the one that goes (1.0)
    against the one that comes (3.0); 2.0 stays and is not mentioned."""
    old = {"r": RepoContents(frozenset(Nevra.parse(f"a-0:{v}-1.x86_64") for v in ("1.0", "2.0")))}
    new = {"r": RepoContents(frozenset(Nevra.parse(f"a-0:{v}-1.x86_64") for v in ("2.0", "3.0")))}
    (repo,) = package_diff(old, new)
    assert [c.describe() for c in repo.changes] == ["upgraded a 1.0-1 -> 3.0-1 (x86_64)"]


# --- properties -----------------------------------------------------------------

nevras = st.builds(
    Nevra,
    name=st.sampled_from(["a", "b", "c"]),
    epoch=st.sampled_from(["0", "1"]),
    version=st.sampled_from(["1.0", "1.10", "1.9", "2.0~rc1"]),
    release=st.sampled_from(["1", "2"]),
    arch=st.sampled_from(["x86_64", "aarch64", "noarch", "src"]),
)
contents = st.dictionaries(
    st.sampled_from(["core-common", "core-infra"]),
    st.builds(RepoContents, st.frozensets(nevras, max_size=8), st.just(frozenset())),
    max_size=2,
)
SWAPPED = {
    PackageChangeKind.ADDED: PackageChangeKind.REMOVED,
    PackageChangeKind.REMOVED: PackageChangeKind.ADDED,
    PackageChangeKind.UPGRADED: PackageChangeKind.DOWNGRADED,
    PackageChangeKind.DOWNGRADED: PackageChangeKind.UPGRADED,
}


@given(contents)
def test_a_compose_against_itself_ships_nothing(same: dict[str, RepoContents]) -> None:
    assert package_diff(same, same) == ()


@given(contents, contents)
def test_going_back_is_the_mirror_image(
    old: dict[str, RepoContents], new: dict[str, RepoContents]
) -> None:
    forth = {
        (r.repo, c.kind, c.name, c.old, c.new) for r in package_diff(old, new) for c in r.changes
    }
    back = {
        (r.repo, SWAPPED[c.kind], c.name, c.new, c.old)
        for r in package_diff(new, old)
        for c in r.changes
    }
    assert forth == back


@given(contents, contents)
def test_every_changed_name_is_listed(
    old: dict[str, RepoContents], new: dict[str, RepoContents]
) -> None:
    empty = RepoContents()
    for repo in {*old, *new}:
        a, b = old.get(repo, empty).packages, new.get(repo, empty).packages
        listed = {c.name for r in package_diff(old, new) if r.repo == repo for c in r.changes}
        assert listed == {p.name for p in a ^ b}
