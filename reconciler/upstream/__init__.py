"""Reading the build system over HTTP: small files, and verified package downloads.

Every error names the URL. Transient faults (connection refused or dropped,
timeouts, HTTP 5xx/429, bytes that fail their checksum) are retried with
exponential backoff and jitter, or after the wait a 429 or 503 asks for in
``Retry-After`` (at most :data:`MAX_RETRY_AFTER`); a 4xx or a TLS failure is final
at once. One file may take ``download.deadline`` seconds in all, retries and their
waits included: every read waits no later than that, so a server that answers a
byte at a time cannot hold a compose.

Built on the standard library's :mod:`http.client` (:mod:`.connections`, and
:mod:`.proxies` for the proxy variables): one keep-alive connection per
origin and thread (a download thread fetches one file at a time), TLS verified
against the system's CA store with the host name checked, and redirects followed
(at most :data:`MAX_REDIRECTS`, never from https to http). The proxy variables are
honoured as curl reads them (``https_proxy``, ``http_proxy``, lower case before
upper case, and ``no_proxy``; see :func:`bypasses_proxy`): https is tunnelled
through an http proxy with CONNECT, http is asked of it in absolute form. Bodies are
read as sent (no content decoding) into a buffer each thread reuses, and every
byte is checked against the metadata. A metadata file read into memory is refused
beyond ``download.max_metadata_bytes`` (by its ``Content-Length`` before reading,
else as the bytes arrive); a package whose ``Content-Length`` is not the size the
metadata states is refused before it is read.
A request costs about a third of the client CPU that urllib3's pool took, which is
what a compose of many small packages spends its time on (BENCHMARKS.md).
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import logging
import math
import os
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import urljoin, urlsplit

from ..errors import HTTPStatusError, IntegrityError, UpstreamError
from ..fsutil import tmp_name
from ..hostconfig import DownloadConfig
from .connections import CLOCK, Connections, Route, abandon, discard, split_url
from .proxies import Proxies, bypasses_proxy

__all__ = [
    "MAX_REDIRECTS",
    "MAX_RETRY_AFTER",
    "Expected",
    "FetchStats",
    "Fetched",
    "Upstream",
    "bypasses_proxy",
    "new_hash",
]

T = TypeVar("T")
#: Redirects followed for one request before giving up.
MAX_REDIRECTS = 5
#: The longest wait a ``Retry-After`` header gets (a longer one is cut to this).
MAX_RETRY_AFTER = 60.0
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
    def __init__(
        self, message: str, integrity: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.integrity = integrity
        #: The wait the server asked for (``Retry-After``), in seconds.
        self.retry_after = retry_after


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


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (seconds or an HTTP date); None
    when there is none or it means nothing."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class Upstream:
    """An HTTP client for one pass or compose; safe to share between download threads.

    The proxy variables are read when it is made.
    """

    def __init__(self, config: DownloadConfig, log: logging.Logger | None = None) -> None:
        self.config = config
        self.log = log or logging.getLogger(__name__)
        self.stats = FetchStats()
        self._conns = Connections(min(config.timeout, 15.0), config.timeout)
        self._proxies = Proxies(os.environ)

    def close(self) -> None:
        self._conns.close()

    def __enter__(self) -> Upstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- retry loop ---------------------------------------------------------------

    def _retry(self, url: str, attempt_once: Callable[[], T]) -> T:
        """``attempt_once()`` until it succeeds, the retries are spent or the deadline
        passes (each read of an attempt waits no later than the deadline either)."""
        deadline = self.config.deadline
        until = time.monotonic() + deadline
        CLOCK.until = until
        try:
            last, integrity, retry_after = "", False, None
            for attempt in range(self.config.retries + 1):
                if attempt:
                    delay = self._delay(attempt, retry_after)
                    if time.monotonic() + delay >= until:
                        asked = "Retry-After asks for" if retry_after is not None else "retry in"
                        raise _final(integrity)(
                            f"{url}: {last} (gave up after {attempt} attempts: {asked} "
                            f"{delay:.2f}s, past the {deadline:g}s deadline)"
                        )
                    self.log.warning(
                        "retry %d/%d of %s in %.2fs: %s",
                        attempt, self.config.retries, url, delay, last,
                    )  # fmt: skip
                    time.sleep(delay)
                try:
                    return attempt_once()
                except _Retryable as exc:
                    last, integrity, retry_after = str(exc), exc.integrity, exc.retry_after
                if time.monotonic() >= until:
                    raise _final(integrity)(
                        f"{url}: {last} (gave up after {attempt + 1} attempts: "
                        f"not done within the {deadline:g}s deadline)"
                    )
            raise _final(integrity)(
                f"{url}: {last} (gave up after {self.config.retries + 1} attempts)"
            )
        finally:
            CLOCK.until = math.inf

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before retry ``attempt``: what the server asked for (at most
        :data:`MAX_RETRY_AFTER`), else exponential backoff with jitter."""
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER)
        jitter = 0.5 + random.random()  # noqa: S311
        return self.config.backoff * 2.0 ** (attempt - 1) * jitter

    def _check_status(self, url: str, response: http.client.HTTPResponse) -> None:
        code = response.status
        if code < 400:
            return
        reason = f"HTTP {code} {response.reason or ''}".strip()
        if code >= 500 or code == 429:
            wait = _retry_after(response.getheader("Retry-After")) if code in (429, 503) else None
            raise _Retryable(reason, retry_after=wait)
        raise HTTPStatusError(f"{url}: {reason}", code)

    # -- one request ----------------------------------------------------------------

    def _request(
        self, url: str, headers: dict[str, str] | None = None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send a GET, following redirects (never from https to http). The caller reads
        the body to its end or closes the connection: a half-read response must not be
        reused."""
        for _ in range(MAX_REDIRECTS + 1):
            conn, response = self._send(url, headers or {})
            location = response.getheader("Location")
            if response.status not in _REDIRECT_STATUSES or not location:
                return conn, response
            discard(conn, response)
            target = urljoin(url, location)
            if urlsplit(url).scheme == "https" and urlsplit(target).scheme == "http":
                raise UpstreamError(
                    f"{url}: refused the redirect to {target}: from https to http "
                    "would give up TLS (a downgrade)"
                )
            url = target
        raise UpstreamError(f"{url}: more than {MAX_REDIRECTS} redirects")

    def _send(
        self, url: str, headers: dict[str, str]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        origin, target = split_url(url)
        proxy = self._proxies.for_url(url, origin.scheme, origin.host)
        all_headers = {"User-Agent": "sig-reconciler", **headers}
        if proxy is not None and origin.scheme == "http":  # absolute form, to the proxy
            route = Route(None, proxy)
            target = f"http://{urlsplit(url).netloc.rpartition('@')[2]}{target}"
            all_headers.update(proxy.headers())
        else:
            route = Route(origin, proxy)
        via = f" (via proxy {proxy})" if proxy is not None else ""
        conn = self._conns.get(route)
        for second_try in (False, True):
            reused = conn.sock is not None
            self.stats.add(requests=1)
            try:
                if reused:
                    self._conns.prepare(conn)
                else:
                    self._conns.connect(conn)
                conn.request("GET", target, headers=all_headers)
                return conn, conn.getresponse()
            except ssl.SSLError as exc:  # before OSError: it is one
                conn.close()
                what = "verification " if isinstance(exc, ssl.SSLCertVerificationError) else ""
                raise UpstreamError(f"{url}: TLS {what}failed{via}: {exc}") from exc
            except _STALE as exc:
                conn.close()
                if reused and not second_try:
                    continue  # the server closed the idle connection: once more, anew
                raise _Retryable(_describe(exc) + via) from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise _Retryable(_describe(exc) + via) from exc
        raise AssertionError("unreachable")  # the second try returns or raises

    # -- small files ----------------------------------------------------------------

    def get(self, url: str) -> bytes:
        """GET a small file into memory (repomd.xml), retrying transient faults; at
        most ``download.max_metadata_bytes``."""
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

    def _too_large(self, url: str, what: str) -> UpstreamError:
        cap = self.config.max_metadata_bytes
        return UpstreamError(f"{url}: {what} is more than download.max_metadata_bytes ({cap})")

    def _get_once(
        self, url: str, headers: dict[str, str]
    ) -> tuple[bytes | None, str | None, str | None]:
        conn, response = self._request(url, headers)
        if response.status == 304:
            discard(conn, response)
            return None, None, None
        cap = self.config.max_metadata_bytes
        body = bytearray()
        done = False
        try:
            self._check_status(url, response)
            if response.length is not None and response.length > cap:
                raise self._too_large(url, f"its Content-Length of {response.length} bytes")
            buf = self._conns.buffer()
            while n := response.readinto(buf):
                if len(body) + n > cap:
                    raise self._too_large(url, "its body")
                body += buf[:n]
            done = True
        except (OSError, http.client.HTTPException) as exc:
            raise _Retryable(_describe(exc)) from exc
        finally:
            self.stats.add(nbytes=len(body))
            if not done:
                abandon(conn, response)  # never reuse a connection with a half-read response
        return bytes(body), response.getheader("ETag"), response.getheader("Last-Modified")

    # -- verified downloads -----------------------------------------------------

    def download(self, url: str, dest: Path, expected: Expected) -> Fetched:
        """Stream ``url`` to ``dest`` via a temporary name; verify size and checksum.

        ``dest`` appears only when verified. A file whose size the metadata does not
        state is refused beyond ``download.max_metadata_bytes``.
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

    def _check_length(self, url: str, response: http.client.HTTPResponse, size: int | None) -> None:
        """Refuse a body by its Content-Length before reading it."""
        length = response.length
        if length is None:
            return
        if size is None and length > self.config.max_metadata_bytes:
            raise self._too_large(url, f"its Content-Length of {length} bytes")
        if size is not None and length != size:
            raise _Retryable(
                f"Content-Length {length} does not match the metadata's size {size}", True
            )

    def _stream(self, url: str, tmp: Path, expected: Expected) -> Fetched:
        digest = new_hash(expected.checksum_type)
        written = 0
        mtime_ns = 0
        limit = self.config.max_metadata_bytes if expected.size is None else expected.size
        conn, response = self._request(url)
        buf = self._conns.buffer()
        complete = False
        try:
            self._check_status(url, response)
            self._check_length(url, response, expected.size)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            try:
                while n := response.readinto(buf):
                    written += n
                    if written > limit and expected.size is None:
                        raise self._too_large(url, "its body (the metadata states no size)")
                    if written > limit:
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
                abandon(conn, response)  # never reuse a connection with a half-read response
        if expected.size is not None and written != expected.size:
            raise _Retryable(f"size {written} does not match the metadata's {expected.size}", True)
        got = digest.hexdigest()
        if got != expected.checksum.lower():
            raise _Retryable(
                f"{expected.checksum_type} {got} does not match the metadata's {expected.checksum}",
                True,
            )
        return Fetched(written, mtime_ns)


def _final(integrity: bool) -> type[UpstreamError]:
    """The error a request ends with: bad bytes, or the upstream's fault."""
    return IntegrityError if integrity else UpstreamError


def _describe(exc: BaseException) -> str:
    kind = type(exc).__name__
    text = str(exc) or kind
    return text if kind in text else f"{kind}: {text}"
