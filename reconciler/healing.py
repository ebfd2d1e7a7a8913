"""Restoring damaged bytes from a good copy, into every tree that shared the damage.

Where hardlinks share them, a package is one inode in the composes, staging and
production, so bytes written into it in place damage every tree at once, and
re-linking it repairs nothing. (Where clones share them, reflinks, each tree has an
inode of its own and a write reaches only the one written: the others are good
copies.) A repair publish (:class:`reconciler.publishing.Publisher`) asks the
:class:`Healer` to vouch for every compose file it is about to place, and for
every path drift named. For a file that does not hash to what its compose says
(:func:`reconciler.checksums.expected_sums`), the healer:

1. finds bytes that do: the same content at another place of the compose, in
   staging, in production or in another compose of the release (a different
   inode, its digest checked), else a fresh download from the upstream (the
   variant's URL as composing derives it, the package found in its primary by
   name and checksum; size and checksum verified);
2. writes them as a new inode in the compose (a ``.~tmp~`` name, fsync, checked
   again, read-only, the manifest's mtime, ``publish.owner``/``publish.group``, then
   a rename over the damaged name);
3. replaces every hardlink of the damaged inode in those trees by a clone of (or a
   link to, or across filesystems a copy of) the new one, by rename, and records the
   new inode in the inventory of the published trees.

The damaged inode is never written to, and nothing is ever deleted: a path the
inventory does not record (unmanaged) is not the healer's concern. With no good copy
anywhere the repair fails with :class:`~reconciler.errors.PublishError` naming the
path: the target is Failed, never Synced. The compose's lock is held meanwhile (no
compose links from it), and the root lock of each published tree changed.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Collection, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import repodata
from .checksums import DigestCache, Sum, expected_sums
from .composemeta import list_composes
from .errors import PublishError, ReconcilerError
from .fsutil import DIR_MODE, READ_ONLY, Sharer, copy_fsync, fsync_dir, tmp_name
from .hostconfig import HostConfig
from .layout import PublishedTree, Variant
from .locking import exclusive_lock
from .manifest import read_manifest
from .names import TMP_SUFFIX, safe_relpath
from .publishing import Owner, entry_for, root_lock
from .selection import PackageFact
from .spec import Spec, variants_of
from .state import StateDB
from .upstream import Expected, Upstream
from .vocabulary import PUBLISHED_STAGES, Stage

log = logging.getLogger(__name__)

Inode = tuple[int, int]


@dataclass(frozen=True, slots=True)
class _Tree:
    """A tree that may hold the compose's files: a compose's SIG directory or a target."""

    top: Path  # the compose's relpaths start here
    stage: Stage  # COMPOSE for a compose
    published: PublishedTree | None = None


def _inode(path: Path) -> Inode | None:
    try:
        st = path.lstat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class Healer:
    """Vouches for the files of compose ``compose_id`` published at ``target``
    (:class:`reconciler.publishing.Sources`), restoring damaged ones."""

    def __init__(
        self, spec: Spec, host: HostConfig, state: StateDB, target: PublishedTree, compose_id: str
    ) -> None:
        self.spec, self.host, self.state, self.target = spec, host, state, target
        self.compose_id = compose_id
        self.owner = Owner(spec.defaults.publish.owner, spec.defaults.publish.group)
        self.composes = host.compose_tree(target.sig, target.release)
        self.sig_dir = self.composes.sig_dir(compose_id)
        self.cache = DigestCache()
        self.touched: set[Stage] = set()  # published stages whose trees were changed
        self.healed: list[str] = []  # compose relpaths given new bytes
        self._upstream: dict[Variant, list[PackageFact]] = {}

    # -- the entry point ----------------------------------------------------------------

    def ensure(self, rels: Collection[str], locked: Path) -> None:
        """Make the compose's files ``rels`` hold the bytes its checksums say (the root
        ``locked`` is held by the caller); raise :class:`PublishError` naming the path
        when no good copy is left. A file without a known checksum is left as it is."""
        manifest = self.composes.manifest(self.compose_id)
        sums = expected_sums(self.sig_dir, manifest)
        todo = [
            (rel, sums[rel])
            for rel in sorted(rels)
            if rel in sums and not self.cache.matches(self.sig_dir / rel, sums[rel])
        ]
        if not todo:
            return
        mtimes = {f.rel: f.mtime_ns for f in read_manifest(manifest, self.sig_dir) or ()}
        what = f"a repair of compose {self.compose_id}"
        with exclusive_lock(self.composes.lock_file, what), self._workdir() as work:
            trees = self._trees()
            for rel, want in todo:
                if rel not in self.healed and not self.cache.matches(self.sig_dir / rel, want):
                    twins = sorted(r for r, s in sums.items() if s == want)
                    self._heal(rel, want, twins, mtimes.get(rel), trees, work, locked)

    # -- one file -----------------------------------------------------------------------

    def _heal(
        self,
        rel: str,
        want: Sum,
        twins: list[str],
        mtime_ns: int | None,
        trees: list[_Tree],
        work: Path,
        locked: Path,
    ) -> None:
        dest = self.sig_dir / rel
        damaged = _inode(dest)
        good = self._good_copy(trees, twins, want, damaged) or self._download(
            rel, twins, want, work
        )
        log.warning("restoring %s (%s) from %s", dest, want, good)
        self._install(good, dest, want, mtime_ns)
        self.healed.append(rel)
        if damaged is not None:
            self.healed.extend(self._relink(trees, twins, damaged, dest, locked))

    def _good_copy(
        self, trees: list[_Tree], twins: list[str], want: Sum, damaged: Inode | None
    ) -> Path | None:
        """A file with the right bytes that is not the damaged inode, in any tree."""
        for tree in trees:
            for rel in twins:
                path = tree.top / rel
                if _inode(path) not in (None, damaged) and self.cache.matches(path, want):
                    return path
        return None

    def _install(self, good: Path, dest: Path, want: Sum, mtime_ns: int | None) -> None:
        """``good``'s bytes as a new inode at ``dest``, checked before the rename."""
        dest.parent.mkdir(DIR_MODE, parents=True, exist_ok=True)
        tmp = tmp_name(dest)
        tmp.unlink(missing_ok=True)
        try:
            copy_fsync(good, tmp, READ_ONLY)
            if mtime_ns is not None:
                os.utime(tmp, ns=(mtime_ns, mtime_ns))
            self.owner.give(tmp)
            if not DigestCache().matches(tmp, want):
                raise PublishError(f"{good}: its bytes changed while they were copied")
            tmp.replace(dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(dest.parent)

    def _relink(
        self, trees: list[_Tree], twins: list[str], damaged: Inode, good: Path, locked: Path
    ) -> set[str]:
        """Every name of the damaged inode in ``trees`` becomes the good file, by rename;
        returns the relpaths of the compose given it."""
        relinked = set()
        for tree in trees:
            hits = [rel for rel in twins if _inode(tree.top / rel) == damaged]
            if not hits:
                continue
            with self._lock(tree, locked):
                entries = []
                for rel in hits:
                    path = tree.top / rel
                    if path == good or _inode(path) != damaged:
                        continue
                    _replace(good, path, self.owner)
                    log.warning("%s: the damaged inode replaced by %s", path, good)
                    if tree.top == self.sig_dir:
                        relinked.add(rel)
                    if tree.published is not None:
                        key = tree.published.relpath(PurePosixPath(rel))
                        if key in self.state.inventory.entries(tree.stage, key):
                            entries.append(entry_for(key, path.lstat()))
                if entries:
                    self.state.inventory.apply_changes(tree.stage, entries, [])
                    self.touched.add(tree.stage)
        return relinked

    # -- where copies are ---------------------------------------------------------------

    def _trees(self) -> list[_Tree]:
        """The compose, staging, production, then the release's other composes (newest
        first): every tree that may share the compose's inodes."""
        category = self.spec.defaults.publish.category
        trees = [_Tree(self.sig_dir, Stage.COMPOSE)]
        for stage in PUBLISHED_STAGES:
            published = self.host.published(category, stage, self.target.sig, self.target.release)
            if published.path.is_dir():
                trees.append(_Tree(published.path, stage, published))
        for c in reversed(list_composes(self.composes)):
            if c.compose_id != self.compose_id:
                trees.append(_Tree(self.composes.sig_dir(c.compose_id), Stage.COMPOSE))
        return trees

    def _lock(self, tree: _Tree, locked: Path) -> AbstractContextManager[None]:
        if tree.published is None or tree.published.root == locked:
            return nullcontext()  # the compose's lock, or the caller's, is held
        return root_lock(tree.published.root)

    @contextmanager
    def _workdir(self) -> Iterator[Path]:
        where = self.composes.compose_dir(self.compose_id)
        with tempfile.TemporaryDirectory(prefix=".repair-", suffix=TMP_SUFFIX, dir=where) as d:
            yield Path(d)

    # -- the upstream -------------------------------------------------------------------

    def _download(self, rel: str, twins: list[str], want: Sum, work: Path) -> Path:
        """The package fetched anew from the upstream (from the variant of ``rel``, else of
        a twin) and verified; PublishError naming the published path when that cannot be."""
        where = self.target.path / rel
        why = "no copy in the composes, staging or production is right"
        variants = dict.fromkeys(v for r in (rel, *twins) if (v := self._variant(r)) is not None)
        if not variants:
            raise PublishError(f"{where}: damaged ({want}); {why}, and it is no package")
        problems = []
        for variant in variants:
            try:
                dest = self._fetch(variant, PurePosixPath(rel).name, want, work)
            except (ReconcilerError, OSError) as exc:
                problems.append(str(exc))
                continue
            if self.cache.matches(dest, want):
                return dest
            problems.append(f"{dest.name}: the upstream's copy is not {want} either")
        upstream = "; ".join(problems)
        raise PublishError(f"{where}: damaged ({want}); {why}, and the upstream: {upstream}")

    def _fetch(self, variant: Variant, name: str, want: Sum, work: Path) -> Path:
        release = self.spec.release(self.target.sig, self.target.release)
        url = self.spec.upstream_url(
            release, variant.repo, variant.upstream_arch, self.host.upstream_base_url
        )
        with Upstream(self.host.download, log) as up:
            fact = self._upstream_fact(up, url, work, variant, name, want)
            dest = work / f"{fact.pkgid}.rpm"
            expected = Expected(fact.checksum_type, fact.pkgid, fact.size)
            up.download(f"{url}/{safe_relpath(fact.href)}", dest, expected)
        return dest

    def _variant(self, rel: str) -> Variant | None:
        try:
            release = self.spec.release(self.target.sig, self.target.release)
        except KeyError:
            return None
        if not rel.endswith(".rpm"):
            return None
        return next((v for v in variants_of(release) if rel.startswith(f"{v.rel_dir}/")), None)

    def _upstream_fact(
        self, up: Upstream, url: str, work: Path, variant: Variant, name: str, want: Sum
    ) -> PackageFact:
        """The upstream's record of the package ``name`` with the checksum ``want``."""
        if variant not in self._upstream:
            vdir = work / f"{variant.repo}.{variant.upstream_arch}"
            vdir.mkdir()
            (vdir / "repomd.xml").write_bytes(up.get(f"{url}/repodata/repomd.xml"))
            records = repodata.parse_repomd(vdir / "repomd.xml", f"{url}/repodata/repomd.xml")
            primary = next(r for r in records if r.type == "primary")
            local = vdir / PurePosixPath(primary.href).name
            expected = Expected(primary.checksum_type, primary.checksum, primary.size)
            up.download(f"{url}/{safe_relpath(primary.href)}", local, expected)
            self._upstream[variant] = repodata.scan_primary(local, f"{url}/{primary.href}")
        for fact in self._upstream[variant]:
            same_sum = fact.checksum_type.lower() != want.algo or fact.pkgid == want.hexdigest
            if PurePosixPath(fact.href).name == name and same_sum:
                return fact
        raise PublishError(f"{url}: the upstream no longer lists {name} ({want})")


def _replace(good: Path, path: Path, owner: Owner) -> None:
    """``path`` becomes ``good``'s file (a clone, a link, or across filesystems a copy,
    given ``owner``; fsynced), by rename."""
    tmp = tmp_name(path)
    Sharer(durable=True).temp(good, tmp)
    try:
        owner.give(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
