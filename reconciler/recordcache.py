"""A cache of validated records, addressed by the bytes they were validated from.

Validating the desired state and the host config needs PyYAML and pydantic, which
take longer to import than a publish after a small change takes to do. A pass whose
files did not change since the last pass takes the records from here instead: the
key is a digest of the input files and of the code that validates them
(:func:`code_digest`), so an entry is either exactly what validation would return or
absent. Only valid inputs are stored; an invalid file is validated, and reported,
every time.

The code in the key is derived, not listed: the modules that decide what a valid
record is (:data:`ENTRY_MODULES`) and every module of the package they import, at
any depth, found by parsing their import statements (:func:`validation_files`). A
module that joins validation is in the key as soon as one of them imports it.

Entries are JSON. Each record is written with its class name, and only subclasses
of :class:`~reconciler.schema.Record` can be rebuilt, so an entry cannot make this
process build anything else. The directory must belong to this user and be writable
by nobody else (like ``~/.ssh``): an entry is trusted as if it had been validated.

Where: ``$RECONCILER_CACHE_DIR`` (empty turns the cache off), else systemd's
``$CACHE_DIRECTORY`` (``CacheDirectory=`` in the unit), else
``$XDG_CACHE_HOME/reconciler``, else ``~/.cache/reconciler``. Any problem with the
cache (unwritable, corrupt entry, a foreign owner) only means a miss.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import logging
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from functools import cache
from pathlib import Path, PurePath
from typing import Any, Final, TypeVar

from .fsutil import tmp_name
from .schema import Record

log = logging.getLogger(__name__)

#: The modules whose code decides what a record is and what is valid (names relative to
#: the package). They, and every module of the package they import, are in every key.
ENTRY_MODULES: Final = (
    "names",
    "schema",
    "spec",
    "hostconfig",
    "specfile",
    "documents",
    "recordcache",
)
#: Entries kept per kind; the oldest beyond this are removed when one is added.
KEEP: Final = 16

R = TypeVar("R", bound=Record)


# --- the key: the input bytes and the validating code ---------------------------------

#: Where an import statement may be, and all of it: at the start of a line (the source is
#: searched with a newline before it) or after a ``;`` or ``:`` on that line, with its
#: continuation (a parenthesized list of names, or backslashed lines). Prose is left out:
#: after ``from x`` a statement has ``import``; after ``import x`` only ``as``, a comma,
#: ``;``, ``#`` or a backslash.
_IMPORT_STATEMENT: Final = re.compile(
    rb"""
    [\n;:] [ \t]*
    (?! from [ \t]+ (?![\w.]*\bimport\b) [\w.]+ [ \t]+ (?!import\b) [^\s\\] )
    (?! import [ \t]+ [\w.]+ [ \t]+ (?!as\b) [^\s\\\#;,] )
    (
        (?:from|import) [ \t.\\]
        (?: [^\n(\\] | \\\r?\n )*
        (?: \( [^)]* \) )?
        [^\n]*
    )
    """,
    re.VERBOSE,
)


def _imports(source: bytes) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of a module, wherever it is: at the top, in a function,
    under ``if TYPE_CHECKING:``.

    Parsing whole modules would cost milliseconds on every pass, so only the statements
    :data:`_IMPORT_STATEMENT` finds are parsed, as one small module. If they are not all
    Python (a docstring line such as "import x, y and z"), the module is parsed whole.
    """
    statements = b"\n".join(m[1] for m in _IMPORT_STATEMENT.finditer(b"\n" + source))
    try:
        nodes: Iterable[ast.AST] = ast.parse(statements).body
    except (SyntaxError, ValueError):
        try:
            nodes = ast.walk(ast.parse(source))
        except (SyntaxError, ValueError):  # a module Python cannot import imports nothing
            return []
    return [node for node in nodes if isinstance(node, ast.Import | ast.ImportFrom)]


def _module_file(package_dir: Path, module: tuple[str, ...]) -> str | None:
    """The path, relative to ``package_dir``, of a module (``()`` is the package)."""
    base = "/".join(module)
    for rel in (f"{base}.py", f"{base}/__init__.py") if module else ("__init__.py",):
        if (package_dir / rel).is_file():
            return rel
    return None


def _imported(
    node: ast.Import | ast.ImportFrom, package: str, current: tuple[str, ...]
) -> Iterable[tuple[str, ...]]:
    """The modules of ``package`` that ``node`` may import (some may not exist), in the
    module whose package is ``current``."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            top, *rest = alias.name.split(".")
            if top == package:
                yield tuple(rest)
        return
    if node.level == 0:  # from reconciler.x import y
        top, *rest = (node.module or "").split(".")
        if top != package:
            return
        module = tuple(rest)
    elif node.level - 1 > len(current):  # above the package
        return
    else:  # from .x import y, from . import x, from ..x.y import z
        base = current[: len(current) - (node.level - 1)]
        module = base + tuple(node.module.split(".")) if node.module else base
    yield module
    for alias in node.names:  # each may be a submodule rather than a name
        if alias.name != "*":
            yield (*module, alias.name)


def validation_files(package_dir: Path, entries: Iterable[str] = ENTRY_MODULES) -> dict[str, bytes]:
    """The modules ``entries`` and every module of the package they import, transitively:
    their paths relative to ``package_dir`` (``spec.py``, ``foo/__init__.py``) and bytes.

    The imports are read from the source, never run; every import counts, wherever it
    is, including those only a type checker sees. Importing a module runs its packages'
    ``__init__.py``, so those count too.
    """
    package = package_dir.name
    found: dict[str, bytes] = {}
    seen: set[tuple[str, ...]] = set()
    todo = [tuple(name.split(".")) for name in entries]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        rel = _module_file(package_dir, module)
        if rel is None:  # a name, not a module, or outside the package
            continue
        source = found[rel] = (package_dir / rel).read_bytes()
        todo.extend(module[:i] for i in range(len(module)))  # the enclosing packages
        current = module if rel.split("/")[-1] == "__init__.py" else module[:-1]
        for node in _imports(source):
            todo.extend(_imported(node, package, current))
    return found


def code_digest(package_dir: Path) -> bytes:
    """The digest of the validating code in ``package_dir`` (:func:`validation_files`)."""
    h = hashlib.sha256()
    for rel, content in sorted(validation_files(package_dir).items()):
        h.update(f"{len(rel)}:{rel}:{len(content)}:".encode())
        h.update(content)
    return h.digest()


@cache
def _code_digest() -> bytes:
    return code_digest(Path(__file__).parent)


def digest(kind: str, parts: Mapping[str, bytes]) -> str:
    """The key of ``parts`` (name -> content): every name and byte counts, and the code."""
    h = hashlib.sha256(_code_digest())
    h.update(kind.encode() + b"\0")
    for name in sorted(parts):
        content = parts[name]
        h.update(f"{len(name)}:{name}:{len(content)}:".encode())
        h.update(content)
    return h.hexdigest()


# --- the codec: records <-> JSON ------------------------------------------------------


def _record_classes() -> dict[str, type[Record]]:
    found: dict[str, type[Record]] = {}
    todo: list[type[Record]] = [Record]
    while todo:
        cls = todo.pop()
        if dataclasses.is_dataclass(cls):
            found[f"{cls.__module__}.{cls.__qualname__}"] = cls
        todo.extend(cls.__subclasses__())
    return found


def encode(value: object) -> Any:
    """A JSON value for ``value``: records, mappings, tuples, frozensets, paths, durations."""
    if isinstance(value, Record) and dataclasses.is_dataclass(value):
        cls = type(value)
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"@record": f"{cls.__module__}.{cls.__qualname__}", "fields": fields}
    if value is None or isinstance(value, str | int | float):  # bool is an int
        return value
    if isinstance(value, tuple):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {"@map": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, frozenset):
        return {"@set": sorted(encode(v) for v in value)}
    if isinstance(value, PurePath):
        return {"@path": str(value)}
    if isinstance(value, timedelta):
        return {"@seconds": value.total_seconds()}
    raise TypeError(f"cannot cache a {type(value).__name__}")


def decode(data: Any, classes: Mapping[str, type[Record]]) -> Any:
    """The inverse of :func:`encode`; ``ValueError`` on anything it did not write."""
    if data is None or isinstance(data, str | int | float):
        return data
    if isinstance(data, list):
        return tuple(decode(v, classes) for v in data)
    if not isinstance(data, dict):
        raise ValueError(f"not a cached value: {str(data)[:60]!r}")
    if data.keys() == {"@record", "fields"} and isinstance(data["fields"], dict):
        cls = classes.get(data["@record"])
        if cls is None:
            raise ValueError(f"not a record: {data['@record']!r}")
        try:
            return cls(**{k: decode(v, classes) for k, v in data["fields"].items()})
        except TypeError as exc:  # the fields of another version of the class
            raise ValueError(str(exc)) from exc
    if len(data) == 1:
        ((tag, value),) = data.items()
        if tag == "@map" and isinstance(value, list):
            pairs = [decode(pair, classes) for pair in value]
            if not all(len(pair) == 2 for pair in pairs):
                raise ValueError("a map entry is not a pair")
            return dict(pairs)
        if tag == "@set" and isinstance(value, list):
            return frozenset(decode(v, classes) for v in value)
        if tag == "@path" and isinstance(value, str):
            return Path(value)
        if tag == "@seconds" and isinstance(value, int | float):
            return timedelta(seconds=value)
    raise ValueError(f"not a cached value: {str(data)[:60]!r}")


# --- the store ------------------------------------------------------------------------


class RecordCache:
    """Validated records on disk, by digest. ``RecordCache(None)`` caches nothing."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._usable: bool | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> RecordCache:
        explicit = environ.get("RECONCILER_CACHE_DIR")
        if explicit is not None:
            return cls(Path(explicit) if explicit else None)
        if environ.get("CACHE_DIRECTORY"):  # systemd CacheDirectory=; may list several
            return cls(Path(environ["CACHE_DIRECTORY"].split(":")[0]))
        base = environ.get("XDG_CACHE_HOME") or (
            str(Path(environ["HOME"]) / ".cache") if environ.get("HOME") else ""
        )
        return cls(Path(base) / "reconciler" if base else None)

    def _ready(self, create: bool) -> bool:
        """The directory exists (or was made), is ours, and only we can write it."""
        if self.directory is None or self._usable is False:
            return False
        if self._usable:
            return True
        try:
            if create:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = self.directory.lstat()
        except OSError:
            return False  # absent (for a read) or not creatable: a miss, nothing else
        ok = (
            stat.S_ISDIR(st.st_mode)
            and st.st_uid == os.geteuid()
            and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        )
        if not ok:
            log.warning(
                "record cache %s is not a directory of this user that only it can write; "
                "not using it",
                self.directory,
            )
        self._usable = ok
        return ok

    def _entry(self, kind: str, key: str, suffix: str = ".json") -> Path:
        assert self.directory is not None
        return self.directory / f"{kind}-{key}{suffix}"

    def get(self, kind: str, key: str, expect: type[R]) -> R | None:
        """The ``expect`` record stored under ``key``, or ``None``."""
        if not self._ready(create=False):
            return None
        try:
            raw = self._entry(kind, key).read_bytes()
        except OSError:
            return None
        try:
            value = decode(json.loads(raw), _record_classes())
        except (ValueError, TypeError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            log.debug("record cache entry %s-%s unreadable: %s", kind, key, exc)
            return None
        return value if isinstance(value, expect) else None

    def get_or_build(
        self, kind: str, parts: Mapping[str, bytes], expect: type[R], build: Callable[[], R]
    ) -> R:
        """The ``expect`` record of ``parts`` (see :func:`digest`): from the cache, else
        ``build()`` (which validates; it raises on invalid input) and cache the result."""
        key = digest(kind, parts)
        cached = self.get(kind, key, expect)
        if cached is not None:
            return cached
        record = build()
        self.put(kind, key, record)
        return record

    def put(self, kind: str, key: str, record: Record) -> None:
        """Store ``record`` under ``key``; a cache that is off or cannot be written is skipped."""
        if not self._ready(create=True):  # also when off (no directory): nothing to write
            return
        self._write(kind, self._entry(kind, key), json.dumps(encode(record)).encode())

    def _write(self, kind: str, entry: Path, raw: bytes) -> None:
        tmp = tmp_name(entry)
        try:
            # no fsync: an entry lost or torn in a crash is a miss, not a wrong answer
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(raw)
            tmp.replace(entry)
            self._prune(kind)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.debug("record cache %s not written: %s", self.directory, exc)

    def _prune(self, kind: str) -> None:
        assert self.directory is not None
        entries = sorted(self.directory.glob(f"{kind}-*"), key=lambda p: p.stat().st_mtime_ns)
        for old in entries[:-KEEP]:
            old.unlink(missing_ok=True)
