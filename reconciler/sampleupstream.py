"""Sample upstream: bundled RPMs laid out like the build system, and a server.

The sample RPMs under ``samples/rpms/`` are real, tiny packages built by
``tests/rpms/build.sh`` (see ``tests/rpms/README.md``), in three sets:
``unsigned``, ``signed`` (sample SIG key, ``samples/keys/RPM-GPG-KEY-sample-sig``)
and ``otherkey`` (an unrelated key, ``samples/keys/RPM-GPG-KEY-other``).

:func:`build_upstream` lays them out as the build system publishes them::

    <root>/<project_id>/repo/<repo>/<arch>/         binaries of <arch> + noarch
    <root>/<project_id>/repo/<repo>/<arch>-debug/   debuginfo of <arch>
    <root>/<project_id>/repo/<repo>/src/            source RPMs

each with ``Packages/<file>`` and ``repodata/`` written by createrepo_c, and
:class:`UpstreamServer` serves such a tree over HTTP on 127.0.0.1 with request
counting and fault injection, for tests and the demo.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import email.utils
import http.server
import os
import shutil
import socket
import stat
import sys
import threading
import urllib.parse
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, cast, get_args

import createrepo_c as cr  # type: ignore[import-untyped,unused-ignore]

__all__ = [
    "ARCHES",
    "EXTRAS_DIR",
    "KEYS_DIR",
    "OTHER_KEY",
    "RPMS_DIR",
    "SAMPLES_DIR",
    "SAMPLE_KEY",
    "Fault",
    "RpmSet",
    "SampleRpm",
    "UpstreamServer",
    "add_packages",
    "build_upstream",
    "default_include",
    "include_all",
    "iter_repo_dirs",
    "remove_packages",
    "sample_rpm",
    "sample_rpms",
    "upstream_repo_dir",
    "write_repo",
]

SAMPLES_DIR: Path = Path(__file__).parent / "samples"
"""The bundled samples: ``rpms/<set>/``, ``keys/``, ``extras/``."""
RPMS_DIR: Path = SAMPLES_DIR / "rpms"
KEYS_DIR: Path = SAMPLES_DIR / "keys"
EXTRAS_DIR: Path = SAMPLES_DIR / "extras"
SAMPLE_KEY: Path = KEYS_DIR / "RPM-GPG-KEY-sample-sig"
"""Public key that signed the ``signed`` set."""
OTHER_KEY: Path = KEYS_DIR / "RPM-GPG-KEY-other"
"""Public key that signed the ``otherkey`` set."""

ARCHES: tuple[str, ...] = ("x86_64", "aarch64", "ppc64le", "s390x")
"""Binary arches the sample RPMs are built for (besides noarch)."""

RpmSet = Literal["unsigned", "signed", "otherkey"]

CrObject = Any
"""A createrepo_c object (the module has no type information)."""

_CHANGELOG_LIMIT = 10
_TMP_SUFFIX = ".~tmp~"


# --------------------------------------------------------------------------
# The bundled RPMs
# --------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class SampleRpm:
    """An RPM file and the name, version, release and arch its name carries."""

    name: str
    version: str
    release: str
    arch: str
    path: Path = field(compare=False)

    @classmethod
    def parse(cls, path: Path) -> SampleRpm:
        """Split ``<name>-<version>-<release>.<arch>.rpm``."""
        stem = path.name.removesuffix(".rpm")
        nvr, _, arch = stem.rpartition(".")
        name_version, _, release = nvr.rpartition("-")
        name, _, version = name_version.rpartition("-")
        if stem == path.name or not all((name, version, release, arch)):
            raise ValueError(f"not an RPM file name: {path.name}")
        return cls(name=name, version=version, release=release, arch=arch, path=path)

    @property
    def is_source(self) -> bool:
        """A source RPM."""
        return self.arch == "src"

    @property
    def is_debug(self) -> bool:
        """A debuginfo or debugsource package (goes to ``<arch>-debug``)."""
        return self.name.endswith(("-debuginfo", "-debugsource"))


def sample_rpms(rpm_set: RpmSet = "signed") -> list[Path]:
    """All bundled RPMs of a set (binaries, debuginfo and SRPMs), sorted by name."""
    if rpm_set not in get_args(RpmSet):
        raise ValueError(f"unknown sample RPM set: {rpm_set!r}")
    return sorted((RPMS_DIR / rpm_set).glob("*.rpm"))


def sample_rpm(filename: str, rpm_set: RpmSet = "signed") -> Path:
    """One bundled RPM by file name, e.g. ``sig-hello-1.1-1.x86_64.rpm``."""
    for path in sample_rpms(rpm_set):
        if path.name == filename:
            return path
    raise FileNotFoundError(f"no sample RPM {filename!r} in set {rpm_set!r}")


# --------------------------------------------------------------------------
# Repositories (metadata written with the createrepo_c Python API)
# --------------------------------------------------------------------------


def write_repo(repo_dir: Path, rpm_paths: Sequence[Path], *, extras: bool = False) -> None:
    """Make ``repo_dir`` a repository of exactly ``rpm_paths``.

    The RPMs are copied to ``repo_dir/Packages/`` (copies, not hardlinks, so
    that a test that rewrites a served file cannot damage the bundled
    samples); RPMs already there that are not listed are deleted.  Metadata
    (primary, filelists, other; gzip; file names carrying their checksums) is
    written with createrepo_c.  With ``extras`` the repository also gets comps
    (``group`` and ``group_gz``), an ``updateinfo`` with one advisory per
    source package, and ``modules`` (a static modulemd document that names no
    sample package).  Calling it again regenerates everything: stale metadata
    files are removed after the new ``repomd.xml`` is in place.
    """
    packages_dir = repo_dir / "Packages"
    packages_dir.mkdir(parents=True, exist_ok=True)
    wanted = _by_file_name(rpm_paths)
    for name, src in wanted.items():
        _install_file(src, packages_dir / name)
    for old in packages_dir.iterdir():
        if old.is_file() and old.name not in wanted:
            old.unlink()
    _write_metadata(repo_dir, [packages_dir / name for name in sorted(wanted)], extras=extras)


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


def _write_metadata(repo_dir: Path, rpms: Sequence[Path], *, extras: bool) -> None:
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


# --------------------------------------------------------------------------
# The HTTP server
# --------------------------------------------------------------------------


@dataclass
class Fault:
    """What the server does instead of serving a path normally.

    ``kind`` is ``status`` (answer with ``status`` and a short body),
    ``truncate`` (full headers, ``nbytes`` of body, then the connection is
    dropped), ``corrupt`` (same length, every byte flipped), ``delay``
    (wait ``seconds``, then serve normally) or ``redirect`` (answer ``status``,
    302 unless set, with ``Location: location``).  ``times`` is how many more
    requests it applies to (``None``: all).
    """

    kind: Literal["status", "truncate", "corrupt", "delay", "redirect"]
    status: int = 500
    nbytes: int = 0
    seconds: float = 0.0
    times: int | None = None
    location: str = ""


@dataclass
class _ServerState:
    """What the handler threads share with :class:`UpstreamServer`."""

    root: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    faults: dict[str, Fault] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    resolved_root: Path = field(init=False)  # the root, its symlinks resolved once

    def __post_init__(self) -> None:
        self.resolved_root = self.root.resolve()

    def record(self, method: str, path: str) -> Fault | None:
        """Count a request; return the fault to apply to it, if any.

        A fault with ``times`` is used up only by requests it acts on: a HEAD
        request is not affected by ``truncate`` or ``corrupt``.
        """
        with self.lock:
            self.requests.append(path)
            self.methods.append(method)
            fault = self.faults.get(path)
            if fault is None or (method == "HEAD" and fault.kind in {"truncate", "corrupt"}):
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del self.faults[path]
            return dataclasses.replace(fault, times=None)


class _HTTPServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that can close its connections and join its threads.

    Connection threads are daemon threads (a forgotten server never blocks
    interpreter exit) but are tracked, so that :meth:`close_all` can end
    keep-alive connections and join every thread.
    """

    def __init__(self, state: _ServerState) -> None:
        self.state = state
        self._tracked_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._workers: set[threading.Thread] = set()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Handle a connection in a new, tracked thread."""
        worker = threading.Thread(
            target=self._work, args=(request, client_address), name="upstream-conn", daemon=True
        )
        with self._tracked_lock:
            self._connections.add(request)
            self._workers.add(worker)
        worker.start()

    def _work(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._tracked_lock:
                self._connections.discard(request)
                self._workers.discard(threading.current_thread())

    def close_all(self) -> None:
        """End open (keep-alive) connections and wait for their threads."""
        with self._tracked_lock:
            connections = list(self._connections)
            workers = list(self._workers)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for worker in workers:
            worker.join()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Keep handler errors (e.g. a client hanging up) off stderr."""
        del request, client_address
        # Called from within the except block of the failing handler.
        error = sys.exc_info()[1]
        with self.state.lock:
            self.state.errors.append(repr(error))


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves files under the root with ETag/Last-Modified, HEAD and faults."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server_version = "SampleUpstream/1.0"
    sys_version = ""

    @property
    def state(self) -> _ServerState:
        """The shared server state."""
        return cast(_HTTPServer, self.server).state

    def log_message(self, format: str, *args: object) -> None:
        """Do not log to stderr."""
        del format, args

    def do_GET(self) -> None:
        """Serve a file, unless a fault says otherwise."""
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        """Headers only."""
        self._serve(send_body=False)

    def _serve(self, *, send_body: bool) -> None:
        url_path = _url_path(self.path)
        fault = self.state.record(self.command, url_path)
        if fault is not None and fault.kind == "status":
            self._send_text(fault.status, f"injected fault: {fault.status}\n", send_body)
            return
        if fault is not None and fault.kind == "redirect":
            self.send_response(fault.status if 300 <= fault.status < 400 else 302)
            self.send_header("Location", fault.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if fault is not None and fault.kind == "delay":
            if self.state.stopping.wait(fault.seconds):
                self.close_connection = True
                return
            fault = None
        found = self._resolve(url_path)
        if found is None:
            self._send_text(404, "not found\n", send_body)
            return
        file_path, info = found
        etag = f'"{info.st_ino:x}-{info.st_size:x}-{info.st_mtime_ns:x}"'
        if self._not_modified(etag, info.st_mtime):
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", _content_type(file_path))
        self.send_header("Content-Length", str(info.st_size))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", email.utils.formatdate(info.st_mtime, usegmt=True))
        self.end_headers()
        if not send_body:
            return
        if fault is None:  # the bytes go from the page cache to the socket (sendfile(2))
            with file_path.open("rb") as fh:
                self.connection.sendfile(fh, count=info.st_size)
            return
        body = file_path.read_bytes()
        if fault.kind == "truncate":
            self.wfile.write(body[: fault.nbytes])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault.kind == "corrupt":
            body = bytes(b ^ 0xFF for b in body)
        self.wfile.write(body)

    def _resolve(self, url_path: str) -> tuple[Path, os.stat_result] | None:
        """The regular file under the root that ``url_path`` names, and its stat; else None."""
        parts = [p for p in url_path.split("/") if p]
        if any(p in {".", ".."} or "\\" in p or "\0" in p for p in parts):
            return None
        root = self.state.resolved_root
        candidate = root.joinpath(*parts).resolve()
        if not candidate.is_relative_to(root):
            return None
        try:
            st = candidate.stat()
        except OSError:
            return None
        return (candidate, st) if stat.S_ISREG(st.st_mode) else None

    def _not_modified(self, etag: str, mtime: float) -> bool:
        """Whether If-None-Match (preferred) or If-Modified-Since allow a 304."""
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
            return "*" in tags or etag in tags
        if_modified_since = self.headers.get("If-Modified-Since")
        if if_modified_since is None:
            return False
        try:
            since = email.utils.parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=dt.UTC)
        return int(mtime) <= since.timestamp()

    def _send_text(self, status: int, text: str, send_body: bool) -> None:
        """A short plain-text response."""
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)


