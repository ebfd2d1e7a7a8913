"""Which upstream packages a compose takes, and where they go. Pure: no I/O.

``keep_versions`` keeps the newest N versions of each ``name.arch`` (0 keeps
all), ordered by RPM's own version comparison.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cmp_to_key
from pathlib import PurePosixPath

from .errors import UnsafePathError
from .names import TMP_SUFFIX, safe_filename, safe_relpath

#: Control characters (C0, DEL, C1) and the line and paragraph separators: a file name
#: with one cannot be a line of a manifest or a file list.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: The longest file name (in bytes) taken from the metadata: what a file system holds
#: (NAME_MAX, 255 on Linux) with room for the temporary suffix it is written under first.
MAX_NAME_BYTES = 255 - len(TMP_SUFFIX)


@dataclass(frozen=True, slots=True)
class PackageFact:
    """What planning needs to know of one upstream package (from primary.xml)."""

    pkgid: str
    checksum_type: str
    name: str
    epoch: str
    version: str
    release: str
    arch: str
    size: int
    href: str
    sourcerpm: str = ""

    @property
    def filename(self) -> str:
        return PurePosixPath(self.href).name

    @property
    def nevra(self) -> str:
        return f"{self.name}-{self.epoch or '0'}:{self.version}-{self.release}.{self.arch}"


def _segment(s: str, i: int, digits: bool) -> int:
    while i < len(s) and (s[i].isdigit() if digits else s[i].isalpha()) and s[i].isascii():
        i += 1
    return i


def rpmvercmp(a: str, b: str) -> int:  # noqa: PLR0912 - a faithful port reads best flat
    """RPM's version comparison (a port of rpmvercmp), including ``~`` and ``^``."""
    if a == b:
        return 0
    i = j = 0
    while i < len(a) or j < len(b):
        while i < len(a) and not (a[i].isascii() and a[i].isalnum()) and a[i] not in "~^":
            i += 1
        while j < len(b) and not (b[j].isascii() and b[j].isalnum()) and b[j] not in "~^":
            j += 1
        ca, cb = a[i : i + 1], b[j : j + 1]
        if ca == "~" or cb == "~":
            if ca != "~":
                return 1
            if cb != "~":
                return -1
            i, j = i + 1, j + 1
            continue
        if ca == "^" or cb == "^":
            if not ca:
                return -1
            if not cb:
                return 1
            if ca != "^":
                return 1
            if cb != "^":
                return -1
            i, j = i + 1, j + 1
            continue
        if not (ca and cb):
            break
        digits = ca.isdigit()
        ei, ej = _segment(a, i, digits), _segment(b, j, digits)
        sa, sb = a[i:ei], b[j:ej]
        if not sb:
            return 1 if digits else -1
        if digits:
            sa, sb = sa.lstrip("0"), sb.lstrip("0")
            if len(sa) != len(sb):
                return 1 if len(sa) > len(sb) else -1
        if sa != sb:
            return 1 if sa > sb else -1
        i, j = ei, ej
    if i >= len(a) and j >= len(b):
        return 0
    return -1 if i >= len(a) else 1


def compare_evr(a: PackageFact, b: PackageFact) -> int:
    for x, y in ((a.epoch or "0", b.epoch or "0"), (a.version, b.version), (a.release, b.release)):
        c = rpmvercmp(x, y)
        if c:
            return c
    return 0


