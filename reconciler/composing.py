"""Composing: a dated, immutable snapshot of one SIG release (docs/architecture.md).

One compose, in order:

1. lock the SIG release, allocate the compose ID (productmd's form), write
   ``COMPOSE_ID`` and ``STATUS`` = STARTED;
2. for every variant (repo x arch, its -debug twin, its sources): fetch and
   verify ``repomd.xml`` and the metadata it names, choose the packages
   (``keep_versions``), refuse hrefs that leave the repo;
3. place every package: hardlink it from the previous compose when that holds
   the same checksum, else download it (concurrently, retried, verified);
4. check RPM signatures when asked; write new metadata with createrepo_c
   (hrefs rewritten for the hashed layout), carry comps/modules/updateinfo;
5. write productmd metadata, ``STATUS`` = FINISHED, swap ``latest-*``.

Any failure marks the compose DOOMED and leaves ``latest-*`` and every
earlier compose untouched: this module only writes inside the new compose
directory, plus the ``latest-*`` link after success.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from . import repodata
from .composemeta import (
    RECORD_NAME,
    ComposeOnDisk,
    ComposeRecord,
    list_composes,
    read_record,
    upstream_revision,
    write_productmd,
    write_status,
)
from .errors import ComposeError, ReconcilerError, UpstreamError
from .fsutil import atomic_write, link_or_copy, swap_symlink
from .hostconfig import HostConfig
from .layout import ComposeTree, Variant
from .locking import exclusive_lock
from .manifest import (
    SourceFile,
    diff,
    read_manifest,
    scan_source,
    write_changes,
    write_manifest,
)
from .names import safe_relpath
from .progress import NullReporter, Reporter
from .selection import PackageFact, check_href, duplicate_targets, select, target_href
from .signatures import Keyring
from .spec import ReleaseSpec, Spec, variants_of
from .upstream import Expected, Upstream
from .vocabulary import ComposeStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComposeRequest:
    """What to compose. ``repos``/``arches`` restrict it (the rest is carried over)."""

    sig: str
    release: str
    repos: frozenset[str] | None = None
    arches: frozenset[str] | None = None
    check_signatures: bool | None = None  # None: as the spec says
    git_revision: str | None = None


@dataclass(frozen=True)
class ComposeResult:
    compose_id: str
    path: Path
    status: ComposeStatus
    error: str | None = None
    packages: int = 0
    downloaded: int = 0
    downloaded_bytes: int = 0
    linked: int = 0
    requests: int = 0
    seconds: float = 0.0
    missing: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status is ComposeStatus.FINISHED


@dataclass
class _VariantWork:
    """One variant after its metadata was fetched and its packages chosen."""

    variant: Variant
    url: str
    repomd_sha256: str
    meta: dict[str, Path]
    extras: list[tuple[str, Path]]
    chosen: list[PackageFact] = field(default_factory=list)

    def hrefs(self, hashed: bool) -> dict[str, str]:
        return {f.pkgid: target_href(f.filename, hashed) for f in self.chosen}


@dataclass
class _Placement:
    """One distinct package (by checksum) and every place in the compose it goes."""

    fact: PackageFact
    url: str
    targets: list[Path]
    reuse: Path | None = None
    mtime_ns: int | None = None  # of the placed file (for the manifest), once placed


@dataclass
class _Counters:
    downloaded: int = 0
    downloaded_bytes: int = 0
    linked: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, downloaded: int = 0, nbytes: int = 0, linked: int = 0) -> None:
        with self.lock:
            self.downloaded += downloaded
            self.downloaded_bytes += nbytes
            self.linked += linked


class Composer:
    """Runs one compose. Use :func:`compose` unless you need the pieces."""

    def __init__(
        self,
        spec: Spec,
        spec_dir: Path,
        host: HostConfig,
        request: ComposeRequest,
        reporter: Reporter | None = None,
        now: datetime | None = None,
    ) -> None:
        self.spec, self.spec_dir, self.host, self.request = spec, spec_dir, host, request
        self.reporter = reporter or NullReporter()
        self.now = now or datetime.now(UTC)
        try:
            self.rel: ReleaseSpec = spec.release(request.sig, request.release)
        except KeyError as exc:
            raise ComposeError(str(exc.args[0])) from None
        self.tree = ComposeTree(host.roots.compose, request.sig, request.release)
        self.all_variants = variants_of(self.rel)
        self.variants = self._requested_variants()
        self.counters = _Counters()

    # -- entry point -------------------------------------------------------------

    def run(self) -> ComposeResult:
        started = time.monotonic()
        self._make_release_dir()
        what = f"a compose of SIG {self.request.sig} release {self.request.release}"
        try:
            lock = exclusive_lock(self.tree.lock_file, what)
        except OSError as exc:
            raise ComposeError(
                f"{self.tree.lock_file}: cannot create lock: {exc.strerror}"
            ) from exc
        with lock:
            previous = self._previous()
            cid, date, respin = self._allocate()
            cdir = self.tree.compose_dir(cid)
            with self._compose_log(cdir / "logs" / "compose.log"):
                log.info("compose %s started (previous: %s)", cid, previous and previous.compose_id)
                with Upstream(self.host.download, log) as up:
                    try:
                        status, missing = self._compose(up, cid, date, respin, previous)
                    except (ReconcilerError, OSError) as exc:
                        write_status(cdir, ComposeStatus.DOOMED)
                        log.error("compose %s DOOMED: %s", cid, exc)
                        return self._result(cid, ComposeStatus.DOOMED, up, started, str(exc))
                    except BaseException:
                        write_status(cdir, ComposeStatus.DOOMED)
                        log.exception("compose %s DOOMED", cid)
                        raise
                    log.info("compose %s %s", cid, status.value)
                    return self._result(cid, status, up, started, None, missing)

    # -- setup -------------------------------------------------------------------

    def _requested_variants(self) -> list[Variant]:
        req = self.request
        for wanted, have, what in (
            (req.repos, set(self.rel.repos), "repo"),
            (req.arches, {a for r in self.rel.repos.values() for a in r.arches}, "arch"),
        ):
            unknown = sorted((wanted or set()) - have)
            if unknown:
                raise ComposeError(
                    f"SIG {req.sig} release {req.release} has no {what} {', '.join(unknown)}"
                )
        chosen = variants_of(self.rel, req.repos, req.arches)
        if not chosen:
            raise ComposeError("nothing to compose: no variant matches --repo/--arch")
        return chosen

    def _make_release_dir(self) -> None:
        try:
            self.tree.release_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ComposeError(
                f"{self.tree.release_dir}: cannot create compose directory: {exc.strerror}"
            ) from exc

    def _previous(self) -> ComposeOnDisk | None:
        finished = [c for c in list_composes(self.tree) if c.status is ComposeStatus.FINISHED]
        return finished[-1] if finished else None

    def _allocate(self) -> tuple[str, str, int]:
        date = self.now.strftime("%Y%m%d")
        same_day = [c.respin for c in list_composes(self.tree) if c.date == date]
        respin = max(same_day) + 1 if same_day else 0
        while True:
            cid = self.tree.compose_id(date, respin)
            cdir = self.tree.compose_dir(cid)
            try:
                cdir.mkdir()
            except FileExistsError:
                respin += 1
                continue
            except OSError as exc:
                raise ComposeError(f"{cdir}: cannot create compose: {exc.strerror}") from exc
            (cdir / "logs").mkdir()
            atomic_write(cdir / "COMPOSE_ID", f"{cid}\n")
            write_status(cdir, ComposeStatus.STARTED)
            return cid, date, respin

    @contextmanager
    def _compose_log(self, path: Path) -> Iterator[None]:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger = logging.getLogger("reconciler")
        logger.addHandler(handler)
        old_level = logger.level
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
            handler.close()

    # -- the compose itself ------------------------------------------------------------

    def _compose(
        self, up: Upstream, cid: str, date: str, respin: int, previous: ComposeOnDisk | None
    ) -> tuple[ComposeStatus, tuple[str, ...]]:
        cdir = self.tree.compose_dir(cid)
        before = self._previous_files(previous)
        with tempfile.TemporaryDirectory(prefix=".work-", suffix=".~tmp~", dir=cdir) as work:
            works = self._fetch_all(up, Path(work))
            placements = self._placements(cid, works, previous)
            self._place_all(up, placements, before or [])
            self._check_signatures(placements, previous)
            for w in works:
                self._write_variant(cid, w)
        contents = {w.variant: self._final_facts(w) for w in works}
        missing = self._carry_over(cid, previous, contents)
        carried = [v for v in contents if v not in self.variants]
        self._copy_keys(self.tree.sig_dir(cid) / "metadata")
        write_productmd(
            self.tree,
            cid,
            date=date,
            respin=respin,
            contents=contents,
            repo_arches={r: s.arches for r, s in self.rel.repos.items()},
        )
        self._write_record(cid, works, previous, missing)
        files = self._manifest(cid, placements, carried)
        write_manifest(self.tree.manifest(cid), files)
        if previous is not None and before is not None:
            write_changes(self.tree.changes(cid), diff(previous.compose_id, before, files))
        status = ComposeStatus.FINISHED_INCOMPLETE if missing else ComposeStatus.FINISHED
        write_status(cdir, status)
        if status is ComposeStatus.FINISHED:
            swap_symlink(self.tree.latest_link, cid)
        return status, missing

    def _fetch_all(self, up: Upstream, work: Path) -> list[_VariantWork]:
        with ThreadPoolExecutor(self.host.download.workers) as pool:
            return list(pool.map(lambda v: self._fetch_variant(up, work, v), self.variants))

    def _fetch_variant(self, up: Upstream, work: Path, variant: Variant) -> _VariantWork:
        """Fetch one variant's metadata into ``work`` and choose its packages."""
        url = self.spec.upstream_url(
            self.rel, variant.repo, variant.upstream_arch, self.host.upstream_base_url
        )
        vdir = work / f"{variant.repo}.{variant.upstream_arch}"
        (vdir / "repodata").mkdir(parents=True)
        raw = up.get(f"{url}/repodata/repomd.xml")
        (vdir / "repodata" / "repomd.xml").write_bytes(raw)
        records = repodata.parse_repomd(
            vdir / "repodata" / "repomd.xml", f"{url}/repodata/repomd.xml"
        )
        vw = _VariantWork(variant, url, hashlib.sha256(raw).hexdigest(), {}, [])
        for rec in records:
            wanted = (
                rec.type in {"primary", "filelists", "other"} or rec.type in repodata.CARRIED_TYPES
            )
            if not wanted:
                log.info("%s: not carrying metadata record %r", url, rec.type)
                continue
            href = safe_relpath(rec.href)
            local = vdir / f"{rec.type}-{PurePosixPath(href).name}"
            up.download(f"{url}/{href}", local, Expected(rec.checksum_type, rec.checksum, rec.size))
            if rec.type in repodata.CARRIED_TYPES:
                named = vdir / "extras" / rec.type / rec.plain_name
                named.parent.mkdir(parents=True)
                local.rename(named)
                vw.extras.append((rec.type, named))
            else:
                vw.meta[rec.type] = local
        facts = repodata.scan_primary(vw.meta["primary"], f"{url}/{records[0].href}")
        for fact in facts:
            try:
                check_href(fact)
            except ReconcilerError as exc:
                raise UpstreamError(
                    f"{url}/repodata/repomd.xml: package {fact.nevra}: {exc}"
                ) from exc
        vw.chosen = select(facts, self.rel.compose.keep_versions)
        dups = duplicate_targets(vw.chosen, self.rel.compose.hashed)
        if dups:
            raise UpstreamError(f"{url}: different packages share the file names {dups}")
        log.info("%s: %d packages upstream, %d chosen", url, len(facts), len(vw.chosen))
        return vw

    def _previous_index(self, previous: ComposeOnDisk | None) -> dict[str, tuple[Path, int]]:
        """``pkgid -> (file, size)`` of every package of the previous compose (any variant)."""
        if previous is None:
            return {}
        index: dict[str, tuple[Path, int]] = {}
        for variant in self.all_variants:
            vdir = self.tree.variant_dir(previous.compose_id, variant)
            try:
                facts = repodata.repo_index(vdir)
            except ReconcilerError as exc:
                log.warning(
                    "previous compose %s unreadable at %s: %s", previous.compose_id, vdir, exc
                )
                continue
            for pkgid, fact in facts.items():
                index.setdefault(pkgid, (vdir.joinpath(*safe_relpath(fact.href).parts), fact.size))
        return index

    def _placements(
        self, cid: str, works: Sequence[_VariantWork], previous: ComposeOnDisk | None
    ) -> list[_Placement]:
        prev = self._previous_index(previous)
        by_id: dict[str, _Placement] = {}
        for w in works:
            vdir = self.tree.variant_dir(cid, w.variant)
            for fact in w.chosen:
                target = vdir.joinpath(
                    *PurePosixPath(target_href(fact.filename, self.rel.compose.hashed)).parts
                )
                placement = by_id.get(fact.pkgid)
                if placement is None:
                    known = prev.get(fact.pkgid)
                    reuse = known[0] if known is not None and known[1] == fact.size else None
                    placement = _Placement(fact, f"{w.url}/{fact.href}", [], reuse)
                    by_id[fact.pkgid] = placement
                placement.targets.append(target)
        return list(by_id.values())

    def _place_all(
        self, up: Upstream, placements: Sequence[_Placement], before: Sequence[SourceFile]
    ) -> None:
        """Hardlink what the previous compose has (here, in order), download the rest (pool).

        Downloads start largest first, so that a big package does not begin last and
        keep one thread busy after the others have finished. ``before`` is the
        previous compose's manifest: the mtimes of what is linked.
        """
        for directory in sorted({t.parent for p in placements for t in p.targets}):
            directory.mkdir(parents=True, exist_ok=True)
        prev_times = {f.path: f.mtime_ns for f in before}
        downloads = []
        for p in placements:
            if p.reuse is None or not self._link(p, prev_times):
                downloads.append(p)
        downloads.sort(key=lambda p: p.fact.size, reverse=True)
        self.reporter.start(f"compose {self.request.sig} {self.request.release}",
                            sum(p.fact.size for p in downloads))  # fmt: skip
        try:
            with ThreadPoolExecutor(self.host.download.workers) as pool:
                for _ in pool.map(lambda p: self._download(up, p), downloads):
                    pass
        finally:
            self.reporter.stop()

    def _previous_files(self, previous: ComposeOnDisk | None) -> list[SourceFile] | None:
        """The previous compose's manifest, or None without one."""
        if previous is None:
            return None
        sig_dir = self.tree.sig_dir(previous.compose_id)
        return read_manifest(self.tree.manifest(previous.compose_id), sig_dir)

    def _link(self, p: _Placement, prev_times: dict[Path, int]) -> bool:
        assert p.reuse is not None
        first, *rest = p.targets
        try:
            link_or_copy(p.reuse, first)
        except FileNotFoundError:
            log.warning("%s is gone from the previous compose; downloading it", p.reuse)
            p.reuse = None
            return False
        for target in rest:
            link_or_copy(first, target)
        p.mtime_ns = prev_times.get(p.reuse)
        if p.mtime_ns is None:
            p.mtime_ns = first.stat().st_mtime_ns
        self.counters.add(linked=1)
        return True

    def _download(self, up: Upstream, p: _Placement) -> None:
        first, *rest = p.targets
        got = up.download(p.url, first, Expected(p.fact.checksum_type, p.fact.pkgid, p.fact.size))
        p.mtime_ns = got.mtime_ns
        self.counters.add(downloaded=1, nbytes=got.nbytes)
        self.reporter.advance(got.nbytes)
        for target in rest:
            link_or_copy(first, target)

    def _manifest(
        self, cid: str, placements: Sequence[_Placement], carried: Sequence[Variant]
    ) -> list[SourceFile]:
        """The compose's files, mostly from what was placed (no walk of the packages)."""
        sig_dir = self.tree.sig_dir(cid)
        files = [
            SourceFile(str(t.relative_to(sig_dir)), sig_dir, p.fact.size, p.mtime_ns or 0)
            for p in placements
            for t in p.targets
        ]
        for variant in self.variants:
            vdir = self.tree.variant_dir(cid, variant)
            files.extend(scan_source(vdir / "repodata", sig_dir))
            files.extend(_files_in(vdir, sig_dir))
        files.extend(scan_source(sig_dir / "metadata", sig_dir))
        for variant in carried:
            files.extend(scan_source(self.tree.variant_dir(cid, variant), sig_dir))
        return sorted(files, key=lambda f: f.rel)

    def _key_files(self) -> list[Path]:
        return [self.spec_dir / "keys" / name for name in self.rel.gpg_keys]

    def _keys_digest(self) -> tuple[str, ...]:
        return tuple(sorted(hashlib.sha256(k.read_bytes()).hexdigest() for k in self._key_files()))

    def _check_signatures(
        self, placements: Sequence[_Placement], previous: ComposeOnDisk | None
    ) -> None:
        wanted = self.request.check_signatures
        if not (self.rel.compose.check_signatures if wanted is None else wanted):
            return
        prev_record = read_record(self.tree, previous.compose_id) if previous else None
        trusted_reuse = (
            prev_record is not None and prev_record.signature_keys == self._keys_digest()
        )
        to_check = [p.targets[0] for p in placements if p.reuse is None or not trusted_reuse]
        log.info("checking signatures of %d packages", len(to_check))
        with Keyring(self._key_files()) as keyring:
            keyring.check(to_check)

    def _write_variant(self, cid: str, w: _VariantWork) -> None:
        vdir = self.tree.variant_dir(cid, w.variant)
        vdir.mkdir(parents=True, exist_ok=True)
        hrefs = w.hrefs(self.rel.compose.hashed)
        packages = repodata.iter_packages(
            w.meta["primary"], w.meta.get("filelists"), w.meta.get("other")
        )
        revision = str(int(self.now.timestamp()))
        written = repodata.write_repo(vdir, packages, hrefs, w.extras, revision)
        if written != len(hrefs):
            raise UpstreamError(
                f"{w.url}: metadata lists {len(hrefs)} packages but {written} were readable"
            )
        self._copy_keys(vdir)

    def _copy_keys(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for key in self._key_files():
            atomic_write(dest / key.name, key.read_bytes())

    def _final_facts(self, w: _VariantWork) -> list[PackageFact]:
        hashed = self.rel.compose.hashed
        return [replace(f, href=target_href(f.filename, hashed)) for f in w.chosen]

    def _carry_over(
        self, cid: str, previous: ComposeOnDisk | None, contents: dict[Variant, list[PackageFact]]
    ) -> tuple[str, ...]:
        """Variants not requested this time are hardlinked from the previous compose."""
        missing: list[str] = []
        for variant in self.all_variants:
            if variant in contents:
                continue
            src = self.tree.variant_dir(previous.compose_id, variant) if previous else None
            if src is None or not (src / "repodata" / "repomd.xml").is_file():
                missing.append(str(variant))
                continue
            dst = self.tree.variant_dir(cid, variant)
            _link_tree(src, dst)
            contents[variant] = list(repodata.repo_index(dst).values())
            log.info("carried %s over from %s", variant, previous and previous.compose_id)
        return tuple(missing)

    def _write_record(
        self,
        cid: str,
        works: Sequence[_VariantWork],
        previous: ComposeOnDisk | None,
        missing: tuple[str, ...],
    ) -> None:
        upstream = {str(w.variant): w.repomd_sha256 for w in works}
        if previous is not None and len(works) < len(self.all_variants):
            prev = read_record(self.tree, previous.compose_id)
            upstream = {**(dict(prev.upstream) if prev else {}), **upstream}
        record = ComposeRecord(
            compose_id=cid,
            sig=self.request.sig,
            release=self.request.release,
            started=self.now.isoformat(),
            finished=datetime.now(UTC).isoformat(),
            upstream=upstream,
            upstream_revision=upstream_revision(upstream),
            refresh=self.rel.compose.refresh,
            signature_keys=self._keys_digest() if self.rel.compose.check_signatures else (),
            variants=tuple(str(v) for v in self.all_variants if str(v) not in missing),
            missing=missing,
            stats={
                "downloaded": self.counters.downloaded,
                "downloaded_bytes": self.counters.downloaded_bytes,
                "linked": self.counters.linked,
            },
            git_revision=self.request.git_revision,
        )
        atomic_write(self.tree.metadata_dir(cid) / RECORD_NAME, record.to_json())

    def _result(
        self,
        cid: str,
        status: ComposeStatus,
        up: Upstream,
        started: float,
        error: str | None,
        missing: tuple[str, ...] = (),
    ) -> ComposeResult:
        c = self.counters
        return ComposeResult(
            compose_id=cid,
            path=self.tree.compose_dir(cid),
            status=status,
            error=error,
            packages=c.downloaded + c.linked,
            downloaded=c.downloaded,
            downloaded_bytes=c.downloaded_bytes,
            linked=c.linked,
            requests=up.stats.requests,
            seconds=time.monotonic() - started,
            missing=missing,
        )


def _link_tree(src: Path, dst: Path) -> None:
    for dirpath, _dirs, files in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            link_or_copy(Path(dirpath) / name, dst / rel / name)


def _files_in(directory: Path, root: Path) -> Iterator[SourceFile]:
    """The regular files directly in ``directory`` (the GPG keys beside repodata/)."""
    with os.scandir(directory) as it:
        for entry in it:
            if entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                rel = str(Path(entry.path).relative_to(root))
                yield SourceFile(rel, root, st.st_size, st.st_mtime_ns)


def compose(
    spec: Spec,
    spec_dir: Path,
    host: HostConfig,
    request: ComposeRequest,
    reporter: Reporter | None = None,
) -> ComposeResult:
    """Compose one SIG release; the result says FINISHED, FINISHED_INCOMPLETE or DOOMED."""
    return Composer(spec, spec_dir, host, request, reporter).run()
