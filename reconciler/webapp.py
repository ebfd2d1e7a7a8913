"""The HTTP listener of ``reconciler run``: one small WSGI app served by waitress.

Served on ``metrics.listen`` (default 127.0.0.1:9090):

* ``GET /``: the status page (:mod:`reconciler.statuspage`, :mod:`reconciler.pagerender`);
* ``GET /release/<sig>/<release>``: the page of one SIG release;
* ``GET /metrics``: Prometheus text format (prometheus-client's WSGI app);
* ``GET /healthz``: 200 with the loop's last pass, as JSON;
* ``POST /trigger``: wakes the loop for a git webhook. It needs
  ``Authorization: Bearer <secret>`` (the secret is read from
  ``webhook_secret_file`` and compared in constant time); anything else gets
  401 and triggers nothing. The body is read (by waitress, capped) and ignored: a
  wake-up carries no instructions. It is the only request that does anything.

Each connection carries one request (answered as HTTP/1.0, then closed), which
must arrive whole within ``REQUEST_TIMEOUT`` seconds of the connection (a deadline for
the request, not for each read: a client sending a byte at a time is cut off too). At
most ``MAX_CONNECTIONS`` connections are open at once; one more is answered 503 and
closed at once. waitress answers a ``Content-Length`` that is not a number 400, a body
over ``MAX_BODY`` bytes 413, headers over ``MAX_HEADERS`` bytes 431. A fixed pool of
``THREADS`` threads runs the app, however many connections there are.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, cast

from prometheus_client import make_wsgi_app
from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import WSGITask

from .errors import ConfigError, ReconcilerError
from .hostconfig import HostConfig
from .metrics import MAX_BODY, MAX_CONNECTIONS, REQUEST_TIMEOUT, Metrics
from .packagediff import PackageDiff
from .pagerender import render_index, render_release
from .state import StateDB
from .statuspage import StatusPage, extras_from, gather, last_pass_of, release_page
from .vocabulary import Dialect

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

#: Bytes of a request line and headers.
MAX_HEADERS = 16 * 1024
#: Threads that run the app (rendering the page reads SQLite: a few suffice).
THREADS = 4
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n"
         b"Connection: close\r\n\r\n")  # fmt: skip
_RELEASE_PATH = re.compile(r"/release/([A-Za-z0-9][A-Za-z0-9._-]{0,63})/([A-Za-z0-9._-]{1,32})")
_HTML = "text/html; charset=utf-8"
#: The page runs no script and loads nothing: even markup that escaped escaping is inert.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_TEXT = "text/plain; charset=utf-8"


class Pages(Protocol):
    """What renders the pages (:class:`SitePages`)."""

    def index(self) -> str: ...

    def release(self, sig: str, release: str) -> str | None:
        """The page of one SIG release; None when there is no such SIG release."""


class SitePages:
    """The pages ``reconciler run`` serves: each request opens the state read-only."""

    REFRESH_S = 30

    def __init__(
        self,
        host: HostConfig,
        last_pass: Callable[[], Mapping[str, Any]],
        diffs: Callable[[], Sequence[PackageDiff]] = tuple,
    ) -> None:
        """``diffs``: the package diffs of what the last pass left pending."""
        self.host, self._last_pass, self._diffs = host, last_pass, diffs

    def _open(self) -> StateDB | None:
        if self.host.state.dialect is Dialect.SQLITE and not self.host.layout.database.exists():
            return None
        return StateDB.connect(self.host, create=False)

    def index(self) -> str:
        state = self._open()
        if state is None:
            page = StatusPage(datetime.now(UTC), None, (), last_pass_of(self._last_pass()), (),
                              (), self.REFRESH_S)  # fmt: skip
            return render_index(page)
        with state:
            extras = extras_from(self.host, state, self._diffs())
            page = gather(self.host, state, self._last_pass(), extras, self.REFRESH_S)
        return render_index(page)

    def release(self, sig: str, release: str) -> str | None:
        state = self._open()
        if state is None:
            return None
        with state:
            page = release_page(self.host, state, sig, release, self.REFRESH_S)
        return None if page is None else render_release(page)


def make_app(
    metrics: Metrics, secret: str | None, on_trigger: Callable[[], None], pages: Pages | None
) -> WSGIApplication:
    """The WSGI app: routes, the trigger's constant-time check, nothing else writes."""
    exposition = make_wsgi_app(metrics.registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")

        def send(code: str, body: bytes, ctype: str = _TEXT) -> list[bytes]:
            headers = [("Content-Type", ctype), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                       ("Content-Security-Policy", _CSP)]  # fmt: skip
            start_response(code, headers)
            return [] if method == "HEAD" else [body]

        if method == "POST":
            if path != "/trigger":
                return send("404 Not Found", b"not found\n")
            given = environ.get("HTTP_AUTHORIZATION", "")
            expected = f"Bearer {secret}" if secret else None
            if expected is None or not hmac.compare_digest(given.encode(), expected.encode()):
                return send("401 Unauthorized", b"unauthorized\n")
            on_trigger()
            return send("202 Accepted", b"triggered\n")
        if method not in ("GET", "HEAD"):
            return send("405 Method Not Allowed", b"method not allowed\n")
        if path == "/metrics":
            return exposition(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            body = json.dumps({"status": "ok", **metrics.last_pass}).encode()
            return send("200 OK", body, "application/json")
        if pages is None:
            return send("404 Not Found", b"not found\n")
        try:
            if path == "/":
                return send("200 OK", pages.index().encode(), _HTML)
            if (match := _RELEASE_PATH.fullmatch(path)) is not None:
                page = pages.release(match[1], match[2])
                if page is not None:
                    return send("200 OK", page.encode(), _HTML)
        except ReconcilerError as exc:  # the state cannot be read now (busy, damaged)
            return send("503 Service Unavailable", f"{exc}\n".encode())
        return send("404 Not Found", b"not found\n")

    return app


class _Task(WSGITask):
    """Answers as HTTP/1.0 and closes: one request per connection, so the connection's
    deadline is the request's (as the http.server handler before it did)."""

    def __init__(self, channel: Any, request: Any) -> None:
        super().__init__(channel, request)
        self.version = "1.0"


class _Channel(HTTPChannel):
    task_class = _Task


class _Server(TcpWSGIServer):
    """waitress with a deadline per connection and a hard connection limit that answers."""

    channel_class = _Channel

    request_timeout: float = REQUEST_TIMEOUT
    max_connections: int = MAX_CONNECTIONS

    def readable(self) -> bool:
        # waitress stops accepting at its limit, leaving clients hanging in the backlog;
        # here every connection is accepted and the excess answered 503 (handle_accept)
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = int(now) + self.adj.cleanup_interval
            self.maintenance(now)
        return bool(self.accepting)

    def _channels(self) -> dict[int, Any]:
        # waitress's stubs call this one channel; it is a map of them by file descriptor
        return cast("dict[int, Any]", self.active_channels)

    def maintenance(self, now: float) -> None:
        """Close each connection whose request has not arrived whole within the deadline
        (waitress's own timeout is for inactivity: a byte now and then would reset it)."""
        cutoff = now - self.request_timeout
        for channel in list(self._channels().values()):
            if not channel.requests and channel.creation_time < cutoff:
                channel.will_close = True

    def handle_accept(self) -> None:
        if len(self._channels()) < self.max_connections:
            super().handle_accept()
            return
        try:
            accepted = self.accept()
        except OSError:
            return
        if accepted is None:
            return
        conn = accepted[0]
        with contextlib.suppress(OSError):  # a courtesy: the client learns why
            conn.setblocking(False)
            conn.send(_BUSY)
        conn.close()


class WebServer:
    """The listener: waitress in a thread of its own, until :meth:`stop`."""

    def __init__(self, listen: str, app: WSGIApplication, *,
                 request_timeout: float = REQUEST_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS) -> None:  # fmt: skip
        adj = Adjustments(
            listen=listen, threads=THREADS, connection_limit=max_connections + 1,
            channel_timeout=max(1, int(request_timeout)), cleanup_interval=1,
            max_request_body_size=MAX_BODY, max_request_header_size=MAX_HEADERS,
            asyncore_loop_timeout=1, ident="reconciler", expose_tracebacks=False,
        )  # fmt: skip
        self._map: dict[int, Any] = {}
        try:
            self._server = _Server(app, map=self._map, adj=adj)
        except (OSError, ValueError) as exc:
            for dispatcher in list(self._map.values()):
                dispatcher.close()
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise ConfigError(f"metrics.listen {listen}: cannot listen: {reason}") from exc
        self._server.request_timeout = request_timeout
        self._server.max_connections = max_connections
        self._thread = threading.Thread(target=self._server.run, name="http", daemon=True)

    @property
    def address(self) -> str:
        server: Any = self._server  # set by waitress, missing from its stubs
        host, port = server.effective_host, server.effective_port
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"

    def start(self) -> WebServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        # closing the sockets in the loop's own thread ends its loop (its map empties)
        trigger: Any = self._server.trigger  # the stubs have it wrong (an int)
        trigger.pull_trigger(lambda: wasyncore.close_all(self._map))
        self._thread.join(timeout=5)
        self._server.task_dispatcher.shutdown(timeout=5)