def check_location(href: str) -> PurePosixPath:
    """Refuse a location (of a package or a metadata file) that leaves the repo, holds a
    control character or a line separator, or whose file name is unsafe or too long to be
    written here (with the temporary suffix); every refusal names the href."""
    path = safe_relpath(href)
    unprintable = _CONTROL.search(href)
    if unprintable:
        raise UnsafePathError(
            f"location {href!r} has the unprintable character {unprintable.group()!r}"
        )
    try:
        safe_filename(path.name)
    except UnsafePathError as exc:
        raise UnsafePathError(f"location {href!r}: {exc}") from None
    size = len(path.name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        raise UnsafePathError(
            f"location {href!r}: a file name of {size} bytes (at most {MAX_NAME_BYTES})"
        )
    return path


def check_href(fact: PackageFact) -> PurePosixPath:
    """Refuse a package's location_href as :func:`check_location` does, or one that does not
    name an RPM; every refusal names the href."""
    path = check_location(fact.href)
    if not path.name.endswith(".rpm"):
        raise UnsafePathError(f"location {fact.href!r} does not name an .rpm file")
    return path


#: productmd's pattern of an RPM's N-E:V-R.A (``productmd.common.RPM_NVRA_RE``).
_NVRA = re.compile(
    r"^(.*/)?(?P<name>.*)-((?P<epoch>\d+):)?(?P<version>.*)-(?P<release>.*)\.(?P<arch>.*)$"
)
#: The arches of source packages.
SOURCE_ARCHES = frozenset({"src", "nosrc"})


def _parse_nvra(text: str) -> re.Match[str] | None:
    """``text`` read as ``productmd.common.parse_nvra`` reads it, or None where it fails."""
    return _NVRA.match(text.removesuffix(".rpm"))


def identity_problem(fact: PackageFact, source: bool) -> str | None:
    """Why the compose's ``rpms.json`` (productmd) could not record ``fact``, a package of a
    source repository (``source``) or of a binary one; None when it can.

    productmd reads the package's N-E:V-R.A back, wants a source package (arch ``src`` or
    ``nosrc``) exactly in a source repository, and the name of a binary package's source
    RPM as ``N-V-R.A.rpm`` (a package without one is, to RPM, a source package).
    """
    nevra = _parse_nvra(fact.nevra)
    if nevra is None:
        return f"{fact.nevra!r} does not read as name-epoch:version-release.arch"
    if source and nevra["arch"] not in SOURCE_ARCHES:
        return f"arch {nevra['arch']!r} in a source repository"
    if not source and nevra["arch"] in SOURCE_ARCHES:
        return f"arch {nevra['arch']!r} in a binary repository"
    if not source and (not fact.sourcerpm or _parse_nvra(fact.sourcerpm) is None):
        return f"its source RPM {fact.sourcerpm!r} is not named name-version-release.arch.rpm"
    return None


def newest_first(facts: Iterable[PackageFact]) -> list[list[PackageFact]]:
    """The distinct packages (by pkgid) of each name.arch, newest first (RPM's order).

    Groups come in the order their first package came; a package listed twice is
    taken once (its first record), even when the records differ in name or arch.
    """
    groups: dict[tuple[str, str], dict[str, PackageFact]] = defaultdict(dict)
    seen: set[str] = set()
    for fact in facts:
        if fact.pkgid not in seen:  # listed again, even under another name.arch: one file
            seen.add(fact.pkgid)
            groups[(fact.name, fact.arch)][fact.pkgid] = fact
    return [
        sorted(versions.values(), key=cmp_to_key(compare_evr), reverse=True)
        for versions in groups.values()
    ]


def by_file_name(facts: Iterable[PackageFact]) -> list[PackageFact]:
    return sorted(facts, key=lambda f: (f.filename, f.pkgid))


def select(facts: Iterable[PackageFact], keep_versions: int) -> list[PackageFact]:
    """The packages to compose: newest ``keep_versions`` per name.arch, sorted by file name.

    Duplicate records of the same package (same pkgid) are taken once.
    """
    chosen: list[PackageFact] = []
    for ordered in newest_first(facts):
        chosen.extend(ordered if keep_versions == 0 else ordered[:keep_versions])
    return by_file_name(chosen)


def target_href(filename: str, hashed: bool) -> str:
    """Where a package lives in the composed repo: ``Packages/<l>/<file>`` when hashed."""
    safe_filename(filename)
    return f"Packages/{filename[0].lower()}/{filename}" if hashed else f"Packages/{filename}"


def duplicate_targets(facts: Iterable[PackageFact], hashed: bool) -> list[str]:
    """Target paths claimed by two different packages (same file name, other bytes)."""
    seen: dict[str, str] = {}
    dups: list[str] = []
    for fact in facts:
        href = target_href(fact.filename, hashed)
        if seen.setdefault(href, fact.pkgid) != fact.pkgid:
            dups.append(href)
    return dups
