"""Yum repositories of the sample RPMs, laid out as the build system publishes them::

    <root>/<project_id>/repo/<repo>/<arch>/         binaries of <arch> + noarch
    <root>/<project_id>/repo/<repo>/<arch>-debug/   debuginfo of <arch>
    <root>/<project_id>/repo/<repo>/src/            source RPMs

each with ``Packages/<file>`` and ``repodata/`` written by createrepo_c.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import createrepo_c as cr  # type: ignore[import-untyped,unused-ignore]

from .rpms import (
    _CHANGELOG_LIMIT,
    _TMP_SUFFIX,
    EXTRAS_DIR,
    CrObject,
    RpmSet,
    SampleRpm,
    sample_rpms,
)

# --------------------------------------------------------------------------
# Repositories (metadata written with the createrepo_c Python API)
# --------------------------------------------------------------------------


def write_repo(
    repo_dir: Path, rpm_paths: Sequence[Path], *, extras: bool = False, modules: str | None = None
) -> None:
    """Make ``repo_dir`` a repository of exactly ``rpm_paths``.

    The RPMs are copied to ``repo_dir/Packages/`` (copies, not hardlinks, so
    that a test that rewrites a served file cannot damage the bundled
    samples); RPMs already there that are not listed are deleted.  Metadata
    (primary, filelists, other; gzip; file names carrying their checksums) is
    written with createrepo_c.  With ``extras`` the repository also gets comps
    (``group`` and ``group_gz``), an ``updateinfo`` with one advisory per
    source package, and ``modules`` (a static modulemd document that names no
    sample package).  ``modules`` (the text of a ``modules.yaml``) gives the
    repository that module metadata instead (with or without the other extras).
    Calling it again regenerates everything: stale metadata files are removed
    after the new ``repomd.xml`` is in place.
    """
    packages_dir = repo_dir / "Packages"
    packages_dir.mkdir(parents=True, exist_ok=True)
    wanted = _by_file_name(rpm_paths)
    for name, src in wanted.items():
        _install_file(src, packages_dir / name)
    for old in packages_dir.iterdir():
        if old.is_file() and old.name not in wanted:
            old.unlink()
    rpms = [packages_dir / name for name in sorted(wanted)]
    _write_metadata(repo_dir, rpms, extras=extras, modules=modules)


def add_packages(repo_dir: Path, rpm_paths: Sequence[Path]) -> None:
    """Add RPMs to an existing repository and regenerate its metadata.

    An "upstream update" for tests.  A repository that had extras keeps them.
    """
    existing = sorted((repo_dir / "Packages").glob("*.rpm"))
    by_name = _by_file_name(existing) | _by_file_name(rpm_paths)
    write_repo(repo_dir, list(by_name.values()), extras=_has_extras(repo_dir))


def remove_packages(repo_dir: Path, filenames: Collection[str]) -> None:
    """Remove RPMs (by file name) from a repository and regenerate its metadata."""
    packages_dir = repo_dir / "Packages"
    missing = set(filenames) - {p.name for p in packages_dir.glob("*.rpm")}
    if missing:
        raise FileNotFoundError(f"not in {packages_dir}: {sorted(missing)}")
    keep = [p for p in sorted(packages_dir.glob("*.rpm")) if p.name not in filenames]
    write_repo(repo_dir, keep, extras=_has_extras(repo_dir))


def _by_file_name(rpm_paths: Sequence[Path]) -> dict[str, Path]:
    """Map file name to path; the same name twice must be the same file."""
    result: dict[str, Path] = {}
    for path in rpm_paths:
        if not path.name.endswith(".rpm"):
            raise ValueError(f"not an RPM: {path}")
        other = result.get(path.name)
        if other is not None and other.resolve() != path.resolve():
            raise ValueError(f"two different files named {path.name}: {other}, {path}")
        result[path.name] = path
    return result


def _install_file(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` (via a temporary name and a rename)."""
    if dst.exists() and src.resolve() == dst.resolve():
        return
    tmp = dst.with_name(dst.name + _TMP_SUFFIX)
    shutil.copy2(src, tmp)
    tmp.replace(dst)


def _has_extras(repo_dir: Path) -> bool:
    """Whether the repository's current metadata has an updateinfo record."""
    repomd_path = repo_dir / "repodata" / "repomd.xml"
    return repomd_path.exists() and "updateinfo" in cr.Repomd(str(repomd_path))


