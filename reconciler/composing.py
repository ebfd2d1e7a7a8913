"""Composing: a dated, immutable snapshot of one SIG release (docs/architecture.md).

One compose, in order:

1. lock the SIG release, allocate the compose ID (productmd's form), write
   ``COMPOSE_ID`` and ``STATUS`` = STARTED;
2. for every variant (repo x arch, its -debug twin, its sources): fetch and
   verify ``repomd.xml`` and the metadata it names, choose the packages
   (``keep_versions``), refuse hrefs that leave the repo
   (:mod:`.fetching`, deciding with :func:`.placement.choose`);
3. plan where every package comes from (:func:`.placement.plan`, pure: hardlink
   it from the previous compose when that holds the same checksum, else
   download it), then carry the plan out (:mod:`.placing`: concurrently,
   retried, verified);
4. check RPM signatures when asked; write new metadata with createrepo_c
   (:mod:`.repodata`; hrefs rewritten for the hashed layout), carry
   comps/modules/updateinfo; a repo whose packages and carried metadata are the
   previous compose's keeps its ``repodata/`` instead, and unchanged GPG keys are
   its files too (:mod:`.carrying`: byte for byte, so that mirrors and dnf
   caches do not churn, and the compose's changes list nothing for that repo);
5. write productmd metadata and the manifest (every file's size, mtime and sha256),
   make every file read-only (0444) and every directory 0755, ``STATUS`` =
   FINISHED, swap ``latest-*``.

Any failure marks the compose DOOMED and leaves ``latest-*`` and every
earlier compose untouched: this module only writes inside the new compose
directory, plus the ``latest-*`` link after success.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from . import checksums, repodata
from .carrying import keep_repodata, link_tree, place_keys, share_unchanged
from .composedir import allocate, compose_log, files_in, make_release_dir, previous_finished
from .composefiles import RepoContent, SourceFile, diff
from .composemeta import (
    RECORD_NAME,
    ComposeOnDisk,
    ComposeRecord,
    read_record,
    upstream_revision,
    write_productmd,
    write_status,
)
from .errors import ComposeError, ReconcilerError, UpstreamError
from .fetching import FetchedVariant, fetch_variant
from .fsutil import READ_ONLY, atomic_write, read_only, read_only_dirs, swap_symlink
from .hostconfig import HostConfig
from .layout import Variant
from .locking import exclusive_lock
from .manifest import read_manifest, scan_source, write_changes, write_manifest
from .metasign import Signer
from .names import TMP_SUFFIX
from .placement import plan, previous_index
from .placing import Counters, Placed, Placer
from .progress import NullReporter, Reporter
from .repodata import LocalRepo
from .selection import PackageFact
from .signatures import Keyring
from .signspec import sign_for
from .spec import ReleaseSpec, Spec, variants_of
from .upstream import Upstream
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
    on_allocated: Callable[[str], None] | None = field(default=None, compare=False)  # gets the ID
    #: Asked before FINISHED: False (a job's worker cut off past its timeout) DOOMs it.
    still_ours: Callable[[], bool] | None = field(default=None, compare=False)


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
        self.tree = host.compose_tree(request.sig, request.release)
        self.all_variants = variants_of(self.rel)
        self.variants = self._requested_variants()
        self.counters = Counters()
        self._key_bytes: list[tuple[str, bytes]] | None = None
        sign = sign_for(spec.defaults.sign, spec.sigs[request.sig].sign)
        self.signer = Signer(sign, spec_dir / "keys", request.release)  # each final repomd.xml

    # -- entry point -------------------------------------------------------------

    def run(self) -> ComposeResult:
        started = time.monotonic()
        make_release_dir(self.tree)
        what = f"a compose of SIG {self.request.sig} release {self.request.release}"
        try:
            lock = exclusive_lock(self.tree.lock_file, what)
        except OSError as exc:
            raise ComposeError(
                f"{self.tree.lock_file}: cannot create lock: {exc.strerror}"
            ) from exc
        with lock:
            previous = previous_finished(self.tree)
            cid, date, respin = allocate(self.tree, self.now)
            cdir = self.tree.compose_dir(cid)
            with compose_log(cdir / "logs" / "compose.log"):
                log.info("compose %s started (previous: %s)", cid, previous and previous.compose_id)
                with Upstream(self.host.download, log) as up, self.signer:
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

    # -- the compose itself ------------------------------------------------------------

    def _compose(
        self, up: Upstream, cid: str, date: str, respin: int, previous: ComposeOnDisk | None
    ) -> tuple[ComposeStatus, tuple[str, ...]]:
        cdir = self.tree.compose_dir(cid)
        if self.request.on_allocated is not None:
            self.request.on_allocated(cid)
        before = self._previous_files(previous)
        repos = self._previous_repos(previous)
        with tempfile.TemporaryDirectory(prefix=".work-", suffix=TMP_SUFFIX, dir=cdir) as work:
            works = self._fetch_all(up, Path(work))
            known = [(v, r.packages.values()) for v, r in repos.items()]
            index = previous_index(previous.compose_id, known, before) if previous else None
            the_plan = plan([w.selection for w in works], index)
            if the_plan.problem is not None:  # fetching stops at a refusal already
                raise UpstreamError(the_plan.problem)
            before_id = previous.compose_id if previous else None
            placer = Placer(up, self.tree, cid, before_id, self.reporter, self.counters)
            placed = placer.place(the_plan, f"compose {self.request.sig} {self.request.release}")
            self._check_signatures(placed, previous)
            for w in works:
                self._write_variant(cid, w, repos.get(w.variant))
        del the_plan, index, known, repos  # memory: at 100,000 packages each record counts
        contents = {w.variant: w.selection.composed for w in works}
        missing = self._carry_over(cid, previous, contents)
        carried = [v for v in contents if v not in self.variants]
        was = self.tree.sig_dir(previous.compose_id) / "metadata" if previous else None
        place_keys(self._keys(), self.tree.sig_dir(cid) / "metadata", was)
        # The manifest first: what was placed and the file records go before productmd's
        # own records of every package are built (the compose's peak of memory).
        files = self._manifest(cid, placed, carried, before)
        del placed
        self.tree.metadata_dir(cid).mkdir(parents=True, exist_ok=True)
        write_manifest(self.tree.manifest(cid), files)
        if previous is not None and before is not None:
            write_changes(self.tree.changes(cid), diff(previous.compose_id, before, files))
        del files, before
        arches = {r: s.arches for r, s in self.rel.repos.items()}
        write_productmd(self.tree, cid, date=date, respin=respin, contents=contents,
                        repo_arches=arches)  # fmt: skip
        self._write_record(cid, works, previous, missing)
        read_only_dirs(cdir)
        status = ComposeStatus.FINISHED_INCOMPLETE if missing else ComposeStatus.FINISHED
        if self.request.still_ours is not None and not self.request.still_ours():
            raise ComposeError(f"compose {cid}: its job may be another worker's by now (no "
                               "heartbeat for the job timeout): DOOMED, not finished")  # fmt: skip
        write_status(cdir, status)
        if status is ComposeStatus.FINISHED:
            swap_symlink(self.tree.latest_link, cid)
        return status, missing

    def _fetch_all(self, up: Upstream, work: Path) -> list[FetchedVariant]:
        keep, hashed = self.rel.compose.keep_versions, self.rel.compose.hashed

        def fetch(variant: Variant) -> FetchedVariant:
            url = self.spec.upstream_url(
                self.rel, variant.repo, variant.upstream_arch, self.host.upstream_base_url
            )
            return fetch_variant(up, url, work, variant, keep, hashed)

        with ThreadPoolExecutor(self.host.download.workers) as pool:
            return list(pool.map(fetch, self.variants))

    def _previous_repos(self, previous: ComposeOnDisk | None) -> dict[Variant, LocalRepo]:
        """The repos of the previous compose (any variant), from their metadata."""
        if previous is None:
            return {}
        repos: dict[Variant, LocalRepo] = {}
        for variant in self.all_variants:
            vdir = self.tree.variant_dir(previous.compose_id, variant)
            try:
                repo = repodata.read_local_repo(vdir)
            except ReconcilerError as exc:
                log.warning(
                    "previous compose %s unreadable at %s: %s", previous.compose_id, vdir, exc
                )
                continue
            if repo is not None:
                repos[variant] = repo
        return repos

    def _previous_files(self, previous: ComposeOnDisk | None) -> list[SourceFile] | None:
        """The previous compose's manifest, or None without one."""
        if previous is None:
            return None
        sig_dir = self.tree.sig_dir(previous.compose_id)
        return read_manifest(self.tree.manifest(previous.compose_id), sig_dir)

    def _manifest(
        self,
        cid: str,
        placed: Sequence[Placed],
        carried: Sequence[Variant],
        before: Sequence[SourceFile] | None,
    ) -> list[SourceFile]:
        """The compose's files with their checksums, mostly from what was placed (no walk
        of the packages, none hashed again); the small files the compose wrote are
        hashed, those it linked from the previous compose (carried variants, kept
        repodata and keys: the same size and mtime) taken from its manifest when it says."""
        sig_dir = self.tree.sig_dir(cid)
        files = [
            SourceFile(
                str(path.relative_to(sig_dir)), sig_dir, p.step.fact.size, p.mtime_ns, p.sha256
            )
            for p in placed
            for path in p.paths
        ]
        found: list[SourceFile] = []
        for variant in self.variants:
            vdir = self.tree.variant_dir(cid, variant)
            found.extend(scan_source(vdir / "repodata", sig_dir))
            found.extend(files_in(vdir, sig_dir))
        found.extend(scan_source(sig_dir / "metadata", sig_dir))
        for variant in carried:
            found.extend(scan_source(self.tree.variant_dir(cid, variant), sig_dir))
        known = {f.rel: f for f in before or ()}
        for f in found:
            read_only(f.path)
            was = known.get(f.rel)
            if was is not None and was.sha256 and (was.size, was.mtime_ns) == (f.size, f.mtime_ns):
                files.append(replace(f, sha256=was.sha256))
            else:
                files.append(replace(f, sha256=checksums.hash_file(f.path)))
        return sorted(files, key=lambda f: f.rel)

    def _key_files(self) -> list[Path]:
        """The named key files that ``keys/`` has (a missing one blocks production only)."""
        missing = self.spec.missing_keys(self.rel)
        return [self.spec_dir / "keys" / n for n in self.rel.gpg_keys if n not in missing]

    def _keys_digest(self) -> tuple[str, ...]:
        return tuple(sorted(hashlib.sha256(data).hexdigest() for _name, data in self._keys()))

    def _check_signatures(self, placed: Sequence[Placed], previous: ComposeOnDisk | None) -> None:
        wanted = self.request.check_signatures
        if not (self.spec.verifies_signatures(self.rel) if wanted is None else wanted):
            return
        prev_record = read_record(self.tree, previous.compose_id) if previous else None
        trusted_reuse = (
            prev_record is not None and prev_record.signature_keys == self._keys_digest()
        )
        to_check = [p.paths[0] for p in placed if not (p.linked and trusted_reuse)]
        log.info("checking signatures of %d packages", len(to_check))
        with Keyring(self._key_files()) as keyring:
            keyring.check(to_check)

    def _write_variant(self, cid: str, w: FetchedVariant, previous: LocalRepo | None) -> None:
        vdir = self.tree.variant_dir(cid, w.variant)
        vdir.mkdir(parents=True, exist_ok=True)
        hrefs = w.selection.hrefs
        content = RepoContent.of(
            ((f.pkgid, f.checksum_type, hrefs[f.pkgid]) for f in w.selection.chosen), w.carried
        )
        kept = keep_repodata(previous, content, vdir)
        if kept:
            log.info("%s: same packages and metadata as before: repodata kept", w.variant)
        else:
            packages = repodata.iter_packages(
                w.meta["primary"], w.meta.get("filelists"), w.meta.get("other")
            )
            revision = str(int(self.now.timestamp()))
            written = repodata.write_repo(vdir, packages, hrefs, w.extras, revision)
            if written != len(hrefs):
                raise UpstreamError(
                    f"{w.url}: metadata lists {len(hrefs)} packages but {written} were readable"
                )
            share_unchanged(previous, vdir)
        self.signer.sign_repo(vdir, previous.path if previous else None, kept)
        place_keys(self._keys(), vdir, previous.path if previous else None)

    def _keys(self) -> list[tuple[str, bytes]]:
        """The named key files that ``keys/`` has, read once (a missing one blocks
        production only)."""
        if self._key_bytes is None:
            self._key_bytes = [(k.name, k.read_bytes()) for k in self._key_files()]
        return self._key_bytes

    def _carry_over(
        self, cid: str, previous: ComposeOnDisk | None, contents: dict[Variant, list[PackageFact]]
    ) -> tuple[str, ...]:
        """Variants not requested this time are cloned (or hardlinked) from the previous compose."""
        missing: list[str] = []
        for variant in self.all_variants:
            if variant in contents:
                continue
            src = self.tree.variant_dir(previous.compose_id, variant) if previous else None
            if src is None or not (src / "repodata" / "repomd.xml").is_file():
                missing.append(str(variant))
                continue
            dst = self.tree.variant_dir(cid, variant)
            link_tree(src, dst)
            contents[variant] = list(repodata.repo_index(dst).values())
            log.info("carried %s over from %s", variant, previous and previous.compose_id)
        return tuple(missing)

    def _write_record(
        self,
        cid: str,
        works: Sequence[FetchedVariant],
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
            signature_keys=self._keys_digest() if self.spec.verifies_signatures(self.rel) else (),
            variants=tuple(str(v) for v in self.all_variants if str(v) not in missing),
            missing=missing,
            stats={
                "downloaded": self.counters.downloaded,
                "downloaded_bytes": self.counters.downloaded_bytes,
                "linked": self.counters.linked,
            },
            git_revision=self.request.git_revision,
        )
        atomic_write(self.tree.metadata_dir(cid) / RECORD_NAME, record.to_json(), READ_ONLY)

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


def compose(
    spec: Spec,
    spec_dir: Path,
    host: HostConfig,
    request: ComposeRequest,
    reporter: Reporter | None = None,
) -> ComposeResult:
    """Compose one SIG release; the result says FINISHED, FINISHED_INCOMPLETE or DOOMED."""
    return Composer(spec, spec_dir, host, request, reporter).run()
