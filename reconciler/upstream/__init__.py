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
A request costs about a third of the client CPU that urllib3's pool took.

A compose's packages go through :meth:`Upstream.download_all` instead (:mod:`.batch`):
first attempts through libcurl's multi interface (pycurl), which costs far less CPU
per file than these threads, and what libcurl does not do here (proxies, redirects,
retries) through this client's loop, so the rules above hold for both.
"""

from __future__ import annotations

import http.client
import logging
import math
import os
import random
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import urljoin, urlsplit

from ..errors import UpstreamError
from ..fsutil import tmp_name
from ..hostconfig import DownloadConfig
from .connections import CLOCK, Connections, Route, abandon, discard, split_url
from .faults import Failed, Retryable, check_status, describe, final
from .proxies import Proxies, Proxy, bypasses_proxy
from .records import Expected, Fetched, FetchStats, new_hash

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

    def _retry(self, url: str, attempt_once: Callable[[], T], failed: Failed | None = None) -> T:
        """``attempt_once()`` until it succeeds, the retries are spent or the deadline
        passes (each read of an attempt waits no later than the deadline either).
        ``failed``: a first attempt made elsewhere (:meth:`download_all`) failed so."""
        deadline = self.config.deadline
        until = (time.monotonic() if failed is None else failed[1]) + deadline
        CLOCK.until = until
        try:
            last, integrity, retry_after = "", False, None
            if failed is not None:
                error = failed[0]
                last, integrity, retry_after = str(error), error.integrity, error.retry_after
                if time.monotonic() >= until:
                    raise final(integrity)(
                        f"{url}: {last} (gave up after 1 attempts: "
                        f"not done within the {deadline:g}s deadline)"
                    )
            for attempt in range(0 if failed is None else 1, self.config.retries + 1):
                if attempt:
                    delay = self._delay(attempt, retry_after)
                    if time.monotonic() + delay >= until:
                        asked = "Retry-After asks for" if retry_after is not None else "retry in"
                        raise final(integrity)(
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
                except Retryable as exc:
                    last, integrity, retry_after = str(exc), exc.integrity, exc.retry_after
                if time.monotonic() >= until:
                    raise final(integrity)(
                        f"{url}: {last} (gave up after {attempt + 1} attempts: "
                        f"not done within the {deadline:g}s deadline)"
                    )
            raise final(integrity)(
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
        reason = f"HTTP {response.status} {response.reason or ''}".strip()
        check_status(url, response.status, reason, response.getheader("Retry-After"))

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
                raise Retryable(describe(exc) + via) from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise Retryable(describe(exc) + via) from exc
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
            raise Retryable(describe(exc)) from exc
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

        return self.download_after(url, dest, expected)

    def download_after(
        self, url: str, dest: Path, expected: Expected, failed: Failed | None = None
    ) -> Fetched:
        """:meth:`download`, where ``failed`` says how a first attempt made elsewhere
        failed, and when it started: it counts as the first try, its time as part of the
        deadline."""

        def once() -> Fetched:
            tmp = tmp_name(dest)
            try:
                fetched = self._stream(url, tmp, expected)
                tmp.replace(dest)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            return fetched

        fetched = self._retry(url, once, failed)
        self.stats.add(files=1)
        return fetched

    def download_all(
        self, jobs: Sequence[tuple[str, Path, Expected]], done: Callable[[int, Fetched], None]
    ) -> None:
        """Download every job (url, dest, expected) as :meth:`download` does, about
        ``workers`` at a time, in their order; ``done(index, fetched)`` is called as each
        file is verified (on one of the threads doing it). The first error ends the call.

        First attempts go through libcurl (:mod:`.batch`: far less CPU per file than
        this client's threads); a proxied URL, a redirect and a failed attempt are
        carried on by :meth:`download`'s own loop."""
        if not jobs:  # a compose that only links: libcurl is not even loaded
            return
        from .batch import download_all

        download_all(self, jobs, done)

    def proxy_for(self, url: str) -> Proxy | None:
        """The proxy that ``url`` goes through (None: straight to its server)."""
        origin, _ = split_url(url)
        return self._proxies.for_url(url, origin.scheme, origin.host)

    def _check_length(self, url: str, response: http.client.HTTPResponse, size: int | None) -> None:
        """Refuse a body by its Content-Length before reading it."""
        length = response.length
        if length is None:
            return
        if size is None and length > self.config.max_metadata_bytes:
            raise self._too_large(url, f"its Content-Length of {length} bytes")
        if size is not None and length != size:
            raise Retryable(
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
                        raise Retryable(f"more than the expected {expected.size} bytes", True)
                    chunk = buf[:n]
                    digest.update(chunk)
                    while chunk:
                        chunk = chunk[os.write(fd, chunk) :]
                mtime_ns = os.fstat(fd).st_mtime_ns
            finally:
                os.close(fd)
            complete = True
        except (http.client.HTTPException, ConnectionError, TimeoutError, ssl.SSLError) as exc:
            raise Retryable(describe(exc)) from exc  # the body broke off; disk errors do not
        finally:
            self.stats.add(nbytes=written)
            if not complete:
                abandon(conn, response)  # never reuse a connection with a half-read response
        if expected.size is not None and written != expected.size:
            raise Retryable(f"size {written} does not match the metadata's {expected.size}", True)
        got = digest.hexdigest()
        if got != expected.checksum.lower():
            raise Retryable(
                f"{expected.checksum_type} {got} does not match the metadata's {expected.checksum}",
                True,
            )
        return Fetched(written, mtime_ns)
