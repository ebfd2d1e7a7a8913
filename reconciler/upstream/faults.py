"""How an attempt at a request fails: retried, or final (the error tree's own errors).

Shared by the client's loop (:mod:`reconciler.upstream`) and the way it reads the
outcome of a batch transfer (:mod:`.transfers`).
"""

from __future__ import annotations

from ..errors import HTTPStatusError, IntegrityError, UpstreamError
from .records import retry_after


class Retryable(Exception):
    def __init__(
        self, message: str, integrity: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.integrity = integrity
        #: The wait the server asked for (``Retry-After``), in seconds.
        self.retry_after = retry_after


#: A first attempt made elsewhere that failed, and when it started (``time.monotonic()``).
Failed = tuple[Retryable, float]


def check_status(url: str, code: int, reason: str, retry_after_header: str | None) -> None:
    """Raise for an HTTP error status: a 5xx or 429 is retried (after the wait it asks
    for, if a 429 or 503), another 4xx is final."""
    if code < 400:
        return
    if code >= 500 or code == 429:
        wait = retry_after(retry_after_header) if code in (429, 503) else None
        raise Retryable(reason, retry_after=wait)
    raise HTTPStatusError(f"{url}: {reason}", code)


def final(integrity: bool) -> type[UpstreamError]:
    """The error a request ends with: bad bytes, or the upstream's fault."""
    return IntegrityError if integrity else UpstreamError


def describe(exc: BaseException) -> str:
    kind = type(exc).__name__
    text = str(exc) or kind
    return text if kind in text else f"{kind}: {text}"
