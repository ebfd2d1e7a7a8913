"""reconciler.selection: the rpmvercmp port, compare_evr and the keep_versions selection.

One table of version comparisons is checked twice: against rpm itself (the real ``rpm``
binary, through its Lua interpreter) and against our port. So a wrong expectation in the
table fails the rpm test, and a wrong port fails the port test.

About the rpm oracle: since rpm 4.17 ``rpm.vercmp(a, b)`` parses each argument as
``[epoch:]version[-release]`` (so ``"1:2"`` has an epoch, ``"a-1"`` a release, and ``""`` is
refused) before comparing. To reach the plain segment comparison for any string, the oracle
puts the string in the release slot of ``rpm.ver("0", "0", s)``: epochs and versions tie,
so rpm's ``rpmverCmp`` comes down to ``rpmvercmp`` on the two strings, untouched. On an
older rpm without ``rpm.ver``, ``rpm.vercmp`` is that plain comparison already. A second
test checks ``rpm.vercmp`` itself on the table's strings that no EVR parsing can split.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from functools import cmp_to_key

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from reconciler.selection import PackageFact, compare_evr, rpmvercmp, select

# --- the table ---------------------------------------------------------------------
# (a, b, rpmvercmp(a, b)); the reverse pair is checked too, expecting the negation.
VERCMP_CASES: list[tuple[str, str, int]] = [
    # equal strings
    ("1.0", "1.0", 0),
    ("", "", 0),
    ("a", "a", 0),
    ("1.0.0", "1.0.0", 0),
    ("20101121", "20101121", 0),
    # numeric segments compare as numbers, not text
    ("1.0", "2.0", -1),
    ("2.0", "2.0.1", -1),
    ("2.0", "10", -1),
    ("1.9", "1.10", -1),
    ("4.999.9", "5.0", -1),
    ("20101121", "20101122", -1),
    ("5.5p10", "5.5p1", 1),
    ("5.5p2", "5.6p1", -1),
    # numeric vs alpha: a number is always newer than letters
    ("a", "1", -1),
    ("1.a", "1.1", -1),
    ("1a", "1.1", -1),
    ("xyz.4", "8", -1),
    ("10xyz", "10.1xyz", -1),
    ("xyz10", "xyz10.1", -1),
    ("6.0.rc1", "6.0", 1),
    # alpha segments compare as C strings (ASCII: upper case before lower case)
    ("a", "b", -1),
    ("10b2", "10a1", 1),
    ("1.0a", "1.0aa", -1),
    ("1.0a", "1.0b", -1),
    ("1.0B", "1.0a", -1),
    ("1.0Z", "1.0a", -1),
    # trailing alpha: more segments win
    ("1.0a", "1.0", 1),
    ("2.0.1a", "2.0.1", 1),
    ("1.0rc", "1.0", 1),
    ("1.0.a", "1.0", 1),
    ("1.0", "1.0.0", -1),
    # separators: any run of non-alphanumerics splits, and which one does not matter
    ("1e", "1.e", 0),
    ("2.0", "2_0", 0),
    ("1-2", "1.2", 0),
    ("1+2", "1_2", 0),
    ("1:2", "1.2", 0),
    ("a+", "a_", 0),
    ("+a", "_a", 0),
    ("+_", "_+", 0),
    ("1.-_+2", "1.2", 0),
    # empty segments and leftover separators
    ("1..2", "1.2", 0),
    ("1.", "1", 0),
    ("1...", "1", 0),
    (".1", "1", 0),
    ("", "1", -1),
    ("", "a", -1),
    ("0", "", 1),
    # leading zeros
    ("01", "1", 0),
    ("001", "01", 0),
    ("0", "00", 0),
    ("1.01", "1.1", 0),
    ("10.0001", "10.1", 0),
    ("10.0001", "10.0039", -1),
    ("1.010", "1.1", 1),
    ("1.0010", "1.9", 1),
    # numbers beyond 64 bits
    ("18446744073709551616", "18446744073709551615", 1),
    ("123456789012345678901234567890", "123456789012345678901234567891", -1),
    ("99999999999999999999", "100000000000000000000", -1),
    ("0000000000000000000000000000000001", "1", 0),
    ("1.18446744073709551617a", "1.18446744073709551617b", -1),
    # ~ sorts before anything, even the end of the string (pre-releases)
    ("1.0~rc1", "1.0", -1),
    ("1.0~rc1", "1.0~rc2", -1),
    ("1.0~rc2", "1.0~rc10", -1),
    ("1.0~rc1~git123", "1.0~rc1", -1),
    ("1.0~", "1.0", -1),
    ("", "~", 1),
    ("~", "~~", 1),
    ("1~", "1^", -1),
    ("1.0~rc1", "1.0~rc1", 0),
    # ^ sorts after the end of the string but before any further segment (snapshots)
    ("1.0^", "1.0", 1),
    ("1.0^git1", "1.0", 1),
    ("1.0^git1", "1.0^git2", -1),
    ("1.0^git1", "1.01", -1),
    ("1.0^20160101", "1.0.1", -1),
    ("1.0^20160101^git1", "1.0^20160101", 1),
    ("1.0~rc1^git1", "1.0~rc1", 1),
    ("1.0^git1~pre", "1.0^git1", -1),
    ("1.0^git1", "1.0~rc1", 1),
    ("", "^", -1),
    ("1.0^", "1.0^", 0),
    # non-ASCII: every byte of it is a separator (rpm's ctype is ASCII-only)
    ("1.0é", "1.0", 0),
    ("1é2", "1.2", 0),
    ("1é2", "1.3", -1),
    ("ü", "", 0),
    ("éa", "a", 0),
    ("ab", "aé", 1),
    ("1٣", "1", 0),  # ARABIC-INDIC DIGIT THREE is no digit here
    ("1²", "1.2", -1),  # nor is SUPERSCRIPT TWO
    ("Ⅳ", "a", -1),  # nor is ROMAN NUMERAL FOUR a letter
    ("1.0ß", "1.0ss", -1),
]
CASE_IDS = [f"{a!r} vs {b!r}" for a, b, _ in VERCMP_CASES]


def test_the_table_is_large_and_free_of_repeats() -> None:
    assert len(VERCMP_CASES) >= 60
    pairs = [(a, b) for a, b, _ in VERCMP_CASES]
    assert len(set(pairs)) == len(pairs)
    assert all(expected in (-1, 0, 1) for _, _, expected in VERCMP_CASES)


# --- rpm as the oracle -------------------------------------------------------------

RPM = shutil.which("rpm")
needs_rpm = pytest.mark.skipif(RPM is None, reason="rpm is not on PATH")

# Lua (inside rpm) for the plain segment comparison of two strings; see the module docstring.
_LUA_PRELUDE = (
    "local function vc(a, b) "
    "if rpm.ver == nil then return rpm.vercmp(a, b) end "
    'local x, y = rpm.ver("0", "0", a), rpm.ver("0", "0", b) '
    "if x == y then return 0 elseif x < y then return -1 else return 1 end "
    "end "
    "local function evr(e1, v1, r1, e2, v2, r2) "
    "if rpm.ver == nil then "
    "local c = vc(e1 or '0', e2 or '0') if c ~= 0 then return c end "
    "c = vc(v1, v2) if c ~= 0 then return c end return vc(r1, r2) end "
    "local x, y = rpm.ver(e1, v1, r1), rpm.ver(e2, v2, r2) "
    "if x == y then return 0 elseif x < y then return -1 else return 1 end "
    "end "
    "local r = {} "
)
_MAX_CHUNK = 60_000  # one argv string may not pass 128 KiB (MAX_ARG_STRLEN)


def _lua_str(s: str) -> str:
    """A Lua literal of s's UTF-8 bytes, each as a decimal escape.

    Nothing in it can end the string, start an rpm macro (%) or unbalance the braces of
    ``%{lua: ...}``. A NUL would cut the string short in C, so none is allowed.
    """
    assert "\0" not in s
    return '"' + "".join(f"\\{byte}" for byte in s.encode()) + '"'


def _rpm_eval_lua(calls: Sequence[str]) -> list[int]:
    """Evaluate Lua expressions (one int each) inside rpm; few rpm runs for many calls."""
    assert RPM is not None
    results: list[int] = []
    start = 0
    while start < len(calls):
        end, size = start, 0
        while end < len(calls) and (end == start or size + len(calls[end]) < _MAX_CHUNK):
            size += len(calls[end]) + 20
            end += 1
        lines = "".join(f"r[#r + 1] = {call} " for call in calls[start:end])
        chunk = _LUA_PRELUDE + lines + 'print(table.concat(r, "\\n"))'
        out = subprocess.run(
            [RPM, "--eval", "%{lua: " + chunk + "}"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
            env={**os.environ, "LC_ALL": "C"},
        ).stdout
        got = [int(line) for line in out.split()]
        assert len(got) == end - start, out
        results.extend(got)
        start = end
    return results


def rpm_vercmp_many(pairs: Sequence[tuple[str, str]]) -> list[int]:
    """rpm's own rpmvercmp(a, b) for each pair (any strings without NUL, even empty)."""
    return _rpm_eval_lua([f"vc({_lua_str(a)}, {_lua_str(b)})" for a, b in pairs])


