"""Reading and writing yum repository metadata, always through createrepo_c.

Streaming: packages are parsed one at a time, so memory does not grow with
the size of a repository beyond the small facts kept for selection.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from sys import intern

import createrepo_c as cr

from .composefiles import CarriedFile, RepoContent
from .errors import UpstreamError
from .selection import PackageFact

#: Records whose content does not depend on package locations, carried over as they are.
CARRIED_TYPES = frozenset({"group", "group_gz", "group_xz", "modules", "updateinfo", "productid"})
#: Every record type a composed ``repomd.xml`` has (:func:`write_repo` writes them).
COMPOSED_TYPES = CARRIED_TYPES | {"primary", "filelists", "other"}
#: The files :func:`write_repo` names so in ``repodata/`` before giving them their checksums.
WRITTEN = frozenset({"primary.xml.gz", "filelists.xml.gz", "other.xml.gz", "repomd.xml"})
_CHECKSUM_PREFIX = re.compile(r"^[0-9a-f]{32,128}-")


@dataclass(frozen=True, slots=True)
class MetaFile:
    """One record of a ``repomd.xml``."""

    type: str
    href: str
    checksum_type: str
    checksum: str
    size: int | None

    @property
    def plain_name(self) -> str:
        """The file name without the checksum prefix of unique metadata file names."""
        return _CHECKSUM_PREFIX.sub("", PurePosixPath(self.href).name)


def parse_repomd(path: Path, source: str) -> list[MetaFile]:
    """The records of a local ``repomd.xml``; ``source`` (a URL) names it in errors."""
    try:
        repomd = cr.Repomd(str(path))
    except Exception as exc:  # createrepo_c raises plain exceptions for bad XML
        raise UpstreamError(f"{source}: not a valid repomd.xml ({exc})") from exc
    records = [
        MetaFile(
            type=str(r.type),
            href=str(r.location_href),
            checksum_type=str(r.checksum_type or "sha256"),
            checksum=str(r.checksum),
            size=int(r.size) if r.size else None,
        )
        for r in repomd.records
    ]
    if not any(r.type == "primary" for r in records):
        raise UpstreamError(f"{source}: repomd.xml has no primary record")
    return records


def _fact(pkg: cr.Package) -> PackageFact:
    """One package's facts. The fields that packages share (a source RPM's subpackages,
    arches, epochs, versions, the checksum type) are interned: each ``str()`` of a
    createrepo_c attribute is a new string: interned, the facts of 100,000 packages
    take 418 bytes each instead of 713."""
    href = str(pkg.location_href or "")
    if pkg.location_base:
        href = f"{pkg.location_base}/{href}"  # refused later by the href check
    return PackageFact(
        pkgid=str(pkg.pkgId),
        checksum_type=intern(str(pkg.checksum_type or "sha256")),
        name=intern(str(pkg.name)),
        epoch=intern(str(pkg.epoch or "0")),
        version=intern(str(pkg.version)),
        release=intern(str(pkg.release)),
        arch=intern(str(pkg.arch)),
        size=int(pkg.size_package or 0),
        href=href,
        sourcerpm=intern(str(pkg.rpm_sourcerpm or "")),
    )


def scan_primary(path: Path, source: str) -> list[PackageFact]:
    """The facts of every package in a primary.xml(.gz|.zst|...), without file lists."""
    facts: list[PackageFact] = []

    def on_package(pkg: cr.Package) -> bool:
        facts.append(_fact(pkg))
        return True

    try:
        cr.xml_parse_primary(str(path), pkgcb=on_package, do_files=0)
    except Exception as exc:
        raise UpstreamError(f"{source}: cannot parse primary metadata ({exc})") from exc
    return facts


def check_in_step(
    path: Path, kind: str, pkgids: Sequence[str], source: str, primary_source: str
) -> None:
    """Refuse a filelists or other metadata file (``kind``) that does not list the packages
    of primary (``pkgids``) in their order; ``source`` and ``primary_source`` (URLs) name
    the two in errors.

    :func:`iter_packages` reads the three files in step, by position: createrepo_c loops
    for ever when this file lists more packages than primary, and leaves a package out
    without a word when it lists fewer. Each package's contents are skipped here.
    """
    parse = cr.xml_parse_filelists if kind == "filelists" else cr.xml_parse_other
    listed = 0
    problem: list[str] = []

    def on_package(pkgid: str | None, _name: str | None, _arch: str | None) -> None:
        nonlocal listed
        expected = pkgids[listed] if listed < len(pkgids) else None
        if pkgid is None or pkgid != expected:  # as createrepo_c compares, but for no checksum
            there = f"has {expected!r} there" if expected else f"lists only {len(pkgids)}"
            problem.append(f"package {listed + 1} is {pkgid!r}, primary {there}")
            raise ValueError(problem[-1])  # stops the parser
        listed += 1

    try:
        parse(str(path), newpkgcb=on_package)
    except Exception as exc:
        if problem:
            raise UpstreamError(
                f"{source}: {kind} does not match {primary_source}: {problem[0]}"
            ) from None
        raise UpstreamError(f"{source}: cannot parse {kind} metadata ({exc})") from exc
    if listed != len(pkgids):
        raise UpstreamError(
            f"{source}: {kind} lists {listed} packages, {primary_source} {len(pkgids)}"
        )


def check_carried(path: Path, record_type: str, source: str) -> str:
    """Refuse a file to be carried as it is (``record_type``) that :func:`write_repo` could
    not record: createrepo_c reads a file whose name says it is compressed through, for
    the checksum of its content. ``source`` (a URL) names it in errors. Returns the
    file's sha256 (what the composed ``repomd.xml`` will say of it)."""
    try:
        record = cr.RepomdRecord(record_type, str(path))
        record.fill(cr.SHA256)
    except Exception as exc:  # createrepo_c raises plain exceptions
        raise UpstreamError(f"{source}: cannot read {record_type} metadata ({exc})") from exc
    return str(record.checksum)


