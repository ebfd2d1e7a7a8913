"""The record cache: what it returns is exactly what validation returns, a changed
byte is a miss, invalid input is never cached, and nothing in it can make the
process build anything but a record. A CLI pass on cached input imports neither
PyYAML nor pydantic."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler import recordcache
from reconciler.errors import SpecError
from reconciler.hostconfig import HostConfig
from reconciler.recordcache import (
    ENTRY_MODULES,
    RecordCache,
    code_digest,
    decode,
    digest,
    encode,
    validation_files,
)
from reconciler.specfile import load_host_config, load_spec

from .conftest import DesiredState, Host, write_host_config

PACKAGE = Path(recordcache.__file__).parent


def _entries(cache_dir: Path, kind: str) -> list[Path]:
    return sorted(cache_dir.glob(f"{kind}-*.json"))


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _no_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, validating anything fails the test: what loads came from the cache."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("validated, not taken from the cache")

    monkeypatch.setattr("reconciler.specfile.validate_folder", refuse)
    monkeypatch.setattr("reconciler.documents.validate", refuse)


def test_a_cached_spec_equals_the_validated_one(
    desired_state: DesiredState, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = RecordCache(cache_dir)
    first = load_spec(desired_state.path, cache)
    assert first == load_spec(desired_state.path)  # the same as without a cache
    (entry,) = _entries(cache_dir, "spec")
    assert entry.stat().st_mode & 0o777 == 0o600
    assert cache_dir.stat().st_mode & 0o777 == 0o700
    _no_validation(monkeypatch)
    again = load_spec(desired_state.path, RecordCache(cache_dir))
    assert again == first
    assert isinstance(again.defaults.publish.delete_grace, timedelta)
    assert again.key_files == first.key_files
    rel = again.release("core", "9")
    assert rel.repos["core-common"].arches == ("x86_64", "aarch64")


def test_a_changed_file_is_validated_again(desired_state: DesiredState, cache_dir: Path) -> None:
    cache = RecordCache(cache_dir)
    load_spec(desired_state.path, cache)
    desired_state.write(production="SIG-core-9-20261120.0")
    assert load_spec(desired_state.path, cache).release("core", "9").production == (
        "SIG-core-9-20261120.0"
    )
    assert len(_entries(cache_dir, "spec")) == 2
    (desired_state.path / "keys" / "RPM-GPG-KEY-other").write_text("key")
    assert "RPM-GPG-KEY-other" in load_spec(desired_state.path, cache).key_files


def test_an_invalid_spec_is_never_cached(desired_state: DesiredState, cache_dir: Path) -> None:
    cache = RecordCache(cache_dir)
    desired_state.write(production="yesterday")
    for _ in range(2):  # reported every time, with its line
        with pytest.raises(SpecError, match="neither 'latest' nor a compose ID"):
            load_spec(desired_state.path, cache)
    assert _entries(cache_dir, "spec") == []


def test_a_corrupt_entry_is_a_miss_and_is_rewritten(
    desired_state: DesiredState, cache_dir: Path
) -> None:
    cache = RecordCache(cache_dir)
    spec = load_spec(desired_state.path, cache)
    (entry,) = _entries(cache_dir, "spec")
    for bad in ("", "{not json", json.dumps({"@record": "os.system", "fields": {}})):
        entry.write_text(bad)
        assert load_spec(desired_state.path, RecordCache(cache_dir)) == spec
        assert json.loads(entry.read_text())["@record"] == "reconciler.spec.Spec"


@pytest.mark.parametrize(
    "data",
    [
        {"@record": "subprocess.Popen", "fields": {"args": ["true"]}},
        {"@record": "reconciler.errors.SpecIssue", "fields": {}},  # a dataclass, not a record
        {"@record": "reconciler.spec.RepoSpec", "fields": {"arches": [], "extra": 1}},
        {"@map": [[1, 2]], "@set": []},
        {"anything": 1},
    ],
)
def test_decode_builds_records_only(data: object) -> None:
    with pytest.raises(ValueError):
        decode(data, recordcache._record_classes())


def test_encode_round_trips_every_field_type(host: Host) -> None:
    config = load_host_config(host.config_path)
    assert decode(json.loads(json.dumps(encode(config))), recordcache._record_classes()) == config


def test_a_cache_others_can_write_is_not_used(
    desired_state: DesiredState,
    cache_dir: Path,
    warnings_log: pytest.LogCaptureFixture,
) -> None:
    cache_dir.mkdir()
    cache_dir.chmod(0o777)
    load_spec(desired_state.path, RecordCache(cache_dir))
    assert _entries(cache_dir, "spec") == []
    assert "only it can write" in warnings_log.text


def test_an_unwritable_cache_is_only_a_miss(desired_state: DesiredState, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert load_spec(desired_state.path, RecordCache(blocker / "cache")) == load_spec(
        desired_state.path
    )


def test_the_key_covers_names_bytes_and_code() -> None:
    base = digest("spec", {"a": b"xy", "b": b""})
    assert digest("spec", {"a": b"x", "b": b"y"}) != base  # bytes moved between files
    assert digest("spec", {"a": b"xy", "c": b""}) != base  # a file renamed
    assert digest("hostconfig", {"a": b"xy", "b": b""}) != base


_IMPORTED = """
import importlib, sys
from pathlib import Path
from reconciler.specfile import load_host_config
from reconciler.recordcache import ENTRY_MODULES, RecordCache
from reconciler.specfile import load_spec
for name in ENTRY_MODULES:
    importlib.import_module(f"reconciler.{name}")