def _write_metadata(
    repo_dir: Path, rpms: Sequence[Path], *, extras: bool, modules: str | None = None
) -> None:
    """Write ``repo_dir/repodata`` for ``rpms`` (which lie in ``repo_dir/Packages``).

    Files are prepared in ``repodata.~tmp~/``, moved into ``repodata/``, then
    ``repomd.xml`` is replaced, then files it no longer names are deleted.
    """
    work = repo_dir / ("repodata" + _TMP_SUFFIX)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    packages: list[_CrPackage] = [
        cr.package_from_rpm(
            str(path),
            checksum_type=cr.SHA256,
            location_href=f"Packages/{path.name}",
            changelog_limit=_CHANGELOG_LIMIT,
        )
        for path in rpms
    ]
    records = _write_package_metadata(work, packages)
    if extras:
        records += _write_extras(work, packages)
    if modules is not None:
        records = [r for r in records if r.type != "modules"]
        modules_gz = work / "modules.yaml.gz"
        out = cr.CrFile(str(modules_gz), cr.MODE_WRITE, cr.GZ_COMPRESSION)
        out.write(modules)
        out.close()
        records.append(cr.RepomdRecord("modules", str(modules_gz)))

    repomd = cr.Repomd()
    for record in records:
        record.fill(cr.SHA256)
        record.rename_file()
        repomd.set_record(record)
    repomd.sort_records()

    repodata = repo_dir / "repodata"
    repodata.mkdir(exist_ok=True)
    for path in work.iterdir():
        path.replace(repodata / path.name)
    (work / "repomd.xml").write_text(repomd.xml_dump(), encoding="utf-8")
    (work / "repomd.xml").replace(repodata / "repomd.xml")
    work.rmdir()

    current = {"repomd.xml"} | {Path(record.location_href).name for record in records}
    for path in repodata.iterdir():
        if path.name not in current:
            path.unlink()


def _write_package_metadata(work: Path, packages: Sequence[_CrPackage]) -> list[CrObject]:
    """Write primary, filelists and other for ``packages``; return their records."""
    writers = {
        "primary": cr.PrimaryXmlFile,
        "filelists": cr.FilelistsXmlFile,
        "other": cr.OtherXmlFile,
    }
    records: list[CrObject] = []
    for kind, writer_class in writers.items():
        path = work / f"{kind}.xml.gz"
        writer = writer_class(str(path), compressiontype=cr.GZ_COMPRESSION)
        writer.set_num_of_pkgs(len(packages))
        for package in packages:
            writer.add_pkg(package)
        writer.close()
        records.append(cr.RepomdRecord(kind, str(path)))
    return records


def _write_extras(work: Path, packages: Sequence[_CrPackage]) -> list[CrObject]:
    """Write comps, updateinfo and modules; return their records."""
    comps = work / "comps.xml"
    shutil.copyfile(EXTRAS_DIR / "comps.xml", comps)
    comps_gz = work / "comps.xml.gz"
    cr.compress_file(str(comps), str(comps_gz), cr.GZ_COMPRESSION)

    modules_gz = work / "modules.yaml.gz"
    cr.compress_file(str(EXTRAS_DIR / "modules.yaml"), str(modules_gz), cr.GZ_COMPRESSION)

    updateinfo_gz = work / "updateinfo.xml.gz"
    out = cr.CrFile(str(updateinfo_gz), cr.MODE_WRITE, cr.GZ_COMPRESSION)
    out.write(_updateinfo(packages).xml_dump())
    out.close()

    return [
        cr.RepomdRecord("group", str(comps)),
        cr.RepomdRecord("group_gz", str(comps_gz)),
        cr.RepomdRecord("updateinfo", str(updateinfo_gz)),
        cr.RepomdRecord("modules", str(modules_gz)),
    ]


def _updateinfo(packages: Sequence[_CrPackage]) -> CrObject:
    """One ``enhancement`` advisory per source package among ``packages``."""
    by_source: dict[str, list[_CrPackage]] = defaultdict(list)
    for pkg in packages:
        source = pkg.rpm_sourcerpm or Path(pkg.location_href).name
        by_source[source.removesuffix(".src.rpm")].append(pkg)

    updateinfo = cr.UpdateInfo()
    for source_nvr, members in sorted(by_source.items()):
        updateinfo.append(_update_record(source_nvr, members))
    return updateinfo


def _update_record(source_nvr: str, members: Sequence[_CrPackage]) -> CrObject:
    """The advisory ``SAMPLE-<source n-v-r>`` listing ``members``."""
    advisory_id = f"SAMPLE-{source_nvr}"
    issued = dt.datetime.fromtimestamp(max(m.time_build for m in members), tz=dt.UTC)
    record = cr.UpdateRecord()
    record.fromstr = "sig@example.org"
    record.status = "final"
    record.type = "enhancement"
    record.version = "1"
    record.id = advisory_id
    record.title = f"{source_nvr} sample update"
    record.issued_date = issued.replace(tzinfo=None)
    record.updated_date = issued.replace(tzinfo=None)
    record.rights = "Public domain sample data"
    record.release = "Sample SIG"
    record.summary = f"Sample update for {source_nvr}"
    record.description = "An advisory of the sample upstream, for tests."
    record.solution = "Update the packages."

    reference = cr.UpdateReference()
    reference.href = f"https://example.org/advisories/{advisory_id}"
    reference.id = advisory_id
    reference.type = "self"
    reference.title = advisory_id
    record.append_reference(reference)

    collection = cr.UpdateCollection()
    collection.shortname = "sample-sig"
    collection.name = "Sample SIG"
    for member in sorted(members, key=lambda m: m.location_href):
        collection.append(_collection_package(member))
    record.append_collection(collection)
    return record


