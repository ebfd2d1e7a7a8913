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

import hashlib
import io
import os
import ssl
import threading
import time
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pycurl  # this module is imported only by a pass that downloads packages

from ..errors import UpstreamError
from ..fsutil import tmp_name
from .records import Expected, Fetched, new_hash

#: libcurl's receive buffer.
_BUFFER = 1 << 20
#: Bytes gathered before each write(2) (libcurl hands the body on in pieces of 16 KiB).
_WRITE_BUFFER = 1 << 20
#: curl's codes for a body past MAXFILESIZE, and for a write callback that refused it.
_FILESIZE_EXCEEDED = 63
_WRITE_ERROR = 23
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
    """One transfer in flight, then its verification."""

    job: Job
    started: float
    limit: int  # the most bytes taken: the stated size, else the cap
    cap: int | None  # the metadata states no size: this is the cap
    tmp: Path
    file: io.BufferedWriter  # the body, written in large pieces
    digest: hashlib._Hash  # of the body, as it arrives (each piece still in the CPU's cache)
    #: The header lines as they came, kept by a C method (no Python call per line),
    #: read once the transfer ended (:meth:`_read_head`).
    lines: list[bytes] = field(default_factory=list)
    status: int = 0  # of the last response; 0: none came
    reason: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    written: int = 0
    renamed: bool = False
    error: OSError | None = None  # writing failed (a full disk): said as it is

    def on_body(self, chunk: bytes) -> int | None:
        """A piece of the body (libcurl's are 16 KiB at most): hashed, then written; 0
        stops the transfer. libcurl itself stops a body past the limit."""
        try:
            self.digest.update(chunk)
            self.file.write(chunk)
        except OSError as exc:
            self.error = exc
            return 0
        return None

    def _read_head(self) -> None:
        """The last response's status, and the headers read here (Content-Length,
        Retry-After: only those that begin so are looked at); a 100 Continue's are dropped."""
        status, reason = 0, ""
        headers: dict[str, str] = {}
        for raw in self.lines:
            if raw.startswith(b"HTTP/"):
                code, _, phrase = raw.decode("latin-1").strip().partition(" ")[2].partition(" ")
                status = int(code) if code.isdigit() else 0
                reason, headers = f"HTTP {code} {phrase}".strip(), {}
            elif raw[:1] in b"CcRr" and b":" in raw:
                name, _, value = raw.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
        self.status, self.reason, self.headers = status, reason, headers

    def _failed(self, reason: str = "", integrity: bool = False, **kw: Any) -> Outcome:
        return Outcome(self.job, self.started, reason=reason, integrity=integrity, **kw)

    def finish(self, failure: tuple[int, str] | None) -> Outcome:
        """The outcome once libcurl is done (``failure``: its code and message)."""
        try:
            self.written = self.file.tell()
            self.file.close()  # the last buffered bytes: a full disk fails here
        except OSError as exc:
            self.error = self.error or exc
        try:
            if self.error is not None:
                return self._failed(error=self.error)
            self._read_head()
            if failure is None and self.status == 200:
                return self._verify()
            return self._failure(*failure) if failure else self._status()
        finally:
            self.close()

    def _status(self) -> Outcome:
        return Outcome(self.job, self.started, status=self.status, reason=self.reason,
                       retry_after=self.headers.get("retry-after"))  # fmt: skip

    def _failure(self, code: int, message: str) -> Outcome:
        if code in _TLS_VERIFY or code in _TLS_OTHER:
            what = "verification " if code in _TLS_VERIFY else ""
            return self._failed(f"TLS {what}failed: {message}", tls=True)
        if self.status not in (0, 200):  # the status says more than how the body ended
            return self._status()
        if code == _FILESIZE_EXCEEDED or (code == _WRITE_ERROR and self.limit == 0):
            return self._over()
        return self._failed(message or f"curl error {code}")

    def _over(self) -> Outcome:
        """A body longer than allowed (refused by its Content-Length before it was read,
        or cut off at the limit)."""
        header = self.headers.get("content-length", "")
        length = int(header) if header.isdigit() else -1
        size = self.job.expected.size
        if self.cap is not None:
            what = "its body (the metadata states no size)"
            if length > self.cap:
                what = f"its Content-Length of {length} bytes"
            return self._failed(error=UpstreamError(
                f"{self.job.url}: {what} is more than download.max_metadata_bytes ({self.cap})"
            ))  # fmt: skip
        if length >= 0 and length != size:
            return self._failed(
                f"Content-Length {length} does not match the metadata's size {size}", True
            )
        return self._failed(f"more than the expected {size} bytes", True)

    def _verify(self) -> Outcome:
        """Check the complete body against the metadata, then give it its name."""
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
        try:
            mtime_ns = self.tmp.stat().st_mtime_ns
            self.tmp.replace(self.job.dest)
        except OSError as exc:
            return self._failed(error=exc)
        self.renamed = True
        return Outcome(self.job, self.started, fetched=Fetched(self.written, mtime_ns))

    def close(self) -> None:
        self.file.close()
        if not self.renamed:
            self.tmp.unlink(missing_ok=True)


