"""Checking published repositories the way a client (dnf) would use them.

For every repository under a tree: ``repodata/repomd.xml`` parses, every file
it names exists with the stated size and checksum, and every package of the
primary metadata exists as a regular file with its size and (unless ``quick``)
its checksum. Every problem is reported with the exact path concerned; bad
repository content never raises, only programming errors do.

:func:`drift_report` renders ``verify --drift``: each published target's drift, and
apart from it what the target holds unmanaged (kept, not drift: it fails nothing).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import createrepo_c as cr

from .errors import IntegrityError
from .facts import DriftFinding, TargetKey
from .fsutil import inside
from .names import TMP_SUFFIX
from .state import UnmanagedSummary
from .upstream import new_hash

_CHUNK = 1 << 20
#: Directories that hold a repository's files, never other repositories.
_NOT_DESCENDED = frozenset({"repodata", "Packages"})


@dataclass(frozen=True)
class Problem:
    """One thing a client would trip over, located by the file (or repo dir) concerned."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of :func:`verify_tree`."""

    repos: int
    packages: int
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class _Pkg:
    """What the primary metadata says about one package."""

    nevra: str
    href: str
    base: str
    size: int
    checksum_type: str
    checksum: str


def find_repos(root: Path) -> list[Path]:
    """Every directory under ``root`` (or ``root`` itself) holding ``repodata/repomd.xml``.

    Sorted. ``repodata/``, ``Packages/`` and ``*.~tmp~`` directories are not
    descended into, nor are symlinked directories.
    """
    found: list[Path] = []
    for dirpath, dirnames, _files in os.walk(root, followlinks=False):
        here = Path(dirpath)
        if (here / "repodata" / "repomd.xml").is_file():
            found.append(here)
        dirnames[:] = [
            d for d in dirnames if d not in _NOT_DESCENDED and not d.endswith(TMP_SUFFIX)
        ]
    return sorted(found)


def verify_repo(repo: Path, *, quick: bool = False) -> list[Problem]:
    """Every problem a client would meet in the repository at ``repo``.

    With ``quick``, packages are checked by size only; metadata files are
    always checksummed (they are needed to read the repository).
    """
    return _verify(repo, quick)[1]


#: A check of a repo's ``repomd.xml.asc``: ``(path, problem)``, or None when it is fine or
#: not expected (:class:`reconciler.metasign.SignatureChecker`).
SignatureCheck = Callable[[Path], "tuple[str, str] | None"]


def verify_tree(
    root: Path, *, quick: bool = False, workers: int = 4, signatures: SignatureCheck | None = None
) -> VerifyReport:
    """Verify every repository under ``root``, ``workers`` repositories at a time; with
    ``signatures``, each repository's metadata signature too."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if not root.is_dir():
        return VerifyReport(0, 0, (Problem(str(root), "not a directory"),))
    repos = find_repos(root)
    packages = 0
    problems: list[Problem] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool:
        for count, found in pool.map(lambda r: _verify(r, quick, signatures), repos):
            packages += count
            problems.extend(found)
    return VerifyReport(repos=len(repos), packages=packages, problems=tuple(problems))


@dataclass(frozen=True)
class DriftReport:
    """What ``verify --drift`` prints, and whether it passes (unmanaged paths never fail it)."""

    lines: tuple[str, ...]
    ok: bool


def drift_report(
    found: Mapping[TargetKey, tuple[DriftFinding, ...]],
    unmanaged: Mapping[TargetKey, UnmanagedSummary],
) -> DriftReport:
    """Per target (SIG, release, stage): its drift findings, then its unmanaged files
    (how many, their bytes, the first few paths; those ``publish.unmanaged`` covers are
    not counted)."""
    lines: list[str] = []
    total = 0
    for key in sorted(found, key=lambda k: (k.sig, k.release, k.stage)):
        n = len(found[key])
        total += n
        what = "no drift" if not n else f"{n} path(s) drifted"
        lines.append(f"{key.sig} {key.release} {key.stage}: {what}")
        lines.extend(f"  {finding}" for finding in found[key])
        extra = unmanaged.get(key)
        if extra is not None and extra.files:
            lines.append(
                f"  unmanaged (kept, not drift): {extra.files} file(s), {extra.bytes} bytes"
            )
            lines.extend(f"    {path}" for path in extra.examples)
            if extra.files > len(extra.examples):
                lines.append(f"    ... and {extra.files - len(extra.examples)} more")
    return DriftReport(tuple(lines), total == 0)


# -- one repository ---------------------------------------------------------------


def _verify(
    repo: Path, quick: bool, signatures: SignatureCheck | None = None
) -> tuple[int, list[Problem]]:
    """``(packages listed in primary, problems)`` of one repository."""
    problems: list[Problem] = []
    signed = signatures(repo) if signatures is not None else None
    if signed is not None:
        problems.append(Problem(*signed))
    repomd_path = repo / "repodata" / "repomd.xml"
    if _regular_file(repomd_path, problems) is None:
        return 0, problems
    try:
        repomd = cr.Repomd(str(repomd_path))
    except Exception as exc:  # createrepo_c raises plain exceptions for bad XML
        problems.append(Problem(str(repomd_path), f"not a valid repomd.xml ({_oneline(exc)})"))
        return 0, problems

    primary: Path | None = None
    has_primary = False
    for record in repomd.records:
        kind = str(record.type)
        path = _check_record(repo, repomd_path, record, problems)
        if kind == "primary" and not has_primary:
            has_primary = True
            primary = path
    if not has_primary:
        problems.append(Problem(str(repomd_path), "no primary record"))
    if primary is None:
        return 0, problems

    packages = _read_primary(primary, problems)
    if packages is None:
        return 0, problems
    digests: dict[Path, str | None] = {}
    for pkg in packages:
        _check_package(repo, primary, pkg, quick, digests, problems)
    return len(packages), problems


def _check_record(
    repo: Path, repomd_path: Path, record: cr.RepomdRecord, problems: list[Problem]
) -> Path | None:
    """Check one ``repomd.xml`` record; the file's path when it can be read, else None."""
    kind = str(record.type)
    href = str(record.location_href or "")
    if record.location_base:
        problems.append(
            Problem(str(repomd_path), f"{kind}: location outside the repo ({record.location_base})")
        )
        return None
    rel = _safe_href(href)
    if rel is None:
        problems.append(Problem(str(repomd_path), f"{kind}: unsafe href {href!r}"))
        return None
    path = repo.joinpath(*rel.parts)
    info = _regular_file(path, problems)
    if info is None or not _inside(repo, path, problems):
        return None
    usable = True
    size = int(record.size or 0)
    if size:
        actual = info.st_size
        if actual != size:
            problems.append(Problem(str(path), f"size {actual}, repomd.xml says {size}"))
            usable = False
    checksum = str(record.checksum or "")
    checksum_type = str(record.checksum_type or "")
    if not checksum or not checksum_type:
        problems.append(Problem(str(path), f"{kind}: repomd.xml gives no checksum"))
    elif usable:
        digest = _digest(path, checksum_type, problems)
        if digest is not None and digest != checksum.lower():
            problems.append(
                Problem(str(path), f"{checksum_type} {digest}, repomd.xml says {checksum}")
            )
    return path