@dataclass(frozen=True, slots=True)
class LocalRepo:
    """An already composed repository: its ``repomd.xml`` records and its packages."""

    path: Path
    records: tuple[MetaFile, ...]
    packages: Mapping[str, PackageFact]  # pkgid -> fact (hrefs as composed)

    def content(self) -> RepoContent | None:
        """What its metadata was written from; None when it holds what :func:`write_repo`
        does not write (then it cannot stand for a repo written now)."""
        carried: list[CarriedFile] = []
        for r in self.records:
            if r.type in CARRIED_TYPES and r.checksum_type == "sha256":
                carried.append(CarriedFile(r.type, r.plain_name, r.checksum))
            elif r.type not in COMPOSED_TYPES:
                return None
        packages = ((f.pkgid, f.checksum_type, f.href) for f in self.packages.values())
        return RepoContent.of(packages, carried)

    def repodata_files(self) -> list[Path]:
        """``repomd.xml`` and every file it names (all of them inside ``repodata/``), or
        an empty list when it names a file elsewhere."""
        names = [PurePosixPath(r.href) for r in self.records]
        if any(n.parent != PurePosixPath("repodata") for n in names):
            return []
        repodata = self.path / "repodata"
        return [repodata / "repomd.xml", *(repodata / n.name for n in names)]


def read_local_repo(repo_dir: Path) -> LocalRepo | None:
    """An already composed local repo, or None when it has no ``repomd.xml``."""
    repomd = repo_dir / "repodata" / "repomd.xml"
    if not repomd.is_file():
        return None
    records = parse_repomd(repomd, str(repomd))
    primary_href = next(r.href for r in records if r.type == "primary")
    primary = repo_dir.joinpath(*PurePosixPath(primary_href).parts)
    facts = {f.pkgid: f for f in scan_primary(primary, str(primary))}
    return LocalRepo(repo_dir, tuple(records), facts)


def repo_index(repo_dir: Path) -> dict[str, PackageFact]:
    """``pkgid -> fact`` of an already composed local repo (for reuse by hardlink)."""
    repo = read_local_repo(repo_dir)
    return {} if repo is None else dict(repo.packages)


def iter_packages(
    primary: Path, filelists: Path | None, other: Path | None
) -> Iterator[cr.Package]:
    return iter(
        cr.PackageIterator(
            primary_path=str(primary),
            filelists_path=str(filelists) if filelists else None,
            other_path=str(other) if other else None,
        )
    )


def write_repo(
    repo_dir: Path,
    packages: Iterator[cr.Package],
    hrefs: Mapping[str, str],
    extras: Sequence[tuple[str, Path]],
    revision: str,
) -> int:
    """Write ``repo_dir/repodata`` for the packages whose pkgId is in ``hrefs``.

    Each package's ``location_href`` becomes ``hrefs[pkgId]``. ``extras`` are
    ``(record type, file)`` pairs carried into repodata as they are. Returns the
    number of packages written.
    """
    writer = cr.RepositoryWriter(
        str(repo_dir), num_packages=len(hrefs), compression=cr.GZ_COMPRESSION
    )
    writer.repomd.set_revision(revision)
    written: set[str] = set()
    for pkg in packages:
        pkgid = str(pkg.pkgId)
        if pkgid not in hrefs or pkgid in written:
            continue
        pkg.location_href = hrefs[pkgid]
        pkg.location_base = None
        writer.add_pkg(pkg)
        written.add(pkgid)
    for record_type, path in extras:
        writer.add_repomd_metadata(record_type, str(path), use_compression=False)
    writer.finish()
    return len(written)
