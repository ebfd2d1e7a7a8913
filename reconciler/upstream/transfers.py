"""Many verified downloads at once, on one thread, through libcurl's multi interface.

Why: a cold compose is thousands of requests, and the Python client's work per
request (and its threads handing the GIL to each other) was most of the compose's
CPU on a 2-CPU host (BENCHMARKS.md, round 7). Here libcurl (pycurl) keeps
``concurrency`` transfers in flight on one thread, the way dnf's librepo does, and
Python only sees each response's header lines and its body in chunks of up to
:data:`_BUFFER` bytes, which are hashed and written as they arrive.

This is one attempt per file, and only the plain case: a GET of an http(s) URL
straight to its server, over HTTP/1.1, TLS verified against the same CA store as
:func:`ssl.create_default_context` (``SSL_CERT_FILE``, ``SSL_CERT_DIR`` honoured),
no proxy (libcurl's own reading of the proxy variables is turned off), no redirect
followed. Each :class:`Outcome` says what happened; the caller
(:meth:`reconciler.upstream.Upstream.download_all`) retries what failed, and
follows redirects, with the client's own loop, so that the rules (retries,
backoff, ``Retry-After``, the deadline, the error tree) are written once.

A file takes its name only when verified: it is written to a temporary name, which
is removed whatever happens to it.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UpstreamError
from ..fsutil import tmp_name
from .records import Expected, Fetched, new_hash

if TYPE_CHECKING:
    import hashlib

#: The most bytes one body chunk hands to Python (libcurl's receive buffer).
_BUFFER = 1 << 20
_USER_AGENT = "sig-reconciler"
#: curl's codes for a certificate that does not verify, and for other TLS failures.
_TLS_VERIFY = frozenset({60, 83, 90, 91})
_TLS_OTHER = frozenset({35, 53, 54, 58, 59, 64, 66, 77, 80, 82})


@dataclass(frozen=True, slots=True)
class Settings:
    """How the transfers run (from the host's ``download`` settings)."""

    concurrency: int
    connect_timeout: float
    read_timeout: float  # no byte for this long fails the attempt
    deadline: float  # the attempt ends by then, whatever happens
    max_metadata_bytes: int  # the cap of a file whose size is not stated


@dataclass(frozen=True, slots=True)
class Job:
    url: str
    dest: Path
    expected: Expected


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt's end: ``fetched`` when ``dest`` holds the verified file.

    Otherwise ``error`` is to be raised as it is (a disk error, a file over the cap);
    ``status`` is an HTTP status other than 200 (``reason`` its line, ``retry_after``
    its header); ``tls`` is a TLS failure, final; else ``reason`` says why the
    attempt failed (``integrity``: bytes that are not what the metadata says).
    """

    job: Job
    started: float  # time.monotonic() when the attempt started
    fetched: Fetched | None = None
    status: int | None = None
    reason: str = ""
    retry_after: str | None = None
    tls: bool = False
    integrity: bool = False
    error: BaseException | None = None


@dataclass
class _Attempt:
    """One transfer in flight: what arrived so far."""

    job: Job
    started: float
    limit: int
    cap: int | None  # the metadata states no size: this is the cap
    tmp: Path
    digest: hashlib._Hash
    status: int | None = None
    reason: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    fd: int = -1
    written: int = 0
    problem: Outcome | None = None  # why a callback stopped the transfer

    def on_header(self, line: bytes) -> None:
        text = line.decode("latin-1").strip()
        if text.startswith("HTTP/"):  # a new response (after a 100 Continue): anew
            _, _, rest = text.partition(" ")
            code, _, reason = rest.partition(" ")
            self.status = int(code) if code.isdigit() else None
            self.reason = f"HTTP {code} {reason}".strip()
            self.headers = {}
        elif ":" in text:
            name, _, value = text.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def on_body(self, chunk: bytes) -> int | None:
        """Hash and write a 200's body as it arrives; 0 stops the transfer (with
        ``problem`` saying why). Another status's body is dropped."""
        if self.status != 200:
            return None
        try:
            if self.fd < 0:
                self.problem = self._start()
                if self.problem is not None:
                    return 0
            self.written += len(chunk)
            if self.written > self.limit:
                self.problem = self._over()
                return 0
            self.digest.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(self.fd, view) :]
        except BaseException as exc:  # pycurl would only print it: kept, then raised
            self.problem = self._failed(error=exc)
            return 0
        return None

    def _start(self) -> Outcome | None:
        """Open the temporary file, unless the Content-Length refuses the body first."""
        length = self.headers.get("content-length")
        size = self.job.expected.size
        if length is not None and length.isdigit():
            if size is None and int(length) > self.limit:
                return self._failed(error=self._too_large(f"its Content-Length of {length} bytes"))
            if size is not None and int(length) != size:
                return self._failed(
                    f"Content-Length {length} does not match the metadata's size {size}", True
                )
        self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        return None

    def _over(self) -> Outcome:
        if self.cap is not None:
            return self._failed(error=self._too_large("its body (the metadata states no size)"))
        return self._failed(f"more than the expected {self.job.expected.size} bytes", True)

    def _too_large(self, what: str) -> UpstreamError:
        return UpstreamError(
            f"{self.job.url}: {what} is more than download.max_metadata_bytes ({self.cap})"
        )

    def _failed(self, reason: str = "", integrity: bool = False, **kw: Any) -> Outcome:
        return Outcome(self.job, self.started, reason=reason, integrity=integrity, **kw)

    def finish(self, failure: tuple[int, str] | None) -> Outcome:
        """The outcome, once libcurl is done with it (``failure``: its code and message)."""
        try:
            return self._verdict(failure)
        finally:
            self.close()

    def _verdict(self, failure: tuple[int, str] | None) -> Outcome:
        if self.problem is not None:
            return self.problem
        if failure is not None:
            code, message = failure
            if code in _TLS_VERIFY or code in _TLS_OTHER:
                what = "verification " if code in _TLS_VERIFY else ""
                return self._failed(f"TLS {what}failed: {message}", tls=True)
            return self._failed(message or f"curl error {code}")
        if self.status != 200:
            return Outcome(self.job, self.started, status=self.status, reason=self.reason,
                           retry_after=self.headers.get("retry-after"))  # fmt: skip
        if self.fd < 0:  # an empty body: no chunk came
            refused = self._start()
            if refused is not None:
                return refused
        expected = self.job.expected
        if expected.size is not None and self.written != expected.size:
            return self._failed(
                f"size {self.written} does not match the metadata's {expected.size}", True
            )
        got = self.digest.hexdigest()
        if got != expected.checksum.lower():
            return self._failed(
                f"{expected.checksum_type} {got} does not match the metadata's {expected.checksum}",
                True,
            )
        mtime_ns = os.fstat(self.fd).st_mtime_ns
        os.close(self.fd)
        self.fd = -1
        self.tmp.replace(self.job.dest)
        return Outcome(self.job, self.started, fetched=Fetched(self.written, mtime_ns))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.tmp.unlink(missing_ok=True)


