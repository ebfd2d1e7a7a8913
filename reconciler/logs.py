"""Logging: JSON lines when not on a terminal (the journal), plain text on a terminal.

Each action logs events with stable names (``action.start``, ``action.done``,
``action.failed``, ``action.blocked``, ``hook.ok``, ``hook.failed``,
``pass.done``, ``pass.failed``) and fields (sig, release, stage, compose_id,
bytes, files), so that log tooling can select on them.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, event, message, and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", "log"),
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key != "event" and not key.startswith("_"):
                body[key] = value
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def setup_logging(verbose: bool, fmt: str = "auto") -> None:
    """Configure the ``reconciler`` logger: INFO when verbose, else WARNING, on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler.setFormatter(
        JsonFormatter() if use_json else logging.Formatter("%(levelname)s %(message)s")
    )
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    root = logging.getLogger("reconciler")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
