"""Validated names and the only way this tool builds a path from one.

Pure: no I/O. ``safe_join`` works on the lexical path, so callers that also
need to defend against symlinks check with :func:`reconciler.fsutil.inside`.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Final

from .errors import UnsafePathError

#: The suffix of every temporary file the reconciler writes (mirror clients skip these).
TMP_SUFFIX: Final = ".~tmp~"
NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
RELEASE_RE: Final = re.compile(r"^[0-9]+(\.[0-9]+)?$")
#: The binary architectures a SIG repo may be built for.
KNOWN_ARCHES: Final = ("x86_64", "aarch64", "ppc64le", "s390x", "riscv64", "i686")
KEY_FILE_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
COMPOSE_ID_RE: Final = re.compile(
    r"^SIG-(?P<sig>[a-z0-9][a-z0-9._-]*)-(?P<release>[0-9]+(?:\.[0-9]+)?)"
    r"-(?P<date>[0-9]{8})\.(?P<respin>[0-9]+)$"
)


def check_name(value: str, what: str = "name") -> str:
    """Return ``value`` if it is a valid SIG, repo or release name, else raise ValueError."""
    if not NAME_RE.fullmatch(value) or value in {".", ".."}:
        raise ValueError(f"invalid {what} {value!r}: must match {NAME_RE.pattern}")
    return value


def check_arch(value: str) -> str:
    if value not in KNOWN_ARCHES:
        raise ValueError(f"unknown arch {value!r}: known arches are {', '.join(KNOWN_ARCHES)}")
    return value


def check_key_file(value: str) -> str:
    """A public key's file name in ``desired-state/keys/`` (one path part, no dot first)."""
    if not KEY_FILE_RE.fullmatch(value):
        raise ValueError(f"invalid key file name {value!r}")
    return value


def compose_id(sig: str, release: str, date: str, respin: int) -> str:
    return f"SIG-{sig}-{release}-{date}.{respin}"


def compose_release(release: str, cid: str | None) -> str:
    """The release a compose belongs to, as its ID says (a vault target's ``release`` is
    a point release, ``9.5``, its compose one of release ``9``); else ``release``."""
    m = COMPOSE_ID_RE.fullmatch(cid or "")
    return m["release"] if m else release


def latest_link_name(sig: str, release: str) -> str:
    return f"latest-SIG-{sig}-{release}"


def safe_relpath(href: str) -> PurePosixPath:
    """Parse a repository-relative href; refuse absolute, empty, ``..`` and URL forms."""
    if not href or "\x00" in href or "\\" in href:
        raise UnsafePathError(f"unsafe path {href!r}")
    if "://" in href or href.startswith("/"):
        raise UnsafePathError(f"path {href!r} is absolute; it must stay inside the repository")
    parts = PurePosixPath(href).parts
    if any(p in {"..", "."} for p in parts) or not parts:
        raise UnsafePathError(f"path {href!r} leaves the repository")
    return PurePosixPath(*parts)


def safe_filename(name: str) -> str:
    """A single path component that is not empty, ``.``/``..``, hidden-temp or separated."""
    if not name or name in {".", ".."} or "/" in name or "\x00" in name or "\\" in name:
        raise UnsafePathError(f"unsafe file name {name!r}")
    if name.endswith(TMP_SUFFIX):
        raise UnsafePathError(f"file name {name!r} uses the reserved temporary suffix")
    return name