def _evr_lua(e: str, v: str, r: str) -> str:
    return f"{_lua_str(e) if e else 'nil'}, {_lua_str(v)}, {_lua_str(r)}"


def rpm_evrcmp_many(
    pairs: Sequence[tuple[tuple[str, str, str], tuple[str, str, str]]],
) -> list[int]:
    """rpm's comparison of two (epoch, version, release); an empty epoch is a missing one."""
    return _rpm_eval_lua([f"evr({_evr_lua(*x)}, {_evr_lua(*y)})" for x, y in pairs])


def _sign(n: int) -> int:
    return (n > 0) - (n < 0)


@needs_rpm
def test_the_table_agrees_with_rpm() -> None:
    pairs = [(a, b) for a, b, _ in VERCMP_CASES] + [(b, a) for a, b, _ in VERCMP_CASES]
    expected = [e for _, _, e in VERCMP_CASES] + [-e for _, _, e in VERCMP_CASES]
    got = rpm_vercmp_many(pairs)
    wrong = [(a, b, e, g) for (a, b), e, g in zip(pairs, expected, got, strict=True) if e != g]
    assert wrong == [], "(a, b, table, rpm)"


def _evr_safe(s: str) -> bool:
    """Whether rpm's EVR parsing leaves s whole: not empty, no release, no epoch."""
    return bool(s) and "-" not in s and not s.lstrip("0123456789").startswith(":")


