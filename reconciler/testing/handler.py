"""How the sample upstream answers a request: files under its root with ETag and
Last-Modified, and the faults a test injects per URL path (:class:`Fault`)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import email.utils
import http.server
import os
import socket
import stat
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, cast


@dataclass
class Fault:
    """What the server does instead of serving a path normally.

    ``kind`` is ``status`` (answer with ``status`` and a short body, with
    ``Retry-After: retry_after`` when that is set), ``truncate`` (full headers,
    ``nbytes`` of body, then the connection is dropped), ``corrupt`` (same
    length, every byte flipped), ``delay`` (wait ``seconds``, then serve
    normally), ``redirect`` (answer ``status``, 302 unless set, with
    ``Location: location``), ``drip`` (the file's headers, then its body one
    byte every ``seconds``) or ``huge`` (a 200 whose body is zeros: ``nbytes``
    of them with a ``Content-Length`` of ``nbytes``, or, when ``nbytes`` is 0,
    without end and without a ``Content-Length``). ``times`` is how many more
    requests it applies to (``None``: all).
    """

    kind: Literal["status", "truncate", "corrupt", "delay", "redirect", "drip", "huge"]
    status: int = 500
    nbytes: int = 0
    seconds: float = 0.0
    times: int | None = None
    location: str = ""
    retry_after: str = ""


@dataclass
class ServerState:
    """What the handler threads share with :class:`UpstreamServer`."""

    root: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # time.monotonic() of each request
    faults: dict[str, Fault] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    resolved_root: Path = field(init=False)  # the root, its symlinks resolved once

    def __post_init__(self) -> None:
        self.resolved_root = self.root.resolve()

    def record(self, method: str, path: str) -> Fault | None:
        """Count a request; return the fault to apply to it, if any.

        A fault with ``times`` is used up only by requests it acts on: a HEAD
        request is not affected by ``truncate`` or ``corrupt``.
        """
        with self.lock:
            self.requests.append(path)
            self.methods.append(method)
            self.times.append(time.monotonic())
            fault = self.faults.get(path)
            body_only = {"truncate", "corrupt", "drip", "huge"}
            if fault is None or (method == "HEAD" and fault.kind in body_only):
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del self.faults[path]
            return dataclasses.replace(fault, times=None)


class _Server(Protocol):
    state: ServerState


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves files under the root with ETag/Last-Modified, HEAD and faults."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server_version = "SampleUpstream/1.0"
    sys_version = ""

    @property
    def state(self) -> ServerState:
        """The shared server state."""
        return cast("_Server", self.server).state

    def log_message(self, format: str, *args: object) -> None:
        """Do not log to stderr."""
        del format, args

    def do_GET(self) -> None:
        """Serve a file, unless a fault says otherwise."""
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        """Headers only."""
        self._serve(send_body=False)

    def _serve(self, *, send_body: bool) -> None:
        path = url_path(self.path)
        fault = self.state.record(self.command, path)
        if fault is not None and fault.kind == "status":
            extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            self._send_text(fault.status, f"injected fault: {fault.status}\n", send_body, extra)
            return
        if fault is not None and fault.kind == "huge":
            self._send_huge(fault.nbytes, send_body)
            return
        if fault is not None and fault.kind == "redirect":
            self.send_response(fault.status if 300 <= fault.status < 400 else 302)
            self.send_header("Location", fault.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if fault is not None and fault.kind == "delay":
            if self.state.stopping.wait(fault.seconds):
                self.close_connection = True
                return
            fault = None
        found = self._resolve(path)
        if found is None:
            self._send_text(404, "not found\n", send_body)
            return
        file_path, info = found
        etag = f'"{info.st_ino:x}-{info.st_size:x}-{info.st_mtime_ns:x}"'
        if self._not_modified(etag, info.st_mtime):
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", _content_type(file_path))
        self.send_header("Content-Length", str(info.st_size))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", email.utils.formatdate(info.st_mtime, usegmt=True))
        self.end_headers()
        if not send_body:
            return
        if fault is None:  # the bytes go from the page cache to the socket (sendfile(2))
            with file_path.open("rb") as fh:
                self.connection.sendfile(fh, count=info.st_size)
            return
        body = file_path.read_bytes()
        if fault.kind == "truncate":
            self.wfile.write(body[: fault.nbytes])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault.kind == "drip":
            self._drip(body, fault.seconds)
            return
        if fault.kind == "corrupt":
            body = bytes(b ^ 0xFF for b in body)
        self.wfile.write(body)

    def _drip(self, body: bytes, interval: float) -> None:
        """One byte every ``interval`` seconds until the body is sent or the server stops."""
        for i in range(len(body)):
            self.wfile.write(body[i : i + 1])
            self.wfile.flush()
            if self.state.stopping.wait(interval):
                break
        self.close_connection = True

    def _send_huge(self, nbytes: int, send_body: bool) -> None:
        """A 200 of zeros: ``nbytes`` of them, or without end (and without a length) if 0.

        Stops when the client hangs up or the server stops.
        """
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if nbytes:
            self.send_header("Content-Length", str(nbytes))
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if not send_body:
            return
        chunk = bytes(1 << 16)
        left = nbytes or -1
        with contextlib.suppress(OSError):  # the client hung up: that is the point
            while left and not self.state.stopping.is_set():
                n = len(chunk) if left < 0 else min(left, len(chunk))
                self.wfile.write(chunk[:n])
                left = left - n if left > 0 else left

    def _resolve(self, url_path: str) -> tuple[Path, os.stat_result] | None:
        """The regular file under the root that ``url_path`` names, and its stat; else None."""
        parts = [p for p in url_path.split("/") if p]
        if any(p in {".", ".."} or "\\" in p or "\0" in p for p in parts):
            return None
        root = self.state.resolved_root
        candidate = root.joinpath(*parts).resolve()
        if not candidate.is_relative_to(root):
            return None
        try:
            st = candidate.stat()
        except OSError:
            return None
        return (candidate, st) if stat.S_ISREG(st.st_mode) else None

    def _not_modified(self, etag: str, mtime: float) -> bool:
        """Whether If-None-Match (preferred) or If-Modified-Since allow a 304."""
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
            return "*" in tags or etag in tags
        if_modified_since = self.headers.get("If-Modified-Since")
        if if_modified_since is None:
            return False
        try:
            since = email.utils.parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=dt.UTC)
        return int(mtime) <= since.timestamp()

    def _send_text(
        self, status: int, text: str, send_body: bool, headers: dict[str, str] | None = None
    ) -> None:
        """A short plain-text response."""
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)


def url_path(target: str) -> str:
    """The decoded path of a request target (origin form or absolute URL)."""
    if target.startswith(("http://", "https://")):
        target = urllib.parse.urlsplit(target).path or "/"
    return urllib.parse.unquote(target.split("?", 1)[0].split("#", 1)[0])


def _content_type(path: Path) -> str:
    """A plausible Content-Type for repository files."""
    name = path.name
    if name.endswith(".rpm"):
        return "application/x-rpm"
    if name.endswith(".xml"):
        return "text/xml"
    if name.endswith(".gz"):
        return "application/gzip"
    return "application/octet-stream"