def _read_primary(primary: Path, problems: list[Problem]) -> list[_Pkg] | None:
    """The packages of a primary metadata file, or None (with a problem) if unreadable."""
    packages: list[_Pkg] = []

    def on_package(pkg: cr.Package) -> bool:
        packages.append(
            _Pkg(
                nevra=str(pkg.nevra()),
                href=str(pkg.location_href or ""),
                base=str(pkg.location_base or ""),
                size=int(pkg.size_package or 0),
                checksum_type=str(pkg.checksum_type or ""),
                checksum=str(pkg.pkgId or ""),
            )
        )
        return True

    def on_warning(_kind: object, _message: object) -> bool:
        return True  # a client tolerates what createrepo_c only warns about

    try:
        cr.xml_parse_primary(str(primary), pkgcb=on_package, warningcb=on_warning, do_files=0)
    except Exception as exc:  # createrepo_c raises plain exceptions for bad XML
        problems.append(Problem(str(primary), f"cannot parse primary metadata ({_oneline(exc)})"))
        return None
    return packages


def _check_package(
    repo: Path,
    primary: Path,
    pkg: _Pkg,
    quick: bool,
    digests: dict[Path, str | None],
    problems: list[Problem],
) -> None:
    if pkg.base:
        problems.append(
            Problem(str(primary), f"{pkg.nevra}: location outside the repo ({pkg.base})")
        )
        return
    rel = _safe_href(pkg.href)
    if rel is None:
        problems.append(Problem(str(primary), f"{pkg.nevra}: unsafe href {pkg.href!r}"))
        return
    path = repo.joinpath(*rel.parts)
    info = _regular_file(path, problems)
    if info is None or not _inside(repo, path, problems):
        return
    actual = info.st_size
    if actual != pkg.size:
        problems.append(Problem(str(path), f"size {actual}, primary says {pkg.size}"))
        return
    if quick:
        return
    if not pkg.checksum or not pkg.checksum_type:
        problems.append(Problem(str(path), f"{pkg.nevra}: primary gives no checksum"))
        return
    if path not in digests:
        digests[path] = _digest(path, pkg.checksum_type, problems)
    digest = digests[path]
    if digest is not None and digest != pkg.checksum.lower():
        problems.append(
            Problem(str(path), f"{pkg.checksum_type} {digest}, primary says {pkg.checksum}")
        )


# -- helpers ------------------------------------------------------------------------


def _safe_href(href: str) -> PurePosixPath | None:
    """The href as a relative path that stays inside the repo, or None."""
    if not href or "\\" in href or "\0" in href:
        return None
    rel = PurePosixPath(href)
    if rel.is_absolute() or ".." in rel.parts or rel.parts in ((), (".",)):
        return None
    return rel


def _regular_file(path: Path, problems: list[Problem]) -> os.stat_result | None:
    """The lstat of a regular file (a symlink is not one); else None, recording why."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        problems.append(Problem(str(path), "missing"))
        return None
    except OSError as exc:
        problems.append(Problem(str(path), f"cannot stat ({exc.strerror})"))
        return None
    if stat.S_ISLNK(info.st_mode):
        problems.append(Problem(str(path), "a symlink, not a regular file"))
        return None
    if not stat.S_ISREG(info.st_mode):
        problems.append(Problem(str(path), "not a regular file"))
        return None
    return info


def _inside(repo: Path, path: Path, problems: list[Problem]) -> bool:
    """True unless a symlinked directory on the way takes ``path`` out of the repo."""
    if inside(repo, path):
        return True
    problems.append(Problem(str(path), "leaves the repository through a symlinked directory"))
    return False


def _digest(path: Path, checksum_type: str, problems: list[Problem]) -> str | None:
    """The hex digest of a file, or None (with a problem) if it cannot be computed."""
    try:
        digest = new_hash(checksum_type)
    except IntegrityError:
        problems.append(Problem(str(path), f"unsupported checksum type {checksum_type!r}"))
        return None
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        problems.append(Problem(str(path), f"cannot read ({exc.strerror})"))
        return None
    return digest.hexdigest()


def _oneline(exc: BaseException) -> str:
    return " ".join(str(exc).split())