@needs_rpm
def test_the_table_agrees_with_rpm_vercmp_itself() -> None:
    """``rpm.vercmp`` straight, on the cases whose strings EVR parsing cannot split."""
    cases = [(a, b, e) for a, b, e in VERCMP_CASES if _evr_safe(a) and _evr_safe(b)]
    assert len(cases) >= 60
    calls = [f"rpm.vercmp({_lua_str(a)}, {_lua_str(b)})" for a, b, _ in cases]
    got = [_sign(g) for g in _rpm_eval_lua(calls)]
    wrong = [(a, b, e, g) for (a, b, e), g in zip(cases, got, strict=True) if e != g]
    assert wrong == [], "(a, b, table, rpm.vercmp)"


@pytest.mark.parametrize(("a", "b", "expected"), VERCMP_CASES, ids=CASE_IDS)
def test_rpmvercmp_agrees_with_the_table(a: str, b: str, expected: int) -> None:
    assert rpmvercmp(a, b) == expected
    assert rpmvercmp(b, a) == -expected


# --- properties --------------------------------------------------------------------

versions = st.text(alphabet="0123456789abcAB.~^_-+:é", max_size=10)


# No shrinking: each step costs an rpm run, and the failure lists every disagreeing pair.
@needs_rpm
@settings(
    max_examples=10,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(st.tuples(versions, versions), min_size=200, max_size=200))
def test_rpmvercmp_matches_rpm(pairs: list[tuple[str, str]]) -> None:
    got = [rpmvercmp(a, b) for a, b in pairs]
    wrong = [
        (a, b, g, r)
        for (a, b), g, r in zip(pairs, got, rpm_vercmp_many(pairs), strict=True)
        if g != r
    ]
    assert wrong == [], "(a, b, ours, rpm)"


@settings(max_examples=300, deadline=None)
@given(versions, versions)
def test_rpmvercmp_is_antisymmetric_and_reflexive(a: str, b: str) -> None:
    assert rpmvercmp(a, b) in (-1, 0, 1)
    assert rpmvercmp(a, b) == -rpmvercmp(b, a)
    assert rpmvercmp(a, a) == 0


# --- compare_evr -------------------------------------------------------------------

EVR_CASES: list[tuple[tuple[str, str, str], tuple[str, str, str], int]] = [
    (("", "1.0", "1"), ("0", "1.0", "1"), 0),  # a missing epoch is epoch 0
    (("1", "1.0", "1"), ("", "9.9", "9"), 1),  # the epoch beats the version
    (("10", "1.0", "1"), ("9", "1.0", "1"), 1),  # epochs compare as numbers
    (("0", "1.0", "1"), ("0", "1.0", "2"), -1),  # the release breaks a version tie
    (("0", "1.0", "10.el9"), ("0", "1.0", "9.el9"), 1),
    (("0", "1.0~rc1", "1"), ("0", "1.0", "0"), -1),  # the version beats the release
    (("0", "1.0^git1", "1"), ("0", "1.0", "9"), 1),
    (("", "1.01", "1"), ("", "1.1", "1"), 0),
    (("", "2.0", "1.fc40"), ("", "2.0", "1.fc40~bootstrap"), 1),
]


