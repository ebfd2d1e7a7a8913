"""An HTTP server on 127.0.0.1 that serves a sample upstream tree like the build
system does, with request counting and fault injection (errors, dropped
connections, corrupt bytes, delays, redirects, a body dripped a byte at a time,
an endless or falsely huge body, ``Retry-After``; :mod:`.handler`), optionally
over TLS.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import ssl
import sys
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from .handler import Fault, Handler, ServerState, url_path

__all__ = ["Fault", "UpstreamServer"]


class _HTTPServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that can close its connections and join its threads.

    Connection threads are daemon threads (a forgotten server never blocks
    interpreter exit) but are tracked, so that :meth:`close_all` can end
    keep-alive connections and join every thread.
    """

    def __init__(self, state: ServerState, tls: ssl.SSLContext | None = None) -> None:
        self.state = state
        self._tls = tls
        self._tracked_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._workers: set[threading.Thread] = set()
        super().__init__(("127.0.0.1", 0), Handler)

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
        plain = request
        try:
            if self._tls is not None:  # the handshake, in the connection's own thread
                request = self._handshake(plain)
                if request is None:
                    return
                with self._tracked_lock:
                    self._connections.add(request)
            self.process_request_thread(request, client_address)
        finally:
            with self._tracked_lock:
                self._connections.discard(plain)
                self._connections.discard(request)
                self._workers.discard(threading.current_thread())

    def _handshake(self, request: socket.socket) -> ssl.SSLSocket | None:
        """``request`` over TLS, or None (recorded in :attr:`errors`) if the client
        gave up, e.g. because it does not trust the certificate."""
        assert self._tls is not None
        request.settimeout(10)  # a client that never finishes its handshake
        try:
            wrapped = self._tls.wrap_socket(request, server_side=True)
        except OSError as exc:
            request.close()
            with self.state.lock:
                self.state.errors.append(repr(exc))
            return None
        wrapped.settimeout(None)
        return wrapped

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


class UpstreamServer:
    """A real HTTP server on 127.0.0.1 (ephemeral port) serving ``root``.

    Use as a context manager::

        with UpstreamServer(root) as srv:
            httpx.get(f"{srv.base_url}/<project>/repo/<repo>/x86_64/repodata/repomd.xml")

    Requests are counted (:attr:`requests`, :meth:`count`), files answer
    conditional requests (ETag / If-None-Match, Last-Modified /
    If-Modified-Since) with 304, and faults can be injected per exact URL
    path (:meth:`fail`, :meth:`truncate`, :meth:`corrupt`, :meth:`delay`,
    :meth:`redirect`, :meth:`drip`, :meth:`huge`).
    Only regular files under ``root`` are served; everything else is 404.
    With ``tls`` (a server-side context holding a certificate for 127.0.0.1) it
    serves https.
    """

    def __init__(self, root: Path, tls: ssl.SSLContext | None = None) -> None:
        self.root = root
        self._tls = tls
        self._state = ServerState(root=root)
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> UpstreamServer:
        """Bind and start serving in a background thread."""
        if self._server is not None:
            raise RuntimeError("server already started")
        self._state.stopping.clear()
        self._server = _HTTPServer(self._state, self._tls)
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
        """``http://127.0.0.1:<port>`` (``https`` with TLS; no trailing slash)."""
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

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
    def request_times(self) -> list[float]:
        """When (``time.monotonic()``) each entry of :attr:`requests` arrived."""
        with self._state.lock:
            return list(self._state.times)

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
            self._state.times.clear()

    # fault injection

    def fail(
        self, path: str, status: int = 500, *, times: int | None = None, retry_after: str = ""
    ) -> None:
        """Answer requests for ``path`` with ``status`` (the first ``times`` ones), with a
        ``Retry-After`` header (seconds or an HTTP date) when ``retry_after`` is set."""
        fault = Fault("status", status=status, times=times, retry_after=retry_after)
        self._set_fault(path, fault)

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

    def drip(self, path: str, interval: float = 1.0, *, times: int | None = None) -> None:
        """Send the file's headers at once, then its body one byte every ``interval`` s."""
        self._set_fault(path, Fault("drip", seconds=interval, times=times))

    def huge(self, path: str, nbytes: int = 0, *, times: int | None = None) -> None:
        """Answer with zeros: ``nbytes`` of them under that ``Content-Length`` (it may be
        far more than is ever sent), or, with 0, endlessly and without a length."""
        self._set_fault(path, Fault("huge", nbytes=nbytes, times=times))

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
        key = url_path(path if path.startswith(("/", "http://")) else "/" + path)
        with self._state.lock:
            self._state.faults[key] = fault
