"""Read a desired-state folder into a :class:`~reconciler.spec.Spec`.

Every problem is collected (not only the first) and reported with its file and
line: YAML syntax errors, duplicate keys (PyYAML would silently keep the last),
schema errors from pydantic, and the cross-file checks of :mod:`reconciler.spec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import SpecError, SpecIssue
from .spec import Defaults, SigSpec, Spec, cross_check

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass
class _Document:
    """One parsed YAML file: its data and the line of every key and item."""

    path: Path
    data: Any = None
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int | None:
        for end in range(len(loc), -1, -1):
            line = self.lines.get(loc[:end])
            if line is not None:
                return line
        return None


def _key_text(node: yaml.Node) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else "<complex key>"


def _walk(node: yaml.Node, loc: Loc, doc: _Document, issues: list[SpecIssue], name: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = _key_text(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                issues.append(
                    SpecIssue(name, line, f"duplicate key {key!r} (first at line {seen[key]})")
                )
                continue
            seen[key] = line
            doc.lines[(*loc, key)] = line
            _walk(value_node, (*loc, key), doc, issues, name)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            doc.lines[(*loc, i)] = item.start_mark.line + 1
            _walk(item, (*loc, i), doc, issues, name)


def _stringify_keys(data: Any) -> Any:
    if isinstance(data, dict):
        return {str(k) if isinstance(k, int) else k: _stringify_keys(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_stringify_keys(v) for v in data]
    return data


def _read_yaml(path: Path, name: str, issues: list[SpecIssue]) -> _Document | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        issues.append(SpecIssue(name, None, f"cannot read: {exc}"))
        return None
    doc = _Document(path)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            issues.append(SpecIssue(name, 1, "file is empty"))
            return None
        _walk(node, (), doc, issues, name)
        doc.data = _stringify_keys(loader.construct_document(node))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        issues.append(SpecIssue(name, line, f"malformed YAML: {exc.problem or exc}"))
        return None
    except yaml.YAMLError as exc:
        issues.append(SpecIssue(name, None, f"malformed YAML: {exc}"))
        return None
    finally:
        loader.dispose()
    if not isinstance(doc.data, dict):
        issues.append(SpecIssue(name, 1, "expected a mapping at the top level"))
        return None
    return doc


def _message(err: Any) -> str:
    loc = [str(p) for p in err["loc"] if p != "[key]"]
    where = ".".join(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key {loc[-1]!r}" + (f" in {'.'.join(loc[:-1])}" if len(loc) > 1 else "")
    if kind == "missing":
        return f"missing required key {where!r}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


def _validate(model: type[M], doc: _Document, name: str, issues: list[SpecIssue]) -> M | None:
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        for err in exc.errors():
            loc: Loc = tuple(p for p in err["loc"] if p != "[key]")
            issues.append(SpecIssue(name, doc.line_of(loc), _message(err)))
        return None


def load_model(path: Path, model: type[M], display: str | None = None) -> M:
    """Read one YAML file into ``model``; raise :class:`SpecError` with file:line issues."""
    issues: list[SpecIssue] = []
    name = display or str(path)
    doc = _read_yaml(path, name, issues)
    result = _validate(model, doc, name, issues) if doc is not None else None
    if issues or result is None:
        raise SpecError(issues or [SpecIssue(name, None, "invalid")])
    return result


def load_spec(directory: Path) -> Spec:
    """Load and check a desired-state folder; raise :class:`SpecError` listing every issue."""
    issues: list[SpecIssue] = []
    if not directory.is_dir():
        raise SpecError([SpecIssue(str(directory), None, "not a directory")])

    defaults: Defaults | None = None
    doc = _read_yaml(directory / "defaults.yaml", "defaults.yaml", issues)
    if doc is not None:
        defaults = _validate(Defaults, doc, "defaults.yaml", issues)

    sigs: dict[str, SigSpec] = {}
    sig_docs: dict[str, tuple[str, _Document]] = {}
    sig_dir = directory / "sigs"
    if not sig_dir.is_dir():
        issues.append(SpecIssue("sigs/", None, "missing folder of SIG definitions"))
    else:
        for path in sorted(sig_dir.iterdir()):
            rel = f"sigs/{path.name}"
            if path.suffix == ".yml":
                issues.append(SpecIssue(rel, None, "SIG files end in .yaml"))
                continue
            if path.suffix != ".yaml" or path.name.startswith("."):
                continue
            sig_doc = _read_yaml(path, rel, issues)
            if sig_doc is None:
                continue
            sig = _validate(SigSpec, sig_doc, rel, issues)
            if sig is not None:
                sigs[path.stem] = sig
                sig_docs[path.stem] = (rel, sig_doc)

    key_dir = directory / "keys"
    key_files = (
        frozenset(
            p.name
            for p in key_dir.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix != ".md"
        )
        if key_dir.is_dir()
        else frozenset()
    )

    if defaults is not None:
        for problem in cross_check(defaults, sigs, key_files):
            rel, sdoc = sig_docs[problem.source]
            issues.append(SpecIssue(rel, sdoc.line_of(problem.loc), problem.message))

    if issues or defaults is None:
        raise SpecError(issues or [SpecIssue("defaults.yaml", None, "missing")])
    return Spec(defaults=defaults, sigs=sigs, key_files=key_files)