def _fact(
    name: str, epoch: str, version: str, release: str, arch: str, pkgid: str = ""
) -> PackageFact:
    nevra = f"{name}-{epoch or '0'}:{version}-{release}.{arch}"
    return PackageFact(
        pkgid=pkgid or nevra,
        checksum_type="sha256",
        name=name,
        epoch=epoch,
        version=version,
        release=release,
        arch=arch,
        size=1,
        href=f"Packages/{name}-{version}-{release}.{arch}.rpm",
    )


@pytest.mark.parametrize(("x", "y", "expected"), EVR_CASES)
def test_compare_evr(x: tuple[str, str, str], y: tuple[str, str, str], expected: int) -> None:
    fx, fy = _fact("p", *x, arch="noarch"), _fact("p", *y, arch="noarch")
    assert compare_evr(fx, fy) == expected
    assert compare_evr(fy, fx) == -expected


@needs_rpm
def test_compare_evr_table_agrees_with_rpm() -> None:
    got = rpm_evrcmp_many([(x, y) for x, y, _ in EVR_CASES])
    assert got == [e for _, _, e in EVR_CASES]


# --- keep_versions: golden selections ----------------------------------------------

Pkg = tuple[str, ...]  # (name, epoch, version, release, arch[, pkgid])

# (description, keep_versions, facts in upstream order, pkgids kept); a pkgid defaults
# to the package's name-epoch:version-release.arch.
SELECT_CASES: list[tuple[str, int, list[Pkg], list[str]]] = [
    (
        "newest by number, not by text",
        1,
        [("foo", "", "1.9", "1", "x86_64"), ("foo", "", "1.10", "1", "x86_64")],
        ["foo-0:1.10-1.x86_64"],
    ),
    (
        "keep 2 of 4",
        2,
        [
            ("foo", "", "1.0", "1", "x86_64"),
            ("foo", "", "1.2", "1", "x86_64"),
            ("foo", "", "1.1", "1", "x86_64"),
            ("foo", "", "1.3", "1", "x86_64"),
        ],
        ["foo-0:1.2-1.x86_64", "foo-0:1.3-1.x86_64"],
    ),
    (
        "keep 0 keeps all",
        0,
        [
            ("foo", "", "1.0", "1", "x86_64"),
            ("foo", "", "1.1", "1", "x86_64"),
            ("foo", "", "1.1", "2", "x86_64"),
        ],
        ["foo-0:1.0-1.x86_64", "foo-0:1.1-1.x86_64", "foo-0:1.1-2.x86_64"],
    ),
    (
        "keep more than there are keeps all",
        5,
        [("foo", "", "1.0", "1", "x86_64"), ("foo", "", "1.1", "1", "x86_64")],
        ["foo-0:1.0-1.x86_64", "foo-0:1.1-1.x86_64"],
    ),
    (
        "the epoch beats the version",
        1,
        [("foo", "", "9.9", "9", "x86_64"), ("foo", "1", "1.0", "1", "x86_64")],
        ["foo-1:1.0-1.x86_64"],
    ),
    (
        "epochs compare as numbers",
        1,
        [("foo", "10", "1.0", "1", "x86_64"), ("foo", "9", "2.0", "1", "x86_64")],
        ["foo-10:1.0-1.x86_64"],
    ),
    (
        "a missing epoch is 0: the release decides",
        1,
        [("foo", "0", "1.0", "1", "x86_64"), ("foo", "", "1.0", "2", "x86_64")],
        ["foo-0:1.0-2.x86_64"],
    ),
    (
        "the release decides when the versions tie",
        1,
        [("foo", "", "1.0", "10.el9", "x86_64"), ("foo", "", "1.0", "9.el9", "x86_64")],
        ["foo-0:1.0-10.el9.x86_64"],
    ),
    (
        "noarch and x86_64 are kept separately",
        1,
        [
            ("foo", "", "2.0", "1", "noarch"),
            ("foo", "", "1.0", "1", "x86_64"),
            ("foo", "", "1.5", "1", "x86_64"),
            ("foo", "", "1.0", "1", "noarch"),
        ],
        ["foo-0:1.5-1.x86_64", "foo-0:2.0-1.noarch"],
    ),
    (
        "names are kept separately",
        1,
        [
            ("foo", "", "1.0", "1", "x86_64"),
            ("foo-libs", "", "1.0", "1", "x86_64"),
            ("foo-libs", "", "0.9", "1", "x86_64"),
            ("foo", "", "0.9", "1", "x86_64"),
        ],
        ["foo-0:1.0-1.x86_64", "foo-libs-0:1.0-1.x86_64"],
    ),
    (
        "a ~ pre-release is older than the release",
        1,
        [
            ("foo", "", "2.0~rc2", "1", "x86_64"),
            ("foo", "", "2.0", "1", "x86_64"),
            ("foo", "", "1.9", "1", "x86_64"),
        ],
        ["foo-0:2.0-1.x86_64"],
    ),
    (
        "a ~ pre-release is newer than the release before",
        2,
        [
            ("foo", "", "2.0~rc2", "1", "x86_64"),
            ("foo", "", "1.9", "1", "x86_64"),
            ("foo", "", "2.0~rc10", "1", "x86_64"),
        ],
        ["foo-0:2.0~rc10-1.x86_64", "foo-0:2.0~rc2-1.x86_64"],
    ),
    (
        "a ^ snapshot is newer than its base, older than the next version",
        2,
        [
            ("foo", "", "2.0^20240101git1", "1", "x86_64"),
            ("foo", "", "2.0", "1", "x86_64"),
            ("foo", "", "2.0.1", "1", "x86_64"),
        ],
        ["foo-0:2.0.1-1.x86_64", "foo-0:2.0^20240101git1-1.x86_64"],
    ),
    (
        "a tie (same EVR, other builds): keep 2 keeps both",
        2,
        [
            ("foo", "", "1.0", "1", "x86_64", "b-build"),
            ("foo", "", "1.0", "1", "x86_64", "a-build"),
            ("foo", "", "0.9", "1", "x86_64"),
        ],
        ["a-build", "b-build"],
    ),
    (
        "a tie at the cut: the first listed stays (the sort is stable)",
        1,
        [
            ("foo", "", "1.0", "1", "x86_64", "b-build"),
            ("foo", "", "1.0", "1", "x86_64", "a-build"),
        ],
        ["b-build"],
    ),
    (
        "a tie by spelling (1.01 == 1.1): the first listed stays",
        1,
        [("foo", "", "1.01", "1", "x86_64"), ("foo", "", "1.1", "1", "x86_64")],
        ["foo-0:1.01-1.x86_64"],
    ),
    (
        "duplicate records of one package count once",
        2,
        [
            ("foo", "", "1.2", "1", "x86_64"),
            ("foo", "", "1.2", "1", "x86_64"),
            ("foo", "", "1.1", "1", "x86_64"),
            ("foo", "", "1.0", "1", "x86_64"),
        ],
        ["foo-0:1.1-1.x86_64", "foo-0:1.2-1.x86_64"],
    ),
    ("nothing upstream", 1, [], []),
]