def transfer(
    todo: deque[Job], settings: Settings, stop: threading.Event
) -> Generator[Outcome, None, None]:
    """One attempt at each job taken from the left of ``todo`` (which other loops may
    share), ``settings.concurrency`` at a time; each outcome once known. Ends early
    when ``stop`` is set, or the iterator is closed: what is in flight stops."""
    loop = _Loop(settings, todo)
    try:
        while (loop.todo or loop.active) and not stop.is_set():
            yield from loop.start()
            yield from loop.receive()
            if loop.active:
                loop.multi.select(1.0)
    finally:
        loop.close()


class _Loop:
    """The transfers of :func:`transfer`: to do, and in flight."""

    def __init__(self, settings: Settings, todo: deque[Job]) -> None:
        self.settings = settings
        self.todo = todo
        self.multi = pycurl.CurlMulti()
        self.multi.setopt(pycurl.M_MAXCONNECTS, settings.concurrency)
        self.idle = [_handle(settings) for _ in range(settings.concurrency)]
        self.active: dict[Any, _Attempt] = {}

    def start(self) -> Iterator[Outcome]:
        """Start transfers while handles are free; a file that cannot be made fails here."""
        while self.idle:
            try:
                job = self.todo.popleft()
            except IndexError:  # taken by another loop meanwhile
                return
            handle = self.idle.pop()
            try:
                self.active[handle] = _begin(handle, job, self.settings)
            except OSError as exc:  # the temporary file: said as it is
                self.idle.append(handle)
                yield Outcome(job, time.monotonic(), error=exc)
                continue
            self.multi.add_handle(handle)

    def receive(self) -> Iterator[Outcome]:
        """Let libcurl move bytes; a transfer that ended is judged."""
        while self.multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        while True:
            queued, ok, failed = self.multi.info_read()
            ended = [(h, None) for h in ok] + [(h, (c, m)) for h, c, m in failed]
            for handle, failure in ended:
                self.multi.remove_handle(handle)
                self.idle.append(handle)
                yield self.active.pop(handle).finish(failure)
            if not queued:
                return

    def close(self) -> None:
        for handle, attempt in self.active.items():
            self.multi.remove_handle(handle)
            attempt.close()
        for handle in (*self.active, *self.idle):
            handle.close()
        self.multi.close()


def _handle(settings: Settings) -> Any:
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


def _refuse_any(chunk: bytes) -> int:
    """The body of a file that must be empty: any byte stops the transfer."""
    return 0 if chunk else len(chunk)


def _begin(handle: Any, job: Job, settings: Settings) -> _Attempt:
    size = job.expected.size
    limit = settings.max_metadata_bytes if size is None else size
    tmp = tmp_name(job.dest)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    attempt = _Attempt(
        job=job,
        started=time.monotonic(),
        limit=limit,
        cap=settings.max_metadata_bytes if size is None else None,
        tmp=tmp,
        file=io.BufferedWriter(io.FileIO(fd, "wb"), _WRITE_BUFFER),
        digest=new_hash(job.expected.checksum_type),
    )
    handle.setopt(pycurl.URL, job.url)
    handle.setopt(pycurl.TIMEOUT_MS, max(1, int(settings.deadline * 1000)))
    handle.setopt(pycurl.HEADERFUNCTION, attempt.lines.append)
    # libcurl ends a body past the limit, and refuses one whose Content-Length is
    # past it before reading it (0 would mean no limit: an empty file's body is
    # refused by a callback instead)
    handle.setopt(pycurl.MAXFILESIZE_LARGE, limit)
    handle.setopt(pycurl.WRITEFUNCTION, attempt.on_body if limit else _refuse_any)
    return attempt
