"""Connections to the upstream, kept alive per route and thread, whose every wait
ends by the deadline of the request this thread is making.

A socket's timeout bounds each read, and a server that sends a byte just before it
runs out never trips it. So each thread has a deadline (:data:`CLOCK`, set by the
client's retry loop) and every read of a response, a proxy's answer to CONNECT
included, waits at most what is left of it (:class:`_Reader`); connecting and the
TLS handshake wait at most that too.
"""

from __future__ import annotations

import http.client
import io
import math
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..errors import UpstreamError
from .proxies import Proxy

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

_CHUNK = 1 << 20
#: A body up to this long (a redirect's, a 304's) is read so that the connection stays
#: usable; a longer one closes the connection instead.
_SHORT_BODY = 64 << 10


class Clock(threading.local):
    """When (``time.monotonic()``) the request this thread is making must be done."""

    until: float = math.inf


CLOCK = Clock()


class DeadlinePassed(TimeoutError):
    """This thread's request is out of time (retried by no one: the time is up)."""


def time_left() -> float:
    """Seconds left until this thread's deadline; raises once it has passed."""
    left = CLOCK.until - time.monotonic()
    if left <= 0:
        raise DeadlinePassed("the deadline passed")
    return left


class _Reader(io.RawIOBase):
    """A socket's bytes for :class:`_Response`: each read waits at most the socket's
    timeout and what is left of this thread's deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)  # keeps the socket open while read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        left = time_left()
        timeout = self._sock.gettimeout()
        if left < (math.inf if timeout is None else timeout):
            self._sock.settimeout(left)
        return self._raw.readinto(buffer) or 0

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _Response(http.client.HTTPResponse):
    """A response (or a proxy's answer to CONNECT) read under the deadline."""

    def __init__(
        self,
        sock: socket.socket,
        debuglevel: int = 0,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(sock, debuglevel, method, url)
        plain, self.fp = self.fp, io.BufferedReader(_Reader(sock))
        plain.close()


class _HTTPConnection(http.client.HTTPConnection):
    response_class = _Response


class _HTTPSConnection(http.client.HTTPSConnection):
    response_class = _Response


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Route:
    """What a connection is kept for: an origin reached directly or through a tunnel
    (``origin`` and ``proxy``), or a proxy asked for http URLs (``origin`` None)."""

    origin: Origin | None
    proxy: Proxy | None


def split_url(url: str) -> tuple[Origin, str]:
    """``url`` as the origin to connect to and the request target."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamError(f"{url}: not an http:// or https:// URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:  # a port that is not a number
        raise UpstreamError(f"{url}: {exc}") from exc
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Origin(parts.scheme, parts.hostname, port), target


class Connections:
    """Keep-alive connections by route, one set per thread; :meth:`close` closes all."""

    def __init__(self, connect_timeout: float, read_timeout: float) -> None:
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[http.client.HTTPConnection] = []
        self._tls: ssl.SSLContext | None = None

    def _tls_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._tls is None:  # loading the CA store takes a while: only for https
                self._tls = ssl.create_default_context()
            return self._tls

    def get(self, route: Route) -> http.client.HTTPConnection:
        conns: dict[Route, http.client.HTTPConnection] | None = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get(route)
        if conn is None:
            conn = conns[route] = self._new(route)
            with self._lock:
                self._all.append(conn)
        return conn

    def _new(self, route: Route) -> http.client.HTTPConnection:
        origin, proxy = route.origin, route.proxy
        if origin is None:  # http URLs asked of a proxy
            assert proxy is not None
            return _HTTPConnection(proxy.host, proxy.port, timeout=self._connect_timeout)
        if origin.scheme == "http":
            return _HTTPConnection(origin.host, origin.port, timeout=self._connect_timeout)
        if proxy is None:
            return _HTTPSConnection(
                origin.host, origin.port, timeout=self._connect_timeout,
                context=self._tls_context(),
            )  # fmt: skip
        conn = _HTTPSConnection(
            proxy.host, proxy.port, timeout=self._connect_timeout, context=self._tls_context()
        )
        conn.set_tunnel(origin.host, origin.port, headers=proxy.headers())
        return conn

    def connect(self, conn: http.client.HTTPConnection) -> None:
        """Open ``conn`` (through its proxy's tunnel, with TLS) within the connect
        timeout and the deadline; then each read waits the read timeout at most."""
        conn.timeout = min(self._connect_timeout, time_left())
        conn.connect()
        self.prepare(conn)

    def prepare(self, conn: http.client.HTTPConnection) -> None:
        """Before a request: the read timeout, or what is left of the deadline."""
        assert conn.sock is not None
        conn.sock.settimeout(min(self._read_timeout, time_left()))

    def buffer(self) -> memoryview:
        """This thread's read buffer, allocated once rather than per file."""
        buf: memoryview | None = getattr(self._local, "buffer", None)
        if buf is None:
            buf = self._local.buffer = memoryview(bytearray(_CHUNK))
        return buf

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


def abandon(conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
    """Close a connection whose response is not read to its end (it must not be
    reused), and the response: after a ``Connection: close`` answer, the response
    alone holds the socket."""
    response.close()
    conn.close()


def discard(conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
    """Read a short body (a redirect's, a 304's) so that ``conn`` serves the next
    request; close ``conn`` instead when the body is long or of unknown length."""
    if response.length is not None and response.length <= _SHORT_BODY:
        try:
            response.read()
            return
        except (OSError, http.client.HTTPException):
            pass
    abandon(conn, response)
