"""``publish.unmanaged`` patterns (reconciler.pathglob): a golden table, and properties."""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.pathglob import PathPatterns

CASES = [
    # pattern, path inside the SIG directory, matches
    ("images", "images", True),
    ("images", "images/rpi/Rocky-9-RPi.raw.xz", True),
    ("images", "imagesx", False),
    ("images", "aarch64/images", False),
    ("*/README*", "x86_64/README.md", True),
    ("*/README*", "README", False),
    ("*/README*", "a/b/README", False),
    ("**/*.iso", "a/b/c.iso", True),
    ("**/*.iso", "c.iso", True),
    ("**/*.iso", "c.iso.x", False),
    ("images/**", "images/a/b", True),
    ("images/**", "images", False),
    ("x?", "xy", True),
    ("x?", "x/y", False),
    ("[ab]*", "apple", True),
    ("[!ab]*", "apple", False),
    ("[!ab]*", "cherry", True),
    ("a/**/z", "a/z", True),
    ("a/**/z", "a/b/c/z", True),
    ("a/**/z", "a/b/c/zz", False),
    ("a.b", "aXb", False),  # a dot is a dot
    ("**", "anything/at/all", True),
]


@pytest.mark.parametrize(("pattern", "path", "expected"), CASES)
def test_golden(pattern: str, path: str, expected: bool) -> None:
    assert PathPatterns.of([pattern]).matches(path) is expected


def test_no_patterns_match_nothing() -> None:
    assert not PathPatterns.of([]).matches("images")


part = st.text(alphabet="abc.-_", min_size=1, max_size=4)


@given(st.lists(part, min_size=1, max_size=4), st.lists(part, max_size=3))
def test_a_literal_pattern_covers_exactly_its_path_and_what_is_below(
    pattern: list[str], below: list[str]
) -> None:
    p = PathPatterns.of(["/".join(pattern)])
    assert p.matches("/".join(pattern + below))
    assert not p.matches("/".join(pattern)[:-1] + "#")


@given(part, part)
def test_one_part_wildcards_agree_with_fnmatch(pattern: str, name: str) -> None:
    pat = pattern.replace("a", "*").replace("b", "?")
    assert PathPatterns.of([pat]).matches(name) == fnmatch.fnmatchcase(name, pat)
