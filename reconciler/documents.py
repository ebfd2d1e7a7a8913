"""YAML documents into validated records, with the file and line of every problem.

The slow path of :mod:`reconciler.specfile`: it imports PyYAML and pydantic_core,
which a pass whose files are in the record cache never needs, and pydantic to build
each record's validator (once per process). Every problem is collected, not only the
first: YAML syntax errors, duplicate keys (PyYAML would silently keep the last), and
the rules of the records (:mod:`reconciler.schema`).

A document is built in bounded time and memory whatever its bytes (the file's size is
capped before it is read, :data:`reconciler.specfile.MAX_FILE_BYTES`): an alias inside
the value its anchor names (``x: &r {y: *r}``) is refused, as are values nested more
than :data:`MAX_DEPTH` deep and documents holding more than :data:`MAX_VALUES` values,
each alias counted as the values it stands for (nine levels of nine aliases, a
"billion laughs", stand for 9**9). Only the plain YAML types are built (no ``!!set``,
``!!omap``, ``!!pairs``, ``!!binary``), and a value PyYAML cannot build (``!!int x``,
``2024-13-45``, an integer of 5,000 digits) is an error at its line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, TypeVar, cast

import yaml
from pydantic_core import SchemaValidator, ValidationError

from .errors import SpecIssue
from .schema import Record

#: pydantic's error type for a required field that is absent.
_PYDANTIC_MISSING = "missing"
#: Values may be nested this deep (the schema needs six levels).
MAX_DEPTH: Final = 64
#: Values a document may hold, an alias counting as every value it stands for (the real
#: SIG files hold a few hundred).
MAX_VALUES: Final = 100_000
#: Longest message reported for one problem (a message may quote a value).
_MAX_MESSAGE: Final = 300
#: What YAML counts as a line break (PyYAML's marks count lines the same way).
_LINE_BREAK: Final = re.compile("\r\n|[\n\r\x85\u2028\u2029]")
#: The tags PyYAML's safe loader builds that no record has a use for.
_UNUSED_TAGS: Final = frozenset(
    f"tag:yaml.org,2002:{kind}" for kind in ("set", "omap", "pairs", "binary")
)

Loc = tuple[str | int, ...]
R = TypeVar("R", bound=Record)


class _Refused(yaml.MarkedYAMLError):
    """A document that is not built; ``problem`` says why, ``problem_mark`` where."""

    def __init__(self, problem: str, mark: yaml.Mark | None) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, bounded: see the module's docstring."""

    yaml_constructors: ClassVar[dict[str | None, Any]] = {
        tag: build
        for tag, build in yaml.SafeLoader.yaml_constructors.items()
        if tag not in _UNUSED_TAGS
    }

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0
        self._values = 0
        self._open: set[str] = set()  # anchors whose value is being composed
        self._sizes: dict[str, int] = {}  # values each finished anchor stands for

    def _count(self, values: int, mark: yaml.Mark | None) -> None:
        self._values += values
        if self._values > MAX_VALUES:
            raise _Refused(
                f"more than {MAX_VALUES} values (an alias counts as all the values it stands for)",
                mark,
            )

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        mark = event.start_mark
        if isinstance(event, yaml.AliasEvent):
            alias = str(event.anchor)
            if alias in self._open:
                raise _Refused(
                    f"recursive alias *{alias}: it is inside the value of &{alias}", mark
                )
            self._count(self._sizes.get(alias, 0), mark)
            return super().compose_node(parent, index)
        anchor: str | None = getattr(event, "anchor", None)
        if anchor is not None and anchor in self.anchors:
            first = self.anchors[anchor].start_mark.line + 1
            raise _Refused(f"anchor &{anchor} is defined twice (first at line {first})", mark)
        if self._depth >= MAX_DEPTH:
            raise _Refused(f"values nested more than {MAX_DEPTH} levels deep", mark)
        before = self._values
        if anchor is not None:
            self._open.add(anchor)
        self._depth += 1
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._count(1, mark)
        if anchor is not None:
            self._open.discard(anchor)
            self._sizes[anchor] = self._values - before
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as exc:  # not a YAMLError: a bad value
            kind = str(node.tag).rpartition(":")[2]
            raise _Refused(f"cannot read this {kind}: {exc}", node.start_mark) from exc


def _line_at(text: str, index: int) -> int:
    """The line (from 1) of ``text[index]``."""
    return 1 + len(_LINE_BREAK.findall(text, 0, index))


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
        before = raw[: exc.start].decode("utf-8")  # the first bad byte is at exc.start
        line = _line_at(before, len(before))
        issues.append(
            SpecIssue(name, line, f"not UTF-8: byte {raw[exc.start]:#04x} ({exc.reason})")
        )
        return None
    doc = Document()
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # refuses control characters at once
        node = loader.get_single_node()
        if node is None:
            issues.append(SpecIssue(name, 1, "file is empty"))
            return None
        doc.lines[()] = node.start_mark.line + 1
        _walk(node, (), doc, issues, name)
        doc.data = _stringify_keys(loader.construct_document(node))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = (
            str(exc.problem)
            if isinstance(exc, _Refused)
            else f"malformed YAML: {exc.problem or exc}"
        )
        issues.append(SpecIssue(name, mark.line + 1 if mark else 1, _short(message)))
        return None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        at = _line_at(text, exc.position)
        issues.append(
            SpecIssue(name, at, f"malformed YAML: character {exc.character:#x} ({exc.reason})")
        )
        return None
    except yaml.YAMLError as exc:
        issues.append(SpecIssue(name, 1, _short(f"malformed YAML: {exc}")))
        return None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(doc.data, dict):
        issues.append(SpecIssue(name, doc.lines[()], "expected a mapping at the top level"))
        return None
    return doc


def _short(message: str) -> str:
    """One line, of a readable length (a message may quote a long value)."""
    message = _LINE_BREAK.sub(" ", message)
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 3] + "..."


def _shown(part: str | int) -> str:
    """A key in a location: as it is, or quoted when it would not read as one."""
    text = str(part)
    return text if text and text.isprintable() and text.strip() == text else repr(text)


def _message(err: Any) -> str:
    parts = [p for p in err["loc"] if p != "[key]"]
    where = ".".join(_shown(p) for p in parts)
    kind = err["type"]
    if kind == "unexpected_keyword_argument" and parts:  # a key the record has no field for
        inside = f" in {'.'.join(_shown(p) for p in parts[:-1])}" if len(parts) > 1 else ""
        return _short(f"unknown key {str(parts[-1])!r}{inside}")
    if kind == _PYDANTIC_MISSING:
        return _short(f"missing required key {where!r}")
    msg = str(err["msg"]).removeprefix("Value error, ")
    return _short(f"{where}: {msg}" if where else msg)


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
