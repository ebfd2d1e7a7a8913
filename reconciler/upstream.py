"""Reading the build system over HTTP: small files, and verified package downloads.

Every error names the URL. Transient faults (connection refused or dropped,
timeouts, HTTP 5xx/429, bytes that fail their checksum) are retried with
exponential backoff and jitter; a 4xx or a TLS verification failure is final at
once. Built on urllib3's connection pool (thread-safe, TLS verified against the
system's CA store); bodies are taken as sent (no content decoding), so every
byte is checked against the metadata.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import urllib3
from urllib3.exceptions import HTTPError, SSLError

from .errors import IntegrityError, UpstreamError
from .fsutil import tmp_name
from .hostconfig import DownloadConfig

T = TypeVar("T")
_CHUNK = 1 << 20
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


class Upstream:
    """An HTTP client for one pass or compose; safe to share between download threads."""

    def __init__(self, config: DownloadConfig, log: logging.Logger | None = None) -> None:
        self.config = config
        self.log = log or logging.getLogger(__name__)
        self.stats = FetchStats()
        self._timeout = urllib3.Timeout(connect=min(config.timeout, 15.0), read=config.timeout)
        self._retries = urllib3.Retry(
            total=5, connect=0, read=0, status=0, other=0, redirect=5, raise_on_status=False
        )
        self._pool = urllib3.PoolManager(
            maxsize=config.workers + 2, block=False, headers={"User-Agent": "sig-reconciler"}
        )

    def close(self) -> None:
        self._pool.clear()

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

    def _check_status(self, url: str, response: urllib3.BaseHTTPResponse) -> None:
        code = response.status
        if code < 400:
            return
        reason = f"HTTP {code} {response.reason or ''}".strip()
        if code >= 500 or code == 429:
            raise _Retryable(reason)
        raise UpstreamError(f"{url}: {reason}")

    def _request(self, url: str, headers: dict[str, str] | None = None) -> urllib3.BaseHTTPResponse:
        """Start a GET; the body is read by the caller (streamed, not decoded)."""
        self.stats.add(requests=1)
        try:
            return self._pool.request(
                "GET", url, headers=headers, preload_content=False, decode_content=False,
                timeout=self._timeout, retries=self._retries,
            )  # fmt: skip
        except SSLError as exc:
            raise UpstreamError(f"{url}: TLS verification failed: {exc}") from exc
        except HTTPError as exc:
            raise _Retryable(_describe(exc)) from exc

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
        response = self._request(url, headers)
        try:
            if response.status == 304:
                return None, None, None
            self._check_status(url, response)
            body = response.read(decode_content=False)
        except HTTPError as exc:
            raise _Retryable(_describe(exc)) from exc
        finally:
            response.release_conn()
        self.stats.add(nbytes=len(body))
        return body, response.headers.get("ETag"), response.headers.get("Last-Modified")

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
        response = self._request(url)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        complete = False
        try:
            self._check_status(url, response)
            for chunk in response.stream(_CHUNK, decode_content=False):
                written += len(chunk)
                if expected.size is not None and written > expected.size:
                    raise _Retryable(f"more than the expected {expected.size} bytes", True)
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            mtime_ns = os.fstat(fd).st_mtime_ns
            complete = True
        except HTTPError as exc:
            raise _Retryable(_describe(exc)) from exc
        finally:
            os.close(fd)
            self.stats.add(nbytes=written)
            if complete:
                response.release_conn()
            else:
                response.close()  # do not hand a half-read connection back to the pool
        if expected.size is not None and written != expected.size:
            raise _Retryable(f"size {written} does not match the metadata's {expected.size}", True)
        got = digest.hexdigest()
        if got != expected.checksum.lower():
            raise _Retryable(
                f"{expected.checksum_type} {got} does not match the metadata's {expected.checksum}",
                True,
            )
        return Fetched(written, mtime_ns)


def _describe(exc: Exception) -> str:
    inner = getattr(exc, "reason", None)
    kind = type(inner or exc).__name__
    text = str(inner or exc) or kind
    return text if kind in text else f"{kind}: {text}"