@pytest.mark.parametrize(
    ("keep", "facts", "expected"),
    [case[1:] for case in SELECT_CASES],
    ids=[case[0] for case in SELECT_CASES],
)
def test_select_golden(keep: int, facts: list[Pkg], expected: list[str]) -> None:
    chosen = select([_fact(*f) for f in facts], keep)
    assert sorted(f.pkgid for f in chosen) == sorted(expected)
    assert chosen == sorted(chosen, key=lambda f: (f.filename, f.pkgid)), "sorted by file name"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["foo", "bar"]),
            st.sampled_from(["", "0", "1"]),
            st.sampled_from(["1.0", "1.0~rc1", "1.0^git1", "1.01", "2.0", "10"]),
            st.sampled_from(["1", "2", "10"]),
            st.sampled_from(["x86_64", "noarch"]),
        ),
        max_size=12,
    ),
    st.integers(0, 4),
)
def test_select_keeps_the_newest_of_each_name_arch(
    facts: list[tuple[str, str, str, str, str]], keep: int
) -> None:
    packages = [_fact(*f) for f in facts]
    chosen = select(packages, keep)
    for key in {(p.name, p.arch) for p in packages}:
        group: dict[str, PackageFact] = {}
        for p in packages:
            if (p.name, p.arch) == key:
                group.setdefault(p.pkgid, p)  # like select: the first record of a pkgid
        kept = [p for p in chosen if (p.name, p.arch) == key]
        assert len(kept) == (len(group) if keep == 0 else min(keep, len(group)))
        assert all(group[p.pkgid] is p for p in kept)
        if kept:
            # nothing left out is newer than anything kept
            oldest_kept = min(kept, key=cmp_to_key(compare_evr))
            kept_ids = {p.pkgid for p in kept}
            left_out = [p for p in group.values() if p.pkgid not in kept_ids]
            assert all(compare_evr(p, oldest_kept) <= 0 for p in left_out)
