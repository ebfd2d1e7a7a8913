"""YAML documents into validated records, with the file and line of every problem.

The slow path of :mod:`reconciler.specfile`: it imports PyYAML and pydantic_core,
which a pass whose files are in the record cache never needs, and pydantic to build
each record's validator (once per process). Every problem is collected, not only the
first: YAML syntax errors, duplicate keys (PyYAML would silently keep the last), and
the rules of the records (:mod:`reconciler.schema`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import yaml
from pydantic_core import SchemaValidator, ValidationError

from .errors import SpecIssue
from .schema import Record

#: pydantic's error type for a required field that is absent.
_PYDANTIC_MISSING = "missing"

Loc = tuple[str | int, ...]
R = TypeVar("R", bound=Record)


@dataclass
class Document:
    """One parsed YAML file: its data and the line of every key and item."""

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


def _walk(node: yaml.Node, loc: Loc, doc: Document, issues: list[SpecIssue], name: str) -> None:
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


def read_yaml(raw: bytes, name: str, issues: list[SpecIssue]) -> Document | None:
    """Parse one file's bytes; problems go to ``issues`` with their line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        issues.append(SpecIssue(name, None, f"cannot read: {exc}"))
        return None
    doc = Document()
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
    if kind == "unexpected_keyword_argument":  # a key the record has no field for
        return f"unknown key {loc[-1]!r}" + (f" in {'.'.join(loc[:-1])}" if len(loc) > 1 else "")
    if kind == _PYDANTIC_MISSING:
        return f"missing required key {where!r}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


_VALIDATORS: dict[type[Record], SchemaValidator] = {}


def _validator(record: type[Record]) -> SchemaValidator:
    """A record's validator, built once per process."""
    validator = _VALIDATORS.get(record)
    if validator is None:
        from pydantic import TypeAdapter  # tens of milliseconds of imports and building

        validator = _VALIDATORS[record] = cast("SchemaValidator", TypeAdapter(record).validator)
    return validator


def validate(record: type[R], doc: Document, name: str, issues: list[SpecIssue]) -> R | None:
    """``doc`` as a ``record``, or ``None`` with every problem in ``issues``."""
    try:
        value = _validator(record).validate_python(doc.data)
    except ValidationError as exc:
        for err in exc.errors():
            loc: Loc = tuple(p for p in err["loc"] if p != "[key]")
            issues.append(SpecIssue(name, doc.line_of(loc), _message(err)))
        return None
    assert isinstance(value, record)
    return value
