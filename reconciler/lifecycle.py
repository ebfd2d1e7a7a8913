"""Lifecycle hooks: site executables run around composing, staging and promotion.

In the configured directory (``hooks.dir``), an executable whose name is the
event, or starts with the event and a dot, runs for that event, in name order:

    pre-compose   post-compose   pre-staging   post-staging
    pre-production   post-production   on-failure

Each gets one JSON object on stdin (event, sig, release, stage, compose_id,
revision, author, result, error, time) and the hook timeout (``hooks.timeout``).
A ``pre-*`` hook that fails, hangs (it is killed at the timeout) or is not
executable blocks that action: the target shows ``Blocked`` with the hook's
output. ``post-*`` and ``on-failure`` hooks are reported, never fatal.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from .vocabulary import Result, Stage

log = logging.getLogger(__name__)

_OUTPUT_LIMIT = 2000


@dataclass(frozen=True)
class Event:
    event: str  # pre-staging, post-production, on-failure, ...
    sig: str
    release: str
    stage: Stage
    compose_id: str | None
    revision: str | None
    author: str | None
    result: Result | None = None  # post and on-failure hooks
    error: str | None = None
    compose_path: str | None = None  # compose/<release>/<sig> of the compose, when known
    target_path: str | None = None  # the published SIG directory (staging and production)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "time": datetime.now(UTC).isoformat()})


@dataclass(frozen=True)
class HookFailure:
    hook: str
    reason: str

    def __str__(self) -> str:
        return f"hook {self.hook} {self.reason}"


def _hooks_for(directory: Path, event: str) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(
        p for p in directory.iterdir()
        if (p.name == event or p.name.startswith(f"{event}.")) and not p.name.endswith("~")
    )  # fmt: skip


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _OUTPUT_LIMIT else "..." + text[-_OUTPUT_LIMIT:]


def _run_one(hook: Path, event: Event, timeout: float) -> HookFailure | None:
    if not (hook.is_file() and os.access(hook, os.X_OK)):
        return HookFailure(hook.name, "is not an executable file")
    try:
        proc = subprocess.Popen(
            [str(hook)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        return HookFailure(hook.name, f"could not start: {exc.strerror}")
    try:
        output, _ = proc.communicate(event.to_json(), timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the hook and everything it started
        output, _ = proc.communicate()
        return HookFailure(
            hook.name, f"timed out after {timeout:g}s and was killed {_tail(output)}"
        )
    if proc.returncode != 0:
        return HookFailure(hook.name, f"exited {proc.returncode}: {_tail(output)}")
    return None


def run_hooks(directory: Path | None, event: Event, timeout: float) -> list[HookFailure]:
    """Run every hook of ``event``; return the failures (empty when all passed)."""
    if directory is None:
        return []
    failures = []
    for hook in _hooks_for(directory, event.event):
        failure = _run_one(hook, event, timeout)
        log_fn = log.warning if failure else log.info
        log_fn(
            "hook %s for %s %s %s: %s",
            hook.name,
            event.sig,
            event.release,
            event.stage,
            failure.reason if failure else Result.OK,
            extra={"event": "hook.failed" if failure else "hook.ok", "hook": hook.name},
        )
        if failure:
            failures.append(failure)
    return failures
