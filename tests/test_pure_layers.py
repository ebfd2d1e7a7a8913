"""The pure decisions of a compose and a publish stay pure (DESIGN.md section 3): they
import only the vocabulary, names, errors, layouts and records, and do no file I/O."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import reconciler

PACKAGE = Path(reconciler.__file__).parent
PURE = ["placement", "changeset", "composefiles", "selection"]
ALLOWED = {"vocabulary", "names", "errors", "layout", "selection", "composefiles"}
STDLIB = {"__future__", "collections", "dataclasses", "functools", "pathlib", "re", "typing"}
#: Methods that touch the filesystem (pathlib's, os's).
IO_CALLS = {
    "open", "read_text", "read_bytes", "write_text", "write_bytes", "stat", "lstat", "mkdir",
    "unlink", "rename", "replace", "iterdir", "glob", "rglob", "exists", "is_file", "is_dir",
    "is_symlink", "resolve", "touch", "walk", "scandir", "link", "symlink_to",
}  # fmt: skip


def _imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in NAMES_FROM:
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


#: Modules of which a pure module may import only these names: ``sys.intern`` shares the
#: strings of 100,000 packages' facts (no I/O); the rest of ``sys`` is the process's.
NAMES_FROM = {"sys": {"intern"}}


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_only_the_layers_below(module: str) -> None:
    for name in _imports(module):
        top, _, attr = name.partition(".")
        if top in NAMES_FROM:
            assert attr in NAMES_FROM[top], f"{module} imports {name}"
        elif name.startswith("."):
            assert name[1:] in ALLOWED, f"{module} imports {name}"
        else:
            assert name.split(".")[0] in STDLIB, f"{module} imports {name}"


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_call_nothing_that_touches_files(module: str) -> None:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    calls = [node.func for node in ast.walk(tree) if isinstance(node, ast.Call)]
    methods = {f.attr for f in calls if isinstance(f, ast.Attribute)}
    assert not methods & IO_CALLS, f"{module} calls {sorted(methods & IO_CALLS)}"
    assert not any(isinstance(f, ast.Name) and f.id == "open" for f in calls)


def test_importing_the_pure_modules_loads_no_effectful_module() -> None:
    code = (
        "import sys\n"
        + "".join(f"import reconciler.{m}\n" for m in PURE)
        + "print(' '.join(sorted(m for m in sys.modules if m.startswith(('reconciler', "
        "'createrepo_c', 'sqlite3', 'yaml', 'pydantic')))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert set(out) == {"reconciler", *(f"reconciler.{m}" for m in {*PURE, *ALLOWED})}
