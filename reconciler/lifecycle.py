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

The timeout is kept by the clock, not by the pipes: at the deadline the hook's
process group is killed and its output is no longer read, even when something
it started (``setsid cmd &``) still holds the pipe. A hook that exits is done:
its exit status is its result, whatever it left running in the background.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from .vocabulary import Result, Stage

log = logging.getLogger(__name__)

_OUTPUT_LIMIT = 2000
#: Bytes of a hook's output kept (the reason shows the last ``_OUTPUT_LIMIT`` characters).
_KEEP = 64 * 1024
_CHUNK = 64 * 1024
#: Seconds between checks whether the hook exited, while its output is quiet.
_POLL = 0.05
#: Seconds the output is read after the hook exited (a child it left may hold the pipe).
_DRAIN = 0.2
#: Seconds to wait for a killed hook to be reaped.
_REAP = 5.0


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


class _Output:
    """The last ``_KEEP`` bytes a hook wrote."""

    def __init__(self) -> None:
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > 2 * _KEEP:
            del self.data[:-_KEEP]

    def text(self) -> str:
        return _tail(bytes(self.data[-_KEEP:]).decode(errors="replace"))


def _feed(proc: subprocess.Popen[bytes], data: memoryview) -> memoryview:
    """Write what the pipe takes of ``data`` to the hook's stdin; return the rest."""
    assert proc.stdin is not None
    try:
        return data[os.write(proc.stdin.fileno(), data[:_CHUNK]) :]
    except BlockingIOError:
        return data
    except BrokenPipeError:  # the hook does not read its stdin: its business
        return data[:0]


def _exchange(proc: subprocess.Popen[bytes], stdin: bytes, deadline: float, out: _Output) -> None:
    """Write ``stdin``, read the output, until the hook exits or the clock reaches ``deadline``.

    The clock rules, not the pipes: a grandchild may hold the output pipe open long
    after the hook is gone (or killed), so reading stops at the deadline, and
    ``_DRAIN`` seconds after the hook exited.
    """
    assert proc.stdin is not None and proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE)
        sel.register(proc.stdout, selectors.EVENT_READ)
        data = memoryview(stdin)
        stop_at = deadline
        while sel.get_map():
            if proc.poll() is not None:
                stop_at = min(stop_at, time.monotonic() + _DRAIN)
            left = stop_at - time.monotonic()
            if left <= 0:
                return
            for key, _mask in sel.select(min(left, _POLL)):
                if key.fileobj is proc.stdin:
                    data = _feed(proc, data)
                    if not data:
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                elif chunk := os.read(proc.stdout.fileno(), _CHUNK):
                    out.add(chunk)
                else:  # end of file: wait for the exit below
                    sel.unregister(proc.stdout)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill the hook and everything in its process group; reap it (a bounded wait)."""
    if proc.poll() is None:  # not reaped: its pid, and so its group's id, is still ours
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=_REAP)
    except subprocess.TimeoutExpired:  # stuck in the kernel: subprocess reaps it later
        log.warning("hook process %d did not end after SIGKILL", proc.pid)


def _run_one(hook: Path, event: Event, timeout: float) -> HookFailure | None:
    if not (hook.is_file() and os.access(hook, os.X_OK)):
        return HookFailure(hook.name, "is not an executable file")
    deadline = time.monotonic() + timeout
    try:
        proc = subprocess.Popen(
            [str(hook)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        return HookFailure(hook.name, f"could not start: {exc.strerror}")
    out = _Output()
    timed_out = True
    try:
        _exchange(proc, event.to_json().encode(), deadline, out)
        timed_out = proc.poll() is None
    finally:
        if timed_out:  # or something above raised: leave nothing running
            _kill(proc)
        for pipe in (proc.stdin, proc.stdout):  # our ends; a grandchild may keep its own
            if pipe is not None:
                pipe.close()
    if timed_out:
        return HookFailure(hook.name, f"timed out after {timeout:g}s and was killed {out.text()}")
    if proc.returncode != 0:
        return HookFailure(hook.name, f"exited {proc.returncode}: {out.text()}")
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