def _url_path(target: str) -> str:
    """The decoded path of a request target (origin form or absolute URL)."""
    if target.startswith(("http://", "https://")):
        target = urllib.parse.urlsplit(target).path or "/"
    return urllib.parse.unquote(target.split("?", 1)[0].split("#", 1)[0])


def _content_type(path: Path) -> str:
    """A plausible Content-Type for repository files."""
    name = path.name
    if name.endswith(".rpm"):
        return "application/x-rpm"
    if name.endswith(".xml"):
        return "text/xml"
    if name.endswith(".gz"):
        return "application/gzip"
    return "application/octet-stream"


class UpstreamServer:
    """A real HTTP server on 127.0.0.1 (ephemeral port) serving ``root``.

    Use as a context manager::

        with UpstreamServer(root) as srv:
            httpx.get(f"{srv.base_url}/<project>/repo/<repo>/x86_64/repodata/repomd.xml")

    Requests are counted (:attr:`requests`, :meth:`count`), files answer
    conditional requests (ETag / If-None-Match, Last-Modified /
    If-Modified-Since) with 304, and faults can be injected per exact URL
    path (:meth:`fail`, :meth:`truncate`, :meth:`corrupt`, :meth:`delay`).
    Only regular files under ``root`` are served; everything else is 404.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._state = _ServerState(root=root)
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> UpstreamServer:
        """Bind and start serving in a background thread."""
        if self._server is not None:
            raise RuntimeError("server already started")
        self._state.stopping.clear()
        self._server = _HTTPServer(self._state)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"upstream-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and join every thread."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._state.stopping.set()
        server.shutdown()
        thread.join()
        server.close_all()
        server.server_close()
        self._server = None
        self._thread = None

    def __enter__(self) -> UpstreamServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # addresses

    @property
    def port(self) -> int:
        """The bound port."""
        if self._server is None:
            raise RuntimeError("server not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """The URL of a path under the root (``a/b`` or ``/a/b``)."""
        return f"{self.base_url}/{urllib.parse.quote(path.lstrip('/'))}"

    # request counting

    @property
    def requests(self) -> list[str]:
        """URL paths requested so far (GET and HEAD), oldest first (a copy)."""
        with self._state.lock:
            return list(self._state.requests)

    @property
    def methods(self) -> list[str]:
        """The method of each entry of :attr:`requests`."""
        with self._state.lock:
            return list(self._state.methods)

    @property
    def errors(self) -> list[str]:
        """Exceptions (repr) raised while handling requests, e.g. client hang-ups."""
        with self._state.lock:
            return list(self._state.errors)

    def count(self, match: str | Callable[[str], bool] = "") -> int:
        """How many requested paths end with ``match`` (or satisfy it, if callable)."""
        predicate = match if callable(match) else (lambda p: p.endswith(match))
        return sum(1 for path in self.requests if predicate(path))

    def reset_counts(self) -> None:
        """Forget the requests counted so far."""
        with self._state.lock:
            self._state.requests.clear()
            self._state.methods.clear()

    # fault injection

    def fail(self, path: str, status: int = 500, *, times: int | None = None) -> None:
        """Answer requests for ``path`` with ``status`` (the first ``times`` ones)."""
        self._set_fault(path, Fault("status", status=status, times=times))

    def truncate(self, path: str, nbytes: int, *, times: int | None = None) -> None:
        """Send full headers but only ``nbytes`` of the body, then drop the connection."""
        self._set_fault(path, Fault("truncate", nbytes=nbytes, times=times))

    def corrupt(self, path: str, *, times: int | None = None) -> None:
        """Serve the file with the same length and every byte flipped."""
        self._set_fault(path, Fault("corrupt", times=times))

    def delay(self, path: str, seconds: float, *, times: int | None = None) -> None:
        """Wait ``seconds`` before answering (for client timeout tests)."""
        self._set_fault(path, Fault("delay", seconds=seconds, times=times))

    def redirect(
        self, path: str, location: str, status: int = 302, *, times: int | None = None
    ) -> None:
        """Answer requests for ``path`` with a redirect to ``location``."""
        self._set_fault(path, Fault("redirect", status=status, location=location, times=times))

    def drop_idle_connections(self) -> None:
        """Close every kept-alive connection, as a server does after its idle timeout."""
        if self._server is not None:
            self._server.close_all()

    def clear_faults(self) -> None:
        """Serve everything normally again."""
        with self._state.lock:
            self._state.faults.clear()

    def _set_fault(self, path: str, fault: Fault) -> None:
        if fault.times is not None and fault.times < 1:
            raise ValueError("times must be at least 1")
        key = _url_path(path if path.startswith(("/", "http://")) else "/" + path)
        with self._state.lock:
            self._state.faults[key] = fault


def iter_repo_dirs(root: Path) -> Iterator[Path]:
    """Every directory under ``root`` that holds ``repodata/repomd.xml``."""
    for repomd in sorted(root.rglob("repodata/repomd.xml")):
        yield repomd.parent.parent
