"""Reading the build system over HTTP: small files, and verified package downloads.

Every error names the URL. Transient faults (connection refused or dropped,
timeouts, HTTP 5xx/429, bytes that fail their checksum) are retried with
exponential backoff and jitter; a 4xx or a TLS failure is final at once.

Built on the standard library's :mod:`http.client`: one keep-alive connection per
origin and thread (a download thread fetches one file at a time), TLS verified
against the system's CA store with the host name checked, and redirects followed
(at most :data:`MAX_REDIRECTS`). Bodies are read as sent (no content decoding)
into a buffer each thread reuses, and every byte is checked against the metadata.
A request costs about a third of the client CPU that urllib3's pool took, which is
what a compose of many small packages spends its time on (BENCHMARKS.md).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urljoin, urlsplit

from .errors import IntegrityError, UpstreamError
from .fsutil import tmp_name
from .hostconfig import DownloadConfig

T = TypeVar("T")
_CHUNK = 1 << 20
#: Redirects followed for one request before giving up.
MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: How a kept-alive connection that the server has closed meanwhile fails on reuse.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
_HASH_NAMES = {
    "sha": "sha1",
    "sha1": "sha1",
    "sha224": "sha224",
    "sha256": "sha256",
    "sha384": "sha384",
    "sha512": "sha512",
    "md5": "md5",
}


@dataclass(frozen=True, slots=True)
class Expected:
    """What the metadata says a file must be."""

    checksum_type: str
    checksum: str
    size: int | None = None


@dataclass(frozen=True, slots=True)
class Fetched:
    """A verified download: its size and the modification time it got on disk."""

    nbytes: int
    mtime_ns: int


def new_hash(checksum_type: str) -> hashlib._Hash:
    name = _HASH_NAMES.get(checksum_type.lower())
    if name is None:
        raise IntegrityError(f"unsupported checksum type {checksum_type!r}")
    return hashlib.new(name)


class _Retryable(Exception):
    def __init__(self, message: str, integrity: bool = False) -> None:
        super().__init__(message)
        self.integrity = integrity


@dataclass
class FetchStats:
    """Counters of what this client asked the upstream for (thread-safe)."""

    requests: int = 0
    bytes: int = 0
    files: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, requests: int = 0, nbytes: int = 0, files: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.bytes += nbytes
            self.files += files


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str
    port: int


def _split(url: str) -> tuple[_Origin, str]:
    """``url`` as the origin to connect to and the request target."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamError(f"{url}: not an http:// or https:// URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:  # a port that is not a number
        raise UpstreamError(f"{url}: {exc}") from exc
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Origin(parts.scheme, parts.hostname, port), target


class _Connections:
    """Keep-alive connections by origin, one set per thread; :meth:`close` closes all."""

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

    def get(self, origin: _Origin) -> http.client.HTTPConnection:
        conns: dict[_Origin, http.client.HTTPConnection] | None = getattr(
            self._local, "conns", None
        )
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get(origin)
        if conn is None:
            if origin.scheme == "https":
                conn = http.client.HTTPSConnection(
                    origin.host, origin.port, timeout=self._connect_timeout,
                    context=self._tls_context(),
                )  # fmt: skip
            else:
                conn = http.client.HTTPConnection(
                    origin.host, origin.port, timeout=self._connect_timeout
                )
            conns[origin] = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def connect(self, conn: http.client.HTTPConnection) -> None:
        """Open ``conn`` within the connect timeout; then each read waits the read timeout."""
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(self._read_timeout)

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


