"""An HTTP server on 127.0.0.1 that serves a sample upstream tree like the build
system does, with request counting and fault injection (errors, dropped
connections, corrupt bytes, delays, redirects).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import email.utils
import http.server
import os
import socket
import stat
import sys
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

# --------------------------------------------------------------------------
# The HTTP server
# --------------------------------------------------------------------------


@dataclass
class Fault:
    """What the server does instead of serving a path normally.

    ``kind`` is ``status`` (answer with ``status`` and a short body),
    ``truncate`` (full headers, ``nbytes`` of body, then the connection is
    dropped), ``corrupt`` (same length, every byte flipped), ``delay``
    (wait ``seconds``, then serve normally) or ``redirect`` (answer ``status``,
    302 unless set, with ``Location: location``).  ``times`` is how many more
    requests it applies to (``None``: all).
    """

    kind: Literal["status", "truncate", "corrupt", "delay", "redirect"]
    status: int = 500
    nbytes: int = 0
    seconds: float = 0.0
    times: int | None = None
    location: str = ""


@dataclass
class _ServerState:
    """What the handler threads share with :class:`UpstreamServer`."""

    root: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
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
            fault = self.faults.get(path)
            if fault is None or (method == "HEAD" and fault.kind in {"truncate", "corrupt"}):
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del self.faults[path]
            return dataclasses.replace(fault, times=None)


class _HTTPServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that can close its connections and join its threads.

    Connection threads are daemon threads (a forgotten server never blocks
    interpreter exit) but are tracked, so that :meth:`close_all` can end
    keep-alive connections and join every thread.
    """

    def __init__(self, state: _ServerState) -> None:
        self.state = state
        self._tracked_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._workers: set[threading.Thread] = set()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Handle a connection in a new, tracked thread."""
        worker = threading.Thread(
            target=self._work, args=(request, client_address), name="upstream-conn", daemon=True
        )
        with self._tracked_lock:
            self._connections.add(request)
            self._workers.add(worker)
        worker.start()

    def _work(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._tracked_lock:
                self._connections.discard(request)
                self._workers.discard(threading.current_thread())

    def close_all(self) -> None:
        """End open (keep-alive) connections and wait for their threads."""
        with self._tracked_lock:
            connections = list(self._connections)
            workers = list(self._workers)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for worker in workers:
            worker.join()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Keep handler errors (e.g. a client hanging up) off stderr."""
        del request, client_address
        # Called from within the except block of the failing handler.
        error = sys.exc_info()[1]
        with self.state.lock:
            self.state.errors.append(repr(error))


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves files under the root with ETag/Last-Modified, HEAD and faults."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server_version = "SampleUpstream/1.0"
    sys_version = ""

    @property
    def state(self) -> _ServerState:
        """The shared server state."""
        return cast(_HTTPServer, self.server).state

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
        url_path = _url_path(self.path)
        fault = self.state.record(self.command, url_path)
        if fault is not None and fault.kind == "status":
            self._send_text(fault.status, f"injected fault: {fault.status}\n", send_body)
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
        found = self._resolve(url_path)
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
        if fault.kind == "corrupt":
            body = bytes(b ^ 0xFF for b in body)
        self.wfile.write(body)

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

    def _send_text(self, status: int, text: str, send_body: bool) -> None:
        """A short plain-text response."""
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)


def _url_path(target: str) -> str:
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


class UpstreamServer:
    """A real HTTP server on 127.0.0.1 (ephemeral port) serving ``root``.

    Use as a context manager::

        with UpstreamServer(root) as srv:
            httpx.get(f"{srv.base_url}/<project>/repo/<repo>/x86_64/repodata/repomd.xml")

    Requests are counted (:attr:`requests`, :meth:`count`), files answer
    conditional requests (ETag / If-None-Match, Last-Modified /
    If-Modified-Since) with 304, and faults can be injected per exact URL
    path (:meth:`fail`, :meth:`truncate`, :meth:`corrupt`, :meth:`delay`).
    Only regular files under ``root`` are served; everything else is 404.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._state = _ServerState(root=root)
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> UpstreamServer:
        """Bind and start serving in a background thread."""
        if self._server is not None:
            raise RuntimeError("server already started")
        self._state.stopping.clear()
        self._server = _HTTPServer(self._state)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"upstream-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and join every thread."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._state.stopping.set()
        server.shutdown()
        thread.join()
        server.close_all()
        server.server_close()
        self._server = None
        self._thread = None

    def __enter__(self) -> UpstreamServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # addresses

    @property
    def port(self) -> int:
        """The bound port."""
        if self._server is None:
            raise RuntimeError("server not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """The URL of a path under the root (``a/b`` or ``/a/b``)."""
        return f"{self.base_url}/{urllib.parse.quote(path.lstrip('/'))}"

    # request counting

    @property
    def requests(self) -> list[str]:
        """URL paths requested so far (GET and HEAD), oldest first (a copy)."""
        with self._state.lock:
            return list(self._state.requests)

    @property
    def methods(self) -> list[str]:
        """The method of each entry of :attr:`requests`."""
        with self._state.lock:
            return list(self._state.methods)

    @property
    def errors(self) -> list[str]:
        """Exceptions (repr) raised while handling requests, e.g. client hang-ups."""
        with self._state.lock:
            return list(self._state.errors)

    def count(self, match: str | Callable[[str], bool] = "") -> int:
        """How many requested paths end with ``match`` (or satisfy it, if callable)."""
        predicate = match if callable(match) else (lambda p: p.endswith(match))
        return sum(1 for path in self.requests if predicate(path))

    def reset_counts(self) -> None:
        """Forget the requests counted so far."""
        with self._state.lock:
            self._state.requests.clear()
            self._state.methods.clear()

    # fault injection

    def fail(self, path: str, status: int = 500, *, times: int | None = None) -> None:
        """Answer requests for ``path`` with ``status`` (the first ``times`` ones)."""
        self._set_fault(path, Fault("status", status=status, times=times))

    def truncate(self, path: str, nbytes: int, *, times: int | None = None) -> None:
        """Send full headers but only ``nbytes`` of the body, then drop the connection."""
        self._set_fault(path, Fault("truncate", nbytes=nbytes, times=times))

    def corrupt(self, path: str, *, times: int | None = None) -> None:
        """Serve the file with the same length and every byte flipped."""
        self._set_fault(path, Fault("corrupt", times=times))

    def delay(self, path: str, seconds: float, *, times: int | None = None) -> None:
        """Wait ``seconds`` before answering (for client timeout tests)."""
        self._set_fault(path, Fault("delay", seconds=seconds, times=times))

    def redirect(
        self, path: str, location: str, status: int = 302, *, times: int | None = None
    ) -> None:
        """Answer requests for ``path`` with a redirect to ``location``."""
        self._set_fault(path, Fault("redirect", status=status, location=location, times=times))

    def drop_idle_connections(self) -> None:
        """Close every kept-alive connection, as a server does after its idle timeout."""
        if self._server is not None:
            self._server.close_all()

    def clear_faults(self) -> None:
        """Serve everything normally again."""
        with self._state.lock:
            self._state.faults.clear()

    def _set_fault(self, path: str, fault: Fault) -> None:
        if fault.times is not None and fault.times < 1:
            raise ValueError("times must be at least 1")
        key = _url_path(path if path.startswith(("/", "http://")) else "/" + path)
        with self._state.lock:
            self._state.faults[key] = fault
