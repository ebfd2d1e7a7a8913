"""What a download is checked against and what it gives: the client's small records.

Shared by the client (:mod:`reconciler.upstream`) and its batch transfers
(:mod:`.transfers`), which must not import each other's internals.
"""

from __future__ import annotations

import email.utils
import hashlib
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from ..errors import IntegrityError

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


def retry_after(value: str | None) -> float | None:
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
