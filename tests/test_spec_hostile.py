"""Hostile desired-state files and host configs: each is refused with file and line, in
bounded time and memory, and never with a traceback.

Covers: recursive and exponential YAML aliases, files over the size cap (checked before
the file is read), things that are not files, SIG files that are ignored, numbers out of
bounds or of the wrong kind, and (with Hypothesis) arbitrary YAML, which loads as valid
records or as a SpecError/ConfigError whose every issue names its file and line.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from reconciler.errors import ConfigError, ReconcilerError, SpecError
from reconciler.recordcache import RecordCache
from reconciler.specfile import load_host_config, load_spec

from .test_spec import DEFAULTS, GOOD_SIG, make_dir

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20

#: Nine levels of nine aliases each: about 400 bytes that expand to 9**9 values.
BILLION_LAUGHS = (
    "sig: core\n"
    "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9))
    + "releases: *l8\n"
)


def no_traceback(*texts: str) -> None:
    for text in texts:
        for sign in ("Traceback", "RecursionError", "MemoryError"):
            assert sign not in text, text


# --- 1. aliases, anchors, size ---------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "line"),
    [
        ("x: &r {y: *r}\n", 14),
        ("x: &r [a, [b, *r]]\n", 14),
        ("x: &r\n  y:\n    z: *r\n", 16),
    ],
    ids=["mapping", "sequence", "block"],
)
def test_a_recursive_alias_is_refused_with_file_and_line(
    tmp_path: Path, cli: Any, doc: str, line: int
) -> None:
    d = make_dir(tmp_path, GOOD_SIG + doc)
    result = cli("validate", d)
    assert result.code == 1
    assert re.search(
        rf"^{re.escape(str(d))}/sigs/core\.yaml:{line}: .*recursive", result.out, re.M
    ), result.out
    no_traceback(result.out, result.err)


def test_a_recursive_alias_in_defaults_and_host_config(tmp_path: Path) -> None:
    d = make_dir(tmp_path, defaults=DEFAULTS + "x: &r {y: *r}\n")
    with pytest.raises(SpecError) as info:
        load_spec(d)
    assert any(
        i.file == "defaults.yaml" and i.line == 5 and "recursive" in i.message
        for i in info.value.issues
    ), info.value.issues
    config = tmp_path / "config.yaml"
    config.write_text("interval: 300\nx: &r [*r]\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(config))}:2: .*recursive"):
        load_host_config(config)


def _limited_validate(d: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``reconciler validate d`` in a child limited to 1 GiB of address space."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "RECONCILER_CACHE_DIR": "",
    }
    code = "import sys; from reconciler.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, "validate", str(d)],
        env=env,
        preexec_fn=limit,  # no threads in this test
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_billion_laughs_is_refused_in_bounded_time_and_memory(tmp_path: Path) -> None:
    assert len(BILLION_LAUGHS) < 600
    d = make_dir(tmp_path, BILLION_LAUGHS)
    started = time.monotonic()
    done = _limited_validate(d)
    assert time.monotonic() - started < 30
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(rf"^{re.escape(str(d))}/sigs/core\.yaml:\d+: .*alias", done.stdout, re.M), (
        done.stdout + done.stderr
    )
    no_traceback(done.stdout, done.stderr)


def test_aliases_that_expand_a_little_are_still_accepted(tmp_path: Path) -> None:
    sig = GOOD_SIG.replace("{arches: [x86_64, aarch64]}", "&both {arches: [x86_64, aarch64]}")
    sig = sig.replace("core-infra: {arches: [x86_64]}", "core-infra: *both")
    spec = load_spec(make_dir(tmp_path, sig))
    assert spec.release("core", "9").repos["core-infra"].arches == ("x86_64", "aarch64")


def test_deep_nesting_is_refused_with_file_and_line(tmp_path: Path, cli: Any) -> None:
    d = make_dir(tmp_path, GOOD_SIG + "x: " + "[" * 100_000 + "]" * 100_000 + "\n")
    result = cli("validate", d)
    assert result.code == 1
    assert re.search(rf"{re.escape(str(d))}/sigs/core\.yaml:14: .*nested", result.out), result.out
    no_traceback(result.out, result.err)


def test_the_size_cap_is_one_mib() -> None:
    from reconciler.specfile import MAX_FILE_BYTES

    assert MAX_FILE_BYTES == MIB


def pad(text: str, size: int) -> bytes:
    """``text`` followed by comment lines up to exactly ``size`` bytes."""
    raw = text.encode()
    filler = bytearray()
    while len(raw) + len(filler) < size:
        room = size - len(raw) - len(filler)
        filler += (b"#" + b"x" * min(78, room - 2) + b"\n") if room >= 2 else b"\n"
    return raw + bytes(filler)


def test_a_file_of_exactly_the_cap_is_read_and_one_byte_more_is_refused(tmp_path: Path) -> None:
    d = make_dir(tmp_path)
    sig = d / "sigs" / "core.yaml"
    sig.write_bytes(pad(GOOD_SIG, MIB))
    assert sig.stat().st_size == MIB
    assert "core" in load_spec(d).sigs
    sig.write_bytes(pad(GOOD_SIG, MIB + 1))
    with pytest.raises(SpecError) as info:
        load_spec(d)
    (issue,) = info.value.issues
    assert issue.file == "sigs/core.yaml" and issue.line is not None
    assert "1 MiB" in issue.message and str(MIB + 1) in issue.message


def test_a_huge_file_is_refused_before_it_is_read(tmp_path: Path, cli: Any) -> None:
    """200 MB of comments: refused at once (before the fix it was read for 81 s)."""
    d = make_dir(tmp_path)
    with (d / "sigs" / "core.yaml").open("wb") as f:
        f.write(pad(GOOD_SIG, 2 * MIB))
        f.truncate(200 * 1000 * 1000)  # the rest is a hole: no disk, no time
    with (d / "defaults.yaml").open("ab") as f:
        f.truncate(50 * MIB)
    started = time.monotonic()
    result = cli("validate", d)
    assert time.monotonic() - started < 5
    assert result.code == 1
    assert re.search(
        rf"^{re.escape(str(d))}/sigs/core\.yaml:\d+: .*200000000 bytes.*1 MiB", result.out, re.M
    ), result.out
    assert re.search(rf"^{re.escape(str(d))}/defaults\.yaml:\d+: .*1 MiB", result.out, re.M), (
        result.out
    )
    no_traceback(result.out, result.err)


def test_a_huge_host_config_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(pad("interval: 300\n", MIB + 1))
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(config))}:\d+: .*1 MiB"):
        load_host_config(config)


def test_a_fifo_or_a_folder_is_not_read(tmp_path: Path) -> None:
    """A FIFO would block a plain read forever: refused (in a child, so a hang fails)."""
    d = make_dir(tmp_path)
    (d / "sigs" / "core.yaml").unlink()
    os.mkfifo(d / "sigs" / "core.yaml")
    (d / "sigs" / "cloud.yaml").mkdir()
    done = _limited_validate(d, timeout=30)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{d}/sigs/core.yaml: not a regular file" in done.stdout, done.stdout
    assert f"{d}/sigs/cloud.yaml: not a regular file" in done.stdout, done.stdout
    no_traceback(done.stdout, done.stderr)


def test_bytes_and_file_names_that_are_not_utf8(tmp_path: Path, cli: Any) -> None:
    d = make_dir(tmp_path, GOOD_SIG.replace("    staging: latest\n", "    # caf\xe9\n"))
    sig = d / "sigs" / "core.yaml"
    sig.write_bytes(sig.read_bytes().replace("\xe9".encode(), b"\xe9"))
    (d / "sigs").joinpath(os.fsdecode(b"\xff.yaml")).write_text("sig: core\n")
    (d / "sigs").joinpath(os.fsdecode(b"\xfe.txt")).write_text("notes\n")
    (d / "keys").joinpath(os.fsdecode(b"\xfd")).write_text("key\n")
    result = cli("validate", d)
    assert result.code == 1
    assert f"{d}/sigs/core.yaml:12: not UTF-8: byte 0xe9" in result.out, result.out
    assert f"{d}/sigs/\\xff.yaml:1: " in result.out, result.out
    assert f"{d}/sigs/\\xfe.txt: ignored" in result.err, result.err
    no_traceback(result.out, result.err)


# --- 2. files in sigs/ that are not read ---------------------------------------------


def test_ignored_sig_files_are_named_and_kept_on_the_spec(tmp_path: Path, cli: Any) -> None:
    d = make_dir(tmp_path)
    sigs = d / "sigs"
    (sigs / ".x.yaml").write_text(GOOD_SIG)
    (sigs / "x.yaml.disabled").write_text(GOOD_SIG)
    (sigs / "notes.txt").write_text("hello\n")
    (sigs / "old").mkdir()
    result = cli("validate", d)
    assert result.code == 0, result.out
    expected = ["sigs/.x.yaml", "sigs/notes.txt", "sigs/old", "sigs/x.yaml.disabled"]
    for name in expected:
        assert f"{d}/{name}: ignored: not a <name>.yaml file" in result.err, result.err
    assert "valid (1 SIGs" in result.out
    assert load_spec(d).ignored_files == tuple(expected)
    assert load_spec(make_dir(tmp_path / "clean")).ignored_files == ()


def test_ignored_sig_files_survive_the_record_cache(tmp_path: Path) -> None:
    d = make_dir(tmp_path)
    cache = RecordCache(tmp_path / "cache")
    assert load_spec(d, cache).ignored_files == ()
    assert load_spec(d, cache).ignored_files == ()  # a hit
    (d / "sigs" / "core.yaml.bak").write_text(GOOD_SIG)
    assert load_spec(d, cache).ignored_files == ("sigs/core.yaml.bak",)
    assert load_spec(d, cache).ignored_files == ("sigs/core.yaml.bak",)


# --- 3. every number is bounded --------------------------------------------------------

BIG = "100000000000000000000000000000000000000"  # 1e38, as YAML reads an int

# (case, old, new, line, fragment)
SIG_NUMBER_CASES = [
    ("keep_versions 1e38", "keep_versions: 1", f"keep_versions: {BIG}", 11, "less than or equal"),
    ("keep_versions 1001", "keep_versions: 1", "keep_versions: 1001", 11, "less than or equal"),
    ("keep_versions float", "keep_versions: 1", "keep_versions: 1.0", 11, "valid integer"),
    ("keep_versions bool", "keep_versions: 1", "keep_versions: true", 11, "valid integer"),
    ("refresh huge", "keep_versions: 1", "keep_versions: 1\n      refresh: 1000000001", 12, "less"),
    ("refresh -1", "keep_versions: 1", "keep_versions: 1\n      refresh: -1", 12, "greater"),
    ("refresh inf", "keep_versions: 1", "keep_versions: 1\n      refresh: .inf", 12, "integer"),
]


@pytest.mark.parametrize(
    ("old", "new", "line", "fragment"),
    [c[1:] for c in SIG_NUMBER_CASES],
    ids=[c[0] for c in SIG_NUMBER_CASES],
)
def test_sig_numbers_are_bounded(
    tmp_path: Path, cli: Any, old: str, new: str, line: int, fragment: str
) -> None:
    d = make_dir(tmp_path, GOOD_SIG.replace(old, new, 1))
    result = cli("validate", d)
    assert result.code == 1
    assert re.search(
        rf"^{re.escape(str(d))}/sigs/core\.yaml:{line}: .*{re.escape(fragment)}", result.out, re.M
    ), result.out


def test_sig_numbers_at_their_bounds_are_valid(tmp_path: Path) -> None:
    sig = GOOD_SIG.replace("keep_versions: 1", "keep_versions: 1000\n      refresh: 1000000000")
    compose = load_spec(make_dir(tmp_path, sig)).release("core", "9").compose
    assert (compose.keep_versions, compose.refresh) == (1000, 1000000000)


DEFAULTS_NUMBER_CASES = [
    ("keep_composes 0", "compose: {keep_composes: 0}", "greater"),
    ("keep_composes 1e38", f"compose: {{keep_composes: {BIG}}}", "less"),
    ("keep_composes float", "compose: {keep_composes: 5.0}", "valid integer"),
    ("keep_composes string", "compose: {keep_composes: '5'}", "valid integer"),
    ("delete_grace 366d", "publish: {delete_grace: 366d}", "365 days"),
    ("delete_grace 53w", "publish: {delete_grace: 53w}", "365 days"),
    ("delete_grace overflow", f"publish: {{delete_grace: {BIG}d}}", "365 days"),
    ("delete_grace huge digits", "publish: {delete_grace: " + "9" * 5000 + "s}", "365 days"),
    ("min_soak 9000h", "promotion: {min_soak: 9000h}", "365 days"),
    ("min_soak int", "promotion: {min_soak: 3600}", "duration"),
]


@pytest.mark.parametrize(
    ("line_text", "fragment"),
    [c[1:] for c in DEFAULTS_NUMBER_CASES],
    ids=[c[0] for c in DEFAULTS_NUMBER_CASES],
)
def test_defaults_numbers_are_bounded(
    tmp_path: Path, cli: Any, line_text: str, fragment: str
) -> None:
    d = make_dir(tmp_path, defaults=DEFAULTS + line_text + "\n")
    result = cli("validate", d)
    assert result.code == 1
    assert re.search(
        rf"^{re.escape(str(d))}/defaults\.yaml:5: .*{re.escape(fragment)}", result.out, re.M
    ), result.out
    no_traceback(result.out, result.err)


def test_defaults_at_their_bounds_are_valid(tmp_path: Path) -> None:
    extra = "compose: {keep_composes: 1000}\npublish: {delete_grace: 365d}\n"
    extra += "promotion: {min_soak: 8760h}\n"
    spec = load_spec(make_dir(tmp_path, defaults=DEFAULTS + extra))
    assert spec.defaults.compose.keep_composes == 1000
    assert spec.defaults.publish.delete_grace.days == 365
    assert spec.defaults.promotion.min_soak.days == 365


# (case, host config text, line, fragment)
HOST_NUMBER_CASES = [
    ("interval 1e38", "interval: 1.0e+38", 1, "valid integer"),
    ("interval big int", f"interval: {BIG}", 1, "less"),
    ("interval float", "interval: 300.0", 1, "valid integer"),
    ("interval string", "interval: '300'", 1, "valid integer"),
    ("interval 0", "interval: 0", 1, "greater"),
    ("drift_interval huge", "drift_interval: 100000000000000000000000", 1, "less"),
    ("drift_interval -1", "drift_interval: -1", 1, "greater"),
    ("workers float", "download:\n  workers: 4.0", 2, "valid integer"),
    ("workers 65", "download:\n  workers: 65", 2, "less"),
    ("retries 21", "download:\n  retries: 21", 2, "less"),
    ("retries bool", "download:\n  retries: true", 2, "valid integer"),
    ("backoff string", "download:\n  backoff: '1'", 2, "valid number"),
    ("backoff 61", "download:\n  backoff: 61", 2, "less"),
    ("download timeout inf", "download:\n  timeout: .inf", 2, "finite"),
    ("download timeout huge", "download:\n  timeout: 1.0e+300", 2, "less"),
    ("git timeout 1e400", "git:\n  url: x\n  timeout: 1e400", 3, "valid number"),
    ("git timeout 0", "git:\n  url: x\n  timeout: 0", 3, "greater"),
    ("git timeout 2 days", "git:\n  url: x\n  timeout: 172800", 3, "less"),
    ("hooks timeout nan", "hooks:\n  timeout: .nan", 2, "finite"),
    ("hooks timeout 2 days", "hooks:\n  timeout: 172800", 2, "less"),
]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [c[1:] for c in HOST_NUMBER_CASES],
    ids=[c[0] for c in HOST_NUMBER_CASES],
)
def test_host_config_numbers_are_bounded(
    tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(text + "\n")
    with pytest.raises(ConfigError) as info:
        load_host_config(config)
    assert re.search(
        rf"^{re.escape(str(config))}:{line}: .*{re.escape(fragment)}", str(info.value), re.M
    ), str(info.value)


def test_host_config_numbers_at_their_bounds_are_valid(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "git: {url: x, timeout: 86400}\ninterval: 86400\ndrift_interval: 0\n"
        "download: {workers: 64, retries: 20, backoff: 60, timeout: 3600}\n"
        "hooks: {timeout: 86400}\n"
    )
    host = load_host_config(config)
    assert host.git is not None and host.git.timeout == 86400
    assert (host.interval, host.drift_interval) == (86400, 0)
    assert (host.download.workers, host.download.backoff) == (64, 60.0)
    config.write_text("interval: 1\ndrift_interval: 604800\ndownload: {timeout: 0.5}\n")
    assert load_host_config(config).drift_interval == 604800


# --- 4. arbitrary YAML: valid records or file:line issues, nothing else -----------------

NINES = "9" * 5000  # more digits than int() reads
KEYS = [
    "sig", "releases", "repos", "arches", "keep_versions", "keep_composes", "compose",
    "project_id", "gpg_keys", "staging", "production", "suspend", "refresh", "upstream",
    "base_url", "publish", "delete_grace", "promotion", "min_soak", "9", "10", "core",
    "core-common", "x86_64", "<<", "interval", "download", "workers", "timeout", "git",
    "url", "hooks", "roots", "drift_interval", "é", "a b", "-", "?", "'q'", '"dq"', "\tk",
    "k\x00",
]  # fmt: skip
SCALARS = [
    "1", "0", "-1", "1e38", "1.0e+38", "-.inf", ".nan", "~", "null", "yes", "no", "true",
    "0x1F", "0o17", "017", "1_000", "2024-13-45", "2001-12-14t21:59:43.10-05:00",
    "2024-02-30", "!!int x", "!!float y", "!!binary '###'", "!!set {a, b}", "!!omap [a: 1]",
    "!!timestamp 2020-99-99", "!!python/object/apply:os.system ['true']", "!!str 1",
    "'\t'", '"\\u0000"', '"\\x85"', NINES, "1" + "0" * 400, "x86_64", "latest",
    "SIG-core-9-20261120.0", "47e0b4a8-84ba-43a9-bb94-eb99dde4cf14", "24h", "99999999999d",
    "https://build.invalid/v1", "{base_url}/{project_id}", "\U0001f600", "a\tb", "''",
    "!custom x", "*undefined", "&a1 x", "|\n  text", ">-\n  folded", "%", "@", "`",
]  # fmt: skip

_key = (
    st.sampled_from(KEYS)
    | st.sampled_from(KEYS)
    | st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=6)
)
_scalar = st.sampled_from(SCALARS) | st.integers().map(str) | st.floats().map(repr)


def _render(tree: Any, anchors: list[str], draw: Any) -> str:
    """Flow-style YAML text of a tree of dicts (as pair lists), lists and scalar texts."""
    if isinstance(tree, tuple) and tree[0] == "map":
        body = ", ".join(f"{k}: {_render(v, anchors, draw)}" for k, v in tree[1])
        text = "{" + body + "}"
    elif isinstance(tree, tuple) and tree[0] == "seq":
        text = "[" + ", ".join(_render(v, anchors, draw) for v in tree[1]) + "]"
    else:
        text = str(tree).replace("\n", " ")
    choice = draw(st.integers(0, 9))
    if choice == 0:  # an anchor, possibly referred to later (or inside itself)
        name = f"a{len(anchors)}"
        anchors.append(name)
        return f"&{name} {text}"
    if choice == 1 and anchors:
        return "*" + draw(st.sampled_from(anchors))
    return text


_tree = st.recursive(
    _scalar,
    lambda inner: (
        st.tuples(st.just("seq"), st.lists(inner, max_size=4))
        | st.tuples(st.just("map"), st.lists(st.tuples(_key, inner), max_size=4))
    ),
    max_leaves=12,
)


@st.composite
def yaml_documents(draw: Any) -> str:
    """A YAML file: random block-style top-level keys with flow values, or a mutated good
    file (a value replaced, a line duplicated, a tab or an anchor put in)."""
    if draw(st.booleans()):
        anchors: list[str] = []
        pairs = draw(st.lists(st.tuples(_key, _tree), max_size=6))
        lines = [f"{k}: {_render(v, anchors, draw)}" for k, v in pairs]
        return "\n".join(lines) + ("\n" if draw(st.booleans()) else "")
    lines = draw(st.sampled_from([GOOD_SIG, DEFAULTS])).splitlines()
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.integers(0, 4))
        head, _, _ = lines[i].partition(":")
        if kind == 0:
            lines[i] = f"{head}: {draw(_scalar)}"
        elif kind == 1:
            lines.insert(i, lines[i])  # a duplicate key
        elif kind == 2:
            lines[i] = lines[i].replace("  ", "\t", 1)
        elif kind == 3:
            lines[i] = f"{head}: &r {{k: *r}}" if draw(st.booleans()) else f"{head}: *nowhere"
        else:
            lines[i] = f"{head}: {_render(draw(_tree), [], draw)}"
    return "\n".join(lines) + "\n"


def _issue_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(defaults=yaml_documents(), sig=yaml_documents(), good_defaults=st.integers(0, 3))
def test_any_yaml_loads_or_names_file_and_line(defaults: str, sig: str, good_defaults: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "sigs").mkdir()
        (d / "keys").mkdir()
        (d / "keys" / "RPM-GPG-KEY-core").write_text("key\n")
        (d / "defaults.yaml").write_text(DEFAULTS if good_defaults else defaults)  # 3 in 4
        (d / "sigs" / "core.yaml").write_text(sig)
        texts = {"defaults.yaml": DEFAULTS if good_defaults else defaults, "sigs/core.yaml": sig}
        try:
            spec = load_spec(d)
        except SpecError as exc:
            assert exc.issues
            event(f"invalid: {exc.issues[0].message[:24]}")
            for issue in exc.issues:
                assert issue.file in texts, issue
                assert issue.line is not None, issue
                assert 1 <= issue.line <= len(texts[issue.file].splitlines()) + 1, issue
                assert str(issue).startswith(f"{issue.file}:{issue.line}: "), issue
                assert "\n" not in str(issue), issue
        else:
            event("valid")
            assert set(spec.sigs) == {"core"}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=yaml_documents())
def test_any_yaml_host_config_loads_or_names_file_and_line(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(text)
        try:
            load_host_config(config)
            event("valid")
        except ReconcilerError as exc:
            assert isinstance(exc, ConfigError)
            event(f"invalid: {str(exc).partition(': ')[2][:24]}")
            for line in _issue_lines(str(exc)):
                assert re.match(rf"{re.escape(str(config))}:[0-9]+: ", line), line


def test_status_names_the_files_a_pass_did_not_read(
    cli: Any, host: Any, desired_state: Any
) -> None:
    """A parked SIG file was ignored without a word; status says so after a pass."""
    (desired_state.path / "sigs" / "cloud.yaml.disabled").write_text("sig: cloud\n")
    args = ("--config", host.config_path)
    assert cli("apply", *args, "--desired-state", desired_state.path).code == 0
    rows = json.loads(cli("status", "--format", "json", *args).out)
    assert rows[0]["source"]["ignored"] == ["sigs/cloud.yaml.disabled"]
    text = cli("status", *args).out
    assert "ignored file: sigs/cloud.yaml.disabled" in text
    (desired_state.path / "sigs" / "cloud.yaml.disabled").unlink()
    assert cli("apply", *args, "--desired-state", desired_state.path).code == 0
    rows = json.loads(cli("status", "--format", "json", *args).out)
    assert rows[0]["source"]["ignored"] == []