def _collection_package(pkg: _CrPackage) -> CrObject:
    """An ``<package>`` entry of an advisory's package list."""
    entry = cr.UpdateCollectionPackage()
    entry.name = pkg.name
    entry.version = pkg.version
    entry.release = pkg.release
    entry.epoch = pkg.epoch or "0"
    entry.arch = pkg.arch
    entry.src = pkg.rpm_sourcerpm or Path(pkg.location_href).name
    entry.filename = Path(pkg.location_href).name
    entry.sum = pkg.pkgId
    entry.sum_type = cr.SHA256
    return entry


class _CrPackage(Protocol):
    """The attributes of ``createrepo_c.Package`` used here (for type checking)."""

    name: str
    version: str
    release: str
    epoch: str | None
    arch: str
    pkgId: str
    location_href: str
    rpm_sourcerpm: str | None
    time_build: int


# --------------------------------------------------------------------------
# The build system's layout
# --------------------------------------------------------------------------


def include_all(repo: str, rpm_path: Path) -> bool:
    """An ``include`` filter that takes every sample RPM."""
    del repo, rpm_path
    return True


def default_include(repo: str, rpm_path: Path) -> bool:
    """The default ``include`` filter: every sample RPM except sig-hello 1.1.

    So an upstream starts with sig-hello 1.0 only, and a test can publish 1.1
    later (:func:`add_packages`) as an upstream update.
    """
    del repo
    rpm = SampleRpm.parse(rpm_path)
    return not (rpm.name.startswith("sig-hello") and rpm.version == "1.1")


def upstream_repo_dir(root: Path, project_id: str, repo: str, arch: str) -> Path:
    """``<root>/<project_id>/repo/<repo>/<arch>``; arch may be ``<arch>-debug`` or ``src``."""
    for part in (project_id, repo, arch):
        if not part or part in {".", ".."} or "/" in part or "\\" in part:
            raise ValueError(f"unsafe path component: {part!r}")
    return root / project_id / "repo" / repo / arch


def build_upstream(
    root: Path,
    project_id: str,
    repos: Mapping[str, Sequence[str]],
    *,
    rpm_set: RpmSet = "signed",
    extras_for: Collection[str] = (),
    include: Callable[[str, Path], bool] | None = None,
) -> None:
    """Lay out sample repositories as the build system publishes them.

    For each repo name in ``repos`` and each arch in its list, writes
    ``<arch>/`` (binaries of that arch plus noarch), ``<arch>-debug/``
    (debuginfo of that arch) and, once per repo, ``src/`` (source RPMs),
    all under ``root/<project_id>/repo/<repo>/``.  ``include(repo, path)``
    picks the RPMs; the default (:func:`default_include`) leaves out
    sig-hello 1.1 so that tests can add it later as an upstream update; pass
    :func:`include_all` for everything.  Repos named in ``extras_for`` get
    comps, updateinfo and modules in their binary ``<arch>/`` repositories.
    An arch without sample RPMs (e.g. riscv64) gets the noarch ones only.
    """
    chosen = include or default_include
    unknown = set(extras_for) - set(repos)
    if unknown:
        raise ValueError(f"extras_for names unknown repos: {sorted(unknown)}")
    rpms = [SampleRpm.parse(path) for path in sample_rpms(rpm_set)]
    for repo, arches in repos.items():
        picked = [rpm for rpm in rpms if chosen(repo, rpm.path)]
        for arch in arches:
            binaries = [r.path for r in picked if not r.is_debug and r.arch in {arch, "noarch"}]
            debug = [r.path for r in picked if r.is_debug and r.arch == arch]
            write_repo(
                upstream_repo_dir(root, project_id, repo, arch),
                binaries,
                extras=repo in extras_for,
            )
            write_repo(upstream_repo_dir(root, project_id, repo, f"{arch}-debug"), debug)
        sources = [r.path for r in picked if r.is_source]
        write_repo(upstream_repo_dir(root, project_id, repo, "src"), sources)


def iter_repo_dirs(root: Path) -> Iterator[Path]:
    """Every directory under ``root`` that holds ``repodata/repomd.xml``."""
    for repomd in sorted(root.rglob("repodata/repomd.xml")):
        yield repomd.parent.parent
