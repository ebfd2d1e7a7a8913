"""The shape of the package, checked: layers, module sizes, repositories, vocabulary.

docs/architecture.md describes the layers; ``.importlinter`` writes them down.
"""

from __future__ import annotations

import ast
import inspect
import shutil
import subprocess
from pathlib import Path

import pytest

import reconciler
from reconciler import state, vocabulary

PACKAGE = Path(reconciler.__file__).parent
ROOT = PACKAGE.parent
MAX_MODULE_LINES = 450
MAX_PUBLIC_METHODS = 15


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_layer_contracts_hold() -> None:
    lint = shutil.which("lint-imports")
    assert lint is not None, "import-linter is a test dependency"
    done = subprocess.run(
        [lint, "--config", str(ROOT / ".importlinter"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize("module", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_longer_than_one_reading(module: Path) -> None:
    lines = len(module.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module.relative_to(ROOT)} has {lines} lines"


@pytest.mark.parametrize(
    "repository",
    [
        state.History,
        state.Targets,
        state.Inventory,
        state.PendingDeletions,
        state.Sources,
        state.Mirrors,
        state.Leases,
        state.Jobs,
    ],
    ids=lambda c: c.__name__,
)
def test_each_state_repository_is_small(repository: type) -> None:
    public = [
        name
        for name, member in inspect.getmembers(repository)
        if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, property))
    ]
    assert len(public) < MAX_PUBLIC_METHODS, f"{repository.__name__}: {public}"


def _vocabulary_values() -> set[str]:
    values: set[str] = set()
    for enum in (
        vocabulary.Stage,
        vocabulary.ComposeStatus,
        vocabulary.TargetState,
        vocabulary.Result,
        vocabulary.DriftKind,
    ):
        values.update(member.value for member in enum)
    return values


def test_states_and_results_are_never_compared_as_strings() -> None:
    """A state or result spelled as a string literal in a comparison (``== "ok"``,
    ``in {"Blocked", ...}``) bypasses the vocabulary; every one goes through it."""
    words = _vocabulary_values()
    found = []
    for module in _modules():
        if module.name == "vocabulary.py" or "testing" in module.parts:
            continue
        for node in ast.walk(ast.parse(module.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            for operand in [node.left, *node.comparators]:
                items = (
                    operand.elts
                    if isinstance(operand, ast.Set | ast.Tuple | ast.List)
                    else [operand]
                )
                for item in items:
                    if isinstance(item, ast.Constant) and item.value in words:
                        found.append(f"{module.relative_to(ROOT)}:{node.lineno}: {item.value!r}")
    assert not found, found
