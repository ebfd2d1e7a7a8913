"""``publish.unmanaged`` patterns, matched against paths inside a SIG's published
directory. Pure: no I/O.

A pattern is a relative path whose parts may hold ``*`` (any run of characters within
one part), ``?`` (one character), ``[...]`` (a set, ``[!...]`` its complement) and
``**`` as a whole part (any number of parts, none included). A pattern matches a path
when it matches the path itself or one of its parent directories: ``images`` covers
everything under ``images/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field


def _part(part: str) -> str:
    """The regular expression of one path part of a pattern."""
    out: list[str] = []
    i = 0
    while i < len(part):
        c = part[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and (end := part.find("]", i + 2)) != -1:
            body = part[i + 1 : end]
            negate = body.startswith("!")
            chars = re.escape(body[1:] if negate else body).replace("\\-", "-")
            out.append(f"[^/{chars}]" if negate else f"[{chars}]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """``pattern`` as a regular expression over a whole relative path (or a parent's)."""
    parts = pattern.split("/")
    below = parts[-1] == "**"  # a trailing ** is anything strictly below what precedes it
    if below:
        parts = parts[:-1]
    body = "".join("(?:[^/]+/)*" if p == "**" else _part(p) + "/" for p in parts)
    body = body.removesuffix("/")
    if below:
        body = f"{body}/.+" if body else ".+"
    return re.compile(body + "(?:/.*)?", re.DOTALL)


@dataclass(frozen=True)
class PathPatterns:
    """A set of ``publish.unmanaged`` patterns, compiled once."""

    patterns: tuple[str, ...]
    _compiled: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", tuple(compile_pattern(p) for p in self.patterns))

    @classmethod
    def of(cls, patterns: Iterable[str]) -> PathPatterns:
        return cls(tuple(patterns))

    def matches(self, relpath: str) -> bool:
        """Whether ``relpath`` (inside the SIG directory, ``/``-separated) or one of its
        parent directories matches a pattern."""
        return any(c.fullmatch(relpath) for c in self._compiled)