def transfer(jobs: Iterable[Job], settings: Settings) -> Generator[Outcome, None, None]:
    """One attempt at each job, ``settings.concurrency`` at a time; each outcome as its
    transfer ends. Closing the iterator early stops what is in flight."""
    import pycurl  # a C library: loaded only by a pass that downloads packages

    todo = list(jobs)
    todo.reverse()  # taken from the end: the caller's order
    multi = pycurl.CurlMulti()
    multi.setopt(pycurl.M_MAXCONNECTS, settings.concurrency)
    idle = [_handle(pycurl, settings) for _ in range(min(settings.concurrency, len(todo)))]
    active: dict[Any, _Attempt] = {}
    try:
        while todo or active:
            while idle and todo:
                handle = idle.pop()
                active[handle] = _begin(pycurl, handle, todo.pop(), settings)
                multi.add_handle(handle)
            while multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
                pass
            while True:
                queued, ok, failed = multi.info_read()
                ended = [(h, None) for h in ok] + [(h, (c, m)) for h, c, m in failed]
                for handle, failure in ended:
                    multi.remove_handle(handle)
                    idle.append(handle)
                    yield active.pop(handle).finish(failure)
                if not queued:
                    break
            if active:
                multi.select(1.0)
    finally:
        for handle, attempt in active.items():
            multi.remove_handle(handle)
            attempt.close()
        for handle in (*active, *idle):
            handle.close()
        multi.close()


def _handle(pycurl: Any, settings: Settings) -> Any:
    """An easy handle (it keeps its connection between files), set for :func:`transfer`."""
    handle = pycurl.Curl()
    paths = ssl.get_default_verify_paths()  # the store ssl.create_default_context() loads
    options = [
        (pycurl.NOSIGNAL, 1),
        (pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS),
        (pycurl.FOLLOWLOCATION, 0),
        (pycurl.PROXY, ""),  # the caller sends proxied URLs elsewhere
        (pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1),
        (pycurl.USERAGENT, _USER_AGENT),
        (pycurl.BUFFERSIZE, _BUFFER),
        (pycurl.SSL_VERIFYPEER, 1),
        (pycurl.SSL_VERIFYHOST, 2),
        (pycurl.CONNECTTIMEOUT_MS, max(1, int(settings.connect_timeout * 1000))),
        # no byte for read_timeout seconds (libcurl counts whole seconds) ends it
        (pycurl.LOW_SPEED_LIMIT, 1),
        (pycurl.LOW_SPEED_TIME, max(1, round(settings.read_timeout))),
    ]
    if paths.cafile:
        options.append((pycurl.CAINFO, paths.cafile))
    if paths.capath:
        options.append((pycurl.CAPATH, paths.capath))
    for option, value in options:
        handle.setopt(option, value)
    return handle


def _begin(pycurl: Any, handle: Any, job: Job, settings: Settings) -> _Attempt:
    size = job.expected.size
    attempt = _Attempt(
        job=job,
        started=time.monotonic(),
        limit=settings.max_metadata_bytes if size is None else size,
        cap=settings.max_metadata_bytes if size is None else None,
        tmp=tmp_name(job.dest),
        digest=new_hash(job.expected.checksum_type),
    )
    handle.setopt(pycurl.URL, job.url)
    handle.setopt(pycurl.TIMEOUT_MS, max(1, int(settings.deadline * 1000)))
    handle.setopt(pycurl.HEADERFUNCTION, attempt.on_header)
    handle.setopt(pycurl.WRITEFUNCTION, attempt.on_body)
    return attempt
