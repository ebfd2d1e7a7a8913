"""The status page as HTML: Jinja2 templates (``reconciler/templates/``), autoescaped.

Pure but for reading the templates once: the records of :mod:`reconciler.statuspage`
in, a page out. No JavaScript: a served page refreshes itself with a ``<meta>``
refresh; an exported one (``reconciler status --format html``) does not. Every value
goes through Jinja2's autoescape, so a commit message with ``<script>`` is text.
"""

from __future__ import annotations

import functools
from datetime import datetime

import jinja2

from .statuspage import ReleasePage, StatusPage
from .vocabulary import Result, Stage, TargetState

#: Each state's colour class, icon and word: the page never says it with colour alone.
STATE_LOOK: dict[TargetState, tuple[str, str]] = {
    TargetState.SYNCED: ("ok", "\u2714"),
    TargetState.OUT_OF_SYNC: ("warn", "\u21bb"),
    TargetState.PROGRESSING: ("info", "\u25d4"),
    TargetState.BLOCKED: ("bad", "\u2298"),
    TargetState.FAILED: ("bad", "\u2716"),
    TargetState.SUSPENDED: ("muted", "\u2016"),
}
RESULT_LOOK: dict[Result, tuple[str, str]] = {
    Result.OK: ("ok", "\u2714"),
    Result.FAILED: ("bad", "\u2716"),
    Result.BLOCKED: ("bad", "\u2298"),
    Result.SKIPPED: ("muted", "\u2013"),
    Result.RUNNING: ("info", "\u25d4"),
}


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _lag(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes = int(seconds // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


@functools.cache
def environment() -> jinja2.Environment:
    """The templates, compiled once."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reconciler", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=_when, size=_size, lag=_lag)
    env.globals.update(STATE_LOOK=STATE_LOOK, RESULT_LOOK=RESULT_LOOK, STAGES=tuple(Stage))
    return env


def render_index(page: StatusPage) -> str:
    return environment().get_template("index.html").render(page=page)


def render_release(page: ReleasePage) -> str:
    return environment().get_template("release.html").render(page=page)