class Upstream:
    """An HTTP client for one pass or compose; safe to share between download threads."""

    def __init__(self, config: DownloadConfig, log: logging.Logger | None = None) -> None:
        self.config = config
        self.log = log or logging.getLogger(__name__)
        self.stats = FetchStats()
        self._conns = _Connections(min(config.timeout, 15.0), config.timeout)

    def close(self) -> None:
        self._conns.close()

    def __enter__(self) -> Upstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- retry loop ---------------------------------------------------------------

    def _retry(self, url: str, attempt_once: Callable[[], T]) -> T:
        last = ""
        integrity = False
        for attempt in range(self.config.retries + 1):
            if attempt:
                delay = self.config.backoff * (2 ** (attempt - 1)) * (0.5 + random.random())  # noqa: S311
                self.log.warning(
                    "retry %d/%d of %s in %.2fs: %s", attempt, self.config.retries, url, delay, last
                )
                time.sleep(delay)
            try:
                return attempt_once()
            except _Retryable as exc:
                last, integrity = str(exc), exc.integrity
        error = IntegrityError if integrity else UpstreamError
        raise error(f"{url}: {last} (gave up after {self.config.retries + 1} attempts)")

    def _check_status(self, url: str, response: http.client.HTTPResponse) -> None:
        code = response.status
        if code < 400:
            return
        reason = f"HTTP {code} {response.reason or ''}".strip()
        if code >= 500 or code == 429:
            raise _Retryable(reason)
        raise UpstreamError(f"{url}: {reason}")

    # -- one request ----------------------------------------------------------------

    def _request(
        self, url: str, headers: dict[str, str] | None = None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send a GET, following redirects. The caller reads the body to its end or
        closes the connection: a half-read response must not be reused."""
        for _ in range(MAX_REDIRECTS + 1):
            conn, response = self._send(url, headers or {})
            location = response.getheader("Location")
            if response.status not in _REDIRECT_STATUSES or not location:
                return conn, response
            try:
                response.read()  # a redirect's short body: the connection stays usable
            except (OSError, http.client.HTTPException):
                conn.close()
            url = urljoin(url, location)
        raise UpstreamError(f"{url}: more than {MAX_REDIRECTS} redirects")

    def _send(
        self, url: str, headers: dict[str, str]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        origin, target = _split(url)
        conn = self._conns.get(origin)
        all_headers = {"User-Agent": "sig-reconciler", **headers}
        for second_try in (False, True):
            reused = conn.sock is not None
            self.stats.add(requests=1)
            try:
                if not reused:
                    self._conns.connect(conn)
                conn.request("GET", target, headers=all_headers)
                return conn, conn.getresponse()
            except ssl.SSLError as exc:  # before OSError: it is one
                conn.close()
                what = "verification " if isinstance(exc, ssl.SSLCertVerificationError) else ""
                raise UpstreamError(f"{url}: TLS {what}failed: {exc}") from exc
            except _STALE as exc:
                conn.close()
                if reused and not second_try:
                    continue  # the server closed the idle connection: once more, anew
                raise _Retryable(_describe(exc)) from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise _Retryable(_describe(exc)) from exc
        raise AssertionError("unreachable")  # the second try returns or raises

    # -- small files ----------------------------------------------------------------

    def get(self, url: str) -> bytes:
        """GET a small file into memory (repomd.xml), retrying transient faults."""
        body, _, _ = self._retry(url, lambda: self._get_once(url, {}))
        assert body is not None
        return body

    def get_if_changed(
        self, url: str, etag: str | None, last_modified: str | None
    ) -> tuple[bytes | None, str | None, str | None]:
        """A conditional GET: ``(None, etag, last_modified)`` when unchanged (HTTP 304),
        else the new body and its validators. An unchanged file costs one small response."""
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        result = self._retry(url, lambda: self._get_once(url, headers))
        if result[0] is None:
            return None, etag, last_modified
        return result

    def _get_once(
        self, url: str, headers: dict[str, str]
    ) -> tuple[bytes | None, str | None, str | None]:
        conn, response = self._request(url, headers)
        done = False
        try:
            if response.status == 304:
                response.read()
                done = True
                return None, None, None
            self._check_status(url, response)
            body = response.read()
            done = True
        except (OSError, http.client.HTTPException) as exc:
            raise _Retryable(_describe(exc)) from exc
        finally:
            if not done:
                conn.close()
        self.stats.add(nbytes=len(body))
        return body, response.getheader("ETag"), response.getheader("Last-Modified")

    # -- verified downloads -----------------------------------------------------

    def download(self, url: str, dest: Path, expected: Expected) -> Fetched:
        """Stream ``url`` to ``dest`` via a temporary name; verify size and checksum.

        ``dest`` appears only when verified.
        """

        def once() -> Fetched:
            tmp = tmp_name(dest)
            try:
                fetched = self._stream(url, tmp, expected)
                tmp.replace(dest)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            return fetched

        fetched = self._retry(url, once)
        self.stats.add(files=1)
        return fetched

    def _stream(self, url: str, tmp: Path, expected: Expected) -> Fetched:
        digest = new_hash(expected.checksum_type)
        written = 0
        mtime_ns = 0
        conn, response = self._request(url)
        buf = self._conns.buffer()
        complete = False
        try:
            self._check_status(url, response)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            try:
                while n := response.readinto(buf):
                    written += n
                    if expected.size is not None and written > expected.size:
                        raise _Retryable(f"more than the expected {expected.size} bytes", True)
                    chunk = buf[:n]
                    digest.update(chunk)
                    while chunk:
                        chunk = chunk[os.write(fd, chunk) :]
                mtime_ns = os.fstat(fd).st_mtime_ns
            finally:
                os.close(fd)
            complete = True
        except (http.client.HTTPException, ConnectionError, TimeoutError, ssl.SSLError) as exc:
            raise _Retryable(_describe(exc)) from exc  # the body broke off; disk errors do not
        finally:
            self.stats.add(nbytes=written)
            if not complete:
                conn.close()  # never reuse a connection with a half-read response
        if expected.size is not None and written != expected.size:
            raise _Retryable(f"size {written} does not match the metadata's {expected.size}", True)
        got = digest.hexdigest()
        if got != expected.checksum.lower():
            raise _Retryable(
                f"{expected.checksum_type} {got} does not match the metadata's {expected.checksum}",
                True,
            )
        return Fetched(written, mtime_ns)


def _describe(exc: BaseException) -> str:
    kind = type(exc).__name__
    text = str(exc) or kind
    return text if kind in text else f"{kind}: {text}"
