"""Content checksums: what each file of a compose must hash to, and hashing files.

A compose's manifest (v2) gives every file's sha256. For a compose with a v1
manifest (made before checksums were kept), or none, the checksums come from its
repository metadata instead: each package's from ``primary.xml`` (in the upstream's
checksum type), each metadata file's from ``repomd.xml``; ``repomd.xml`` itself and
the keys have none there, and are not checked.

Hashing reads the whole file, so a :class:`DigestCache` hashes each inode once per
check: where packages are hardlinked, staging, production and the composes share most
inodes. (Where they are clones, each tree has its own inode, and its own copy to check:
a write into one reaches no other.)
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import ReconcilerError
from .manifest import read_manifest
from .names import TMP_SUFFIX, safe_relpath
from .upstream import new_hash

_CHUNK = 1 << 20
SHA256 = "sha256"


@dataclass(frozen=True, slots=True)
class Sum:
    """What a file's bytes must hash to: the algorithm (``sha256``, ``sha1``...) and digest."""

    algo: str
    hexdigest: str

    def __str__(self) -> str:
        return f"{self.algo} {self.hexdigest}"


def hash_file(path: Path, algo: str = SHA256, dir_fd: int | None = None) -> str:
    """The hex digest of the file at ``path`` (symlinks are not followed; a name in the
    directory ``dir_fd`` when given)."""
    return digests(path, algo, dir_fd=dir_fd)[0]


def digests(path: Path, *algos: str, dir_fd: int | None = None) -> tuple[str, ...]:
    """The hex digests of the file at ``path`` in each of ``algos``, read once."""
    hashes = [new_hash(algo) for algo in algos]
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            for h in hashes:
                h.update(chunk)
    return tuple(h.hexdigest() for h in hashes)


class DigestCache:
    """Digests by inode (and its size and times): each shared inode is read once."""

    def __init__(self) -> None:
        self._known: dict[tuple[int, int, int, int, int, str], str] = {}
        self.bytes = 0  # how much was read

    def matches(self, path: Path, want: Sum, st: os.stat_result | None = None) -> bool:
        """True when the regular file ``path`` hashes to ``want`` (False when unreadable)."""
        try:
            st = st or path.lstat()
            if not stat.S_ISREG(st.st_mode):
                return False
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, want.algo)
            if key not in self._known:
                self._known[key] = hash_file(path, want.algo)
                self.bytes += st.st_size
        except OSError:
            return False
        return self._known[key] == want.hexdigest.lower()


def expected_sums(sig_dir: Path, manifest: Path) -> dict[str, Sum]:
    """``relpath -> Sum`` of every file of the compose at ``sig_dir`` whose checksum is
    known: from its manifest (v2), else from its repository metadata.

    A damaged manifest raises :class:`~reconciler.errors.PublishError` (naming the line).
    """
    files = read_manifest(manifest, sig_dir) or []
    sums = {f.rel: Sum(SHA256, f.sha256) for f in files if f.sha256 is not None}
    if files and len(sums) == len(files):
        return sums
    return {**metadata_sums(sig_dir), **sums}


def metadata_sums(top: Path) -> dict[str, Sum]:
    """``relpath -> Sum`` (relative to ``top``) of the metadata files and packages that
    the repositories under ``top`` list, as their ``repomd.xml`` and primary say."""
    from .repodata import parse_repomd, scan_primary  # createrepo_c: only when needed

    sums: dict[str, Sum] = {}
    for repo in _repos(top):
        base = PurePosixPath(repo.relative_to(top).as_posix())
        repomd = repo / "repodata" / "repomd.xml"
        try:
            records = parse_repomd(repomd, str(repomd))
            for r in records:
                sums[str(base / safe_relpath(r.href))] = Sum(r.checksum_type, r.checksum)
            primary = repo / safe_relpath(next(r for r in records if r.type == "primary").href)
            for fact in scan_primary(primary, str(primary)):
                sums[str(base / safe_relpath(fact.href))] = Sum(fact.checksum_type, fact.pkgid)
        except (ReconcilerError, OSError):
            continue  # an unreadable repo: the verify command names what is wrong
    return sums


def _repos(top: Path) -> Iterator[Path]:
    for dirpath, dirs, _files in os.walk(top):
        here = Path(dirpath)
        if (here / "repodata" / "repomd.xml").is_file():
            yield here
        dirs[:] = sorted(
            d for d in dirs if d not in ("repodata", "Packages") and not d.endswith(TMP_SUFFIX)
        )