desired, config, cache = map(Path, sys.argv[1:])
for c in (None, RecordCache(cache), RecordCache(cache)):  # validated, cached, from the cache
    load_spec(desired, c)
    load_host_config(config, c)
package = Path(sys.modules["reconciler"].__file__).parent
for name, module in sys.modules.items():
    if name.split(".")[0] == "reconciler":
        print(Path(module.__file__).relative_to(package).as_posix())
"""


def test_the_key_covers_every_module_validation_imports(
    desired_state: DesiredState, tmp_path: Path
) -> None:
    """What the import statements say is at least what a process that validates (and
    uses the cache) really imports; modules that only act on the records are not in it."""
    (tmp_path / "host").mkdir()
    config = write_host_config(tmp_path / "host", "http://127.0.0.1:9")
    done = subprocess.run(
        [sys.executable, "-c", _IMPORTED, desired_state.path, config, tmp_path / "cache"],
        env=dict(os.environ, PYTHONPATH=str(PACKAGE.parent)),
        capture_output=True,
        text=True,
        check=True,
    )
    imported = set(done.stdout.split())
    derived = set(validation_files(PACKAGE))
    assert {"spec.py", "hostconfig.py", "errors.py", "__init__.py"} <= imported
    assert imported <= derived, f"imported by validation, not in the key: {imported - derived}"
    assert derived.isdisjoint({"cli.py", "planning.py", "applying.py", "state.py"})
    assert all(name.replace(".", "/") + ".py" in derived for name in ENTRY_MODULES)


def _copy_package(tmp_path: Path) -> Path:
    copy = tmp_path / "pkg" / "reconciler"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "samples"))
    return copy


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + textwrap.dedent(text))


def test_a_module_that_joins_validation_joins_the_key(tmp_path: Path) -> None:
    package = _copy_package(tmp_path)
    assert code_digest(package) == code_digest(PACKAGE)
    base = code_digest(package)
    (package / "wording.py").write_text("import enum\n\nclass Stage(enum.StrEnum):\n    A = 'a'\n")
    assert code_digest(package) == base  # imported by nothing yet: not validation's code
    _append(package / "spec.py", "\nfrom .wording import Stage\n")
    with_import = code_digest(package)
    assert with_import != base
    assert "wording.py" in validation_files(package)
    _append(package / "wording.py", "    B = 'b'\n")
    assert code_digest(package) != with_import  # its bytes are in the key


@pytest.mark.parametrize(
    "importer",
    [
        "from .rules import LIMIT\n",
        "from . import rules\n",
        "import reconciler.rules\n",
        "from reconciler import rules\n",
        "def later() -> None:\n    from .rules import LIMIT\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .rules import LIMIT\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING: from .rules import LIMIT\n",
        "x = 1; from .rules import (\n    LIMIT,  # the limit\n    OTHER,\n)\n",
        "from .rules \\\n    import LIMIT\n",
    ],
)
def test_every_form_of_import_is_followed(tmp_path: Path, importer: str) -> None:
    package = _copy_package(tmp_path)
    (package / "rules.py").write_text("LIMIT = 1\n")
    _append(package / "schema.py", importer)
    assert "rules.py" in validation_files(package)


def test_a_module_that_becomes_a_package_stays_in_the_key(tmp_path: Path) -> None:
    package = _copy_package(tmp_path)
    (package / "names").mkdir()
    (package / "names.py").rename(package / "names" / "__init__.py")
    (package / "names" / "patterns.py").write_text("X = 1\n")
    (package / "names" / "unused.py").write_text("Y = 1\n")
    _append(package / "names" / "__init__.py", "\nfrom .patterns import X\n")
    files = validation_files(package)
    assert {"names/__init__.py", "names/patterns.py"} <= set(files)
    assert "names/unused.py" not in files
    base = code_digest(package)
    _append(package / "names" / "patterns.py", "Z = 2\n")
    assert code_digest(package) != base


def _all_imports(source: bytes) -> list[str]:
    nodes = ast.walk(ast.parse(source))
    return sorted(ast.dump(n) for n in nodes if isinstance(n, ast.Import | ast.ImportFrom))


def test_import_statements_are_read_without_parsing_whole_modules() -> None:
    """The quick reading finds what parsing the whole module finds, in every module here;
    prose that looks like an import is skipped, or makes it parse the module whole."""
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_bytes()
        found = sorted(ast.dump(n) for n in recordcache._imports(source))
        assert found == _all_imports(source), path
    prose = b'"""Taken from the cache, or built.\nimport is slow: from them all\n"""\nimport os\n'
    assert [ast.dump(n) for n in recordcache._imports(prose)] == _all_imports(prose)
    odd = b'"""\nimport x, y and z\n"""\nfrom .a import (b)\n'
    assert [ast.dump(n) for n in recordcache._imports(odd)] == _all_imports(odd)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"RECONCILER_CACHE_DIR": "/c", "HOME": "/h"}, Path("/c")),
        ({"RECONCILER_CACHE_DIR": "", "HOME": "/h"}, None),
        (
            {"CACHE_DIRECTORY": "/var/cache/reconciler:/x", "HOME": "/h"},
            Path("/var/cache/reconciler"),
        ),
        ({"XDG_CACHE_HOME": "/x", "HOME": "/h"}, Path("/x/reconciler")),
        ({"HOME": "/h"}, Path("/h/.cache/reconciler")),
        ({}, None),
    ],
)
def test_where_the_cache_lives(environ: dict[str, str], expected: Path | None) -> None:
    assert RecordCache.from_environment(environ).directory == expected


_PROBE = """
import sys
from reconciler.cli import main
code = main(sys.argv[1:])
print(sorted(set(sys.modules) & {"pydantic.type_adapter", "pydantic_core", "yaml"}))
sys.exit(code)
"""


def test_a_pass_on_cached_input_imports_neither_yaml_nor_pydantic(
    host: Host, desired_state: DesiredState, cache_dir: Path
) -> None:
    env = dict(os.environ, RECONCILER_CACHE_DIR=str(cache_dir))
    paths = ["--config", str(host.config_path), "--desired-state", str(desired_state.path)]

    def probe(command: str, code: int) -> str:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, command, *paths],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == code, done.stdout + done.stderr
        return done.stdout.strip().splitlines()[-1]

    # the first pass validates, building the validators with pydantic; it composes and
    # stages, so the plans below make no compose (whose package diff reads the upstream's
    # metadata, modules.yaml too: that needs PyYAML, whatever the cache holds)
    assert probe("apply", 0) == "['pydantic.type_adapter', 'pydantic_core', 'yaml']"
    assert len(_entries(cache_dir, "spec")) == len(_entries(cache_dir, "hostconfig")) == 1
    assert probe("plan", 0) == "[]"
    desired_state.write(staging=None)
    # a changed desired state (staging no longer managed: nothing to do) is validated again
    assert probe("plan", 0) == "['pydantic.type_adapter', 'pydantic_core', 'yaml']"
    assert len(_entries(cache_dir, "spec")) == 2


def test_host_config_from_the_cache_equals_the_loaded_one(
    host: Host, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_host_config(host.config_path, RecordCache(cache_dir))
    assert first == load_host_config(host.config_path)
    _no_validation(monkeypatch)
    again = load_host_config(host.config_path, RecordCache(cache_dir))
    assert isinstance(again, HostConfig)
    assert again == first
    assert isinstance(again.roots.compose, Path)


def test_old_entries_are_pruned_by_kind(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recordcache, "KEEP", 2)
    cache = RecordCache(cache_dir)
    cache_dir.mkdir(mode=0o700)
    for i in range(3):
        entry = cache_dir / f"spec-{i}.json"
        entry.write_bytes(b"{}")
        os.utime(entry, ns=(i * 10**9, i * 10**9))
    (cache_dir / "hostconfig-0.json").write_bytes(b"{}")
    cache._prune("spec")
    assert sorted(p.name for p in cache_dir.iterdir()) == [
        "hostconfig-0.json",
        "spec-1.json",
        "spec-2.json",
    ]


def test_an_empty_cache_dir_variable_turns_the_cache_off(
    desired_state: DesiredState, host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``RECONCILER_CACHE_DIR=`` (documented: empty turns the cache off) crashed with an
    AssertionError when a record was stored."""
    from reconciler.cli import main

    monkeypatch.setenv("RECONCILER_CACHE_DIR", "")
    off = RecordCache.from_environment()
    assert off.directory is None
    spec = load_spec(desired_state.path, off)  # validated, then "stored": nothing happens
    assert load_spec(desired_state.path, off) == spec
    args = ["plan", "--config", str(host.config_path), "--desired-state", str(desired_state.path)]
    assert main(args) == 2
