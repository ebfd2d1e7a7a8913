"""The desired-state schema: every kind of bad input names its file and line."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import SpecError
from reconciler.specfile import load_spec

REPO_ROOT = Path(__file__).resolve().parent.parent

DEFAULTS = """\
upstream:
  base_url: https://build.invalid/v1/projects
releases:
  "9": {arches: [x86_64, aarch64]}
"""

GOOD_SIG = """\
sig: core
releases:
  "9":
    project_id: 47e0b4a8-84ba-43a9-bb94-eb99dde4cf14
    gpg_keys: [RPM-GPG-KEY-core]
    repos:
      core-common: {arches: [x86_64, aarch64]}
      core-infra: {arches: [x86_64]}
    compose:
      hashed: true
      keep_versions: 1
    staging: latest
    production: SIG-core-9-20261120.0
"""


def make_dir(tmp_path: Path, sig: str = GOOD_SIG, defaults: str = DEFAULTS) -> Path:
    d = tmp_path / "ds"
    (d / "sigs").mkdir(parents=True)
    (d / "keys").mkdir()
    (d / "keys" / "RPM-GPG-KEY-core").write_text("key\n")
    (d / "defaults.yaml").write_text(defaults)
    (d / "sigs" / "core.yaml").write_text(sig)
    return d


def test_good_spec_loads(tmp_path: Path) -> None:
    spec = load_spec(make_dir(tmp_path))
    rel = spec.release("core", "9")
    assert list(rel.repos) == ["core-common", "core-infra"]
    assert rel.repos["core-infra"].arches == ("x86_64",)
    assert spec.defaults.publish.delete_grace.total_seconds() == 86400
    assert rel.compose.trigger == "upstream"


# (case, text replaced -> replacement, file, line, message fragment)
BAD_SIG_CASES: list[tuple[str, str, str, str, int, str]] = [
    (
        "unknown key",
        "    staging: latest\n",
        "    staging: latest\n    colour: red\n",
        "sigs/core.yaml",
        13,
        "unknown key 'colour'",
    ),
    (
        "unknown nested key",
        "      hashed: true\n",
        "      hashed: true\n      hased: false\n",
        "sigs/core.yaml",
        11,
        "unknown key 'hased'",
    ),
    (
        "bad repo name",
        "      core-infra:",
        "      Core_Infra:",
        "sigs/core.yaml",
        8,
        "invalid name 'Core_Infra'",
    ),
    (
        "path traversal name",
        "      core-infra:",
        "      ../etc:",
        "sigs/core.yaml",
        8,
        "invalid name '../etc'",
    ),
    (
        "unknown arch",
        "core-infra: {arches: [x86_64]}",
        "core-infra: {arches: [x86_64, mips]}",
        "sigs/core.yaml",
        8,
        "unknown arch 'mips'",
    ),
    (
        "arch outside release",
        "core-infra: {arches: [x86_64]}",
        "core-infra: {arches: [x86_64, s390x]}",
        "sigs/core.yaml",
        8,
        "arch 's390x' of repo 'core-infra' is not an arch of release 9",
    ),
    (
        "missing key file that check_signatures needs",
        "[RPM-GPG-KEY-core]\n    repos:\n      core-common: {arches: [x86_64, aarch64]}\n      core-infra: {arches: [x86_64]}\n    compose:\n      hashed: true\n      keep_versions: 1\n",
        "[RPM-GPG-KEY-core, RPM-GPG-KEY-gone]\n    repos:\n      core-common: {arches: [x86_64, aarch64]}\n      core-infra: {arches: [x86_64]}\n    compose:\n      hashed: true\n      keep_versions: 1\n      check_signatures: true\n",
        "sigs/core.yaml",
        5,
        "keys/RPM-GPG-KEY-gone does not exist, and compose.check_signatures is on",
    ),
    (
        "production following latest",
        "    production: SIG-core-9-20261120.0\n",
        "    production: latest\n",
        "sigs/core.yaml",
        13,
        "production cannot follow 'latest'",
    ),
    (
        "signatures off without a reason",
        "    gpg_keys: [RPM-GPG-KEY-core]\n",
        "    gpg_keys: [RPM-GPG-KEY-core]\n    signatures: {check: false}\n",
        "sigs/core.yaml",
        6,
        "signatures.check is off: say why in signatures.reason",
    ),
    (
        "unmanaged pattern that backtracks",
        "sig: core\n",
        "sig: core\npublish: {unmanaged: ['**/a/**/b/**/c']}\n",
        "sigs/core.yaml",
        2,
        "at most two '**' parts",
    ),
    (
        "unmanaged pattern leaving the tree",
        "sig: core\n",
        "sig: core\npublish: {unmanaged: [images, ../etc]}\n",
        "sigs/core.yaml",
        2,
        "no '.' or '..' parts",
    ),
    (
        "duplicate repo",
        "      core-infra: {arches: [x86_64]}\n",
        "      core-infra: {arches: [x86_64]}\n      core-common: {arches: [x86_64]}\n",
        "sigs/core.yaml",
        9,
        "duplicate key 'core-common' (first at line 7)",
    ),
    (
        "bad project id",
        "47e0b4a8-84ba-43a9-bb94-eb99dde4cf14",
        "not-a-uuid",
        "sigs/core.yaml",
        4,
        "invalid project_id",
    ),
    (
        "bad keep_versions",
        "keep_versions: 1",
        "keep_versions: -1",
        "sigs/core.yaml",
        11,
        "greater than or equal to 0",
    ),
    ("string for bool", "hashed: true", "hashed: 'yes'", "sigs/core.yaml", 10, "boolean"),
    (
        "bad production",
        "SIG-core-9-20261120.0",
        "yesterday",
        "sigs/core.yaml",
        13,
        "neither 'latest' nor a compose ID",
    ),
    (
        "production of other sig",
        "SIG-core-9-20261120.0",
        "SIG-cloud-9-20261120.0",
        "sigs/core.yaml",
        13,
        "is not a compose of SIG core release 9",
    ),
    (
        "unknown release",
        '  "9":\n',
        '  "7":\n',
        "sigs/core.yaml",
        3,
        "release '7' is not in defaults.yaml",
    ),
    (
        "malformed yaml",
        "    staging: latest\n",
        "    staging: [latest\n",
        "sigs/core.yaml",
        13,
        "malformed YAML",
    ),
    (
        "bad indentation",
        "    staging: latest\n",
        "   staging: latest\n",
        "sigs/core.yaml",
        12,
        "malformed YAML",
    ),
    (
        "sig name mismatch",
        "sig: core\n",
        "sig: cloud\n",
        "sigs/core.yaml",
        1,
        "does not match file name",
    ),
    (
        "empty repos",
        "    repos:\n      core-common: {arches: [x86_64, aarch64]}\n"
        "      core-infra: {arches: [x86_64]}\n",
        "    repos: {}\n",
        "sigs/core.yaml",
        6,
        "at least 1 item",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "file", "line", "fragment"),
    [c[1:] for c in BAD_SIG_CASES],
    ids=[c[0] for c in BAD_SIG_CASES],
)
def test_bad_sig_is_reported_with_file_and_line(
    tmp_path: Path, old: str, new: str, file: str, line: int, fragment: str
) -> None:
    assert old in GOOD_SIG
    d = make_dir(tmp_path, GOOD_SIG.replace(old, new, 1))
    with pytest.raises(SpecError) as info:
        load_spec(d)
    rendered = [str(i) for i in info.value.issues]
    assert any(r.startswith(f"{file}:{line}: ") and fragment in r for r in rendered), rendered


BAD_DEFAULTS_CASES = [
    ("unknown arch", "[x86_64, aarch64]", "[x86_64, vax]", 4, "unknown arch 'vax'"),
    ("bad url", "https://build.invalid/v1/projects", "ftp://x", 2, "invalid URL"),
    (
        "bad duration",
        "releases:",
        "publish: {delete_grace: soon}\nreleases:",
        3,
        "invalid duration",
    ),
    (
        "bad template",
        "  base_url: https://build.invalid/v1/projects\n",
        "  base_url: https://build.invalid/v1/projects\n  url_template: '{base_url}/{user}'\n",
        3,
        "unknown placeholders",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "line", "fragment"),
    [c[1:] for c in BAD_DEFAULTS_CASES],
    ids=[c[0] for c in BAD_DEFAULTS_CASES],
)
def test_bad_defaults_reported(
    tmp_path: Path, old: str, new: str, line: int, fragment: str
) -> None:
    d = make_dir(tmp_path, defaults=DEFAULTS.replace(old, new, 1))
    with pytest.raises(SpecError) as info:
        load_spec(d)
    rendered = [str(i) for i in info.value.issues]
    assert any(r.startswith(f"defaults.yaml:{line}: ") and fragment in r for r in rendered), (
        rendered
    )


def test_every_error_is_reported_not_only_the_first(tmp_path: Path, cli: Any) -> None:
    bad = (
        GOOD_SIG.replace("core-infra:", "Core_Infra:")
        .replace("[RPM-GPG-KEY-core]", "[RPM-GPG-KEY-core, nope]")
        .replace("    staging: latest\n", "    staging: latest\n    colour: red\n")
    )
    d = make_dir(tmp_path, bad)
    (d / "sigs" / "cloud.yaml").write_text("sig: cloud\nreleases: [\n")
    result = cli("validate", d)
    assert result.code == 1
    lines = result.out.splitlines()
    assert any(f"{d}/sigs/core.yaml:8: " in x and "Core_Infra" in x for x in lines), lines
    assert any(f"{d}/sigs/core.yaml:13: " in x and "colour" in x for x in lines), lines
    assert any(f"{d}/sigs/cloud.yaml:" in x and "malformed YAML" in x for x in lines), lines


def test_validate_exit_codes(tmp_path: Path, cli: Any) -> None:
    good = make_dir(tmp_path)
    assert cli("validate", good).code == 0
    assert cli("validate", tmp_path / "absent").code == 1
    (good / "defaults.yaml").unlink()
    result = cli("validate", good)
    assert result.code == 1
    assert "defaults.yaml" in result.out


def test_integer_release_keys_are_accepted(tmp_path: Path) -> None:
    d = make_dir(tmp_path, GOOD_SIG.replace('  "9":', "  9:"), DEFAULTS.replace('"9"', "9"))
    assert "9" in load_spec(d).sigs["core"].releases


def test_the_real_desired_state_is_valid(cli: Any) -> None:
    result = cli("validate", REPO_ROOT / "desired-state")
    assert result.code == 0, result.out
    spec = load_spec(REPO_ROOT / "desired-state")
    assert set(spec.sigs) == {
        "core",
        "altarch",
        "cloud",
        "desktop",
        "fasttrack",
        "hpc",
        "kernel",
        "security",
        "virt",
    }
    assert spec.release("core", "9").project_id == "47e0b4a8-84ba-43a9-bb94-eb99dde4cf14"
    assert set(spec.sigs["core"].releases) == {"8", "9", "10"}


def test_the_desired_state_folder_can_be_copied_and_broken(tmp_path: Path, cli: Any) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(REPO_ROOT / "desired-state", copy)
    path = copy / "sigs" / "virt.yaml"
    text = path.read_text()
    path.write_text(text.replace("x86_64", "x86-64", 1))
    result = cli("validate", copy)
    assert result.code == 1
    assert "sigs/virt.yaml:" in result.out and "unknown arch 'x86-64'" in result.out
    assert textwrap.dedent(result.out).count("\n") >= 1
