"""What a compose takes from the previous compose as it is (DESIGN.md section 7).

- a repo whose packages and carried metadata did not change keeps the previous
  compose's ``repodata/`` (``repomd.xml`` and every file it names) byte for byte:
  the same names and bytes, the same mtimes. Written again, it would get
  a new revision and timestamp, new file names (they carry checksums that
  createrepo_c's output changes with them) and new mtimes: every mirror would
  copy it, MirrorManager would see a new ``repomd.xml`` checksum, and every dnf
  cache would fetch it again, for a repo that did not change;
- in a repo whose metadata is written anew, a metadata file the previous compose's
  repo has under the same name (the name starts with its sha256: the same bytes),
  comps or modules that did not change say, is the previous compose's file;
- a GPG key whose bytes did not change is the previous compose's file (its mtime
  too);
- a variant that was not asked for (``--repo``/``--arch``) is the previous
  compose's whole directory.

Taken files are clones of the previous compose's (reflink: their own inodes sharing
its blocks) where the filesystem can, else its inodes (hardlinks), read-only (0444)
since it finished; across filesystems they are copies (:class:`~reconciler.fsutil.Sharer`:
the same mode, owner and mtime whichever it is).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from .composefiles import RepoContent
from .fsutil import READ_ONLY, Sharer, atomic_write, clone_or_link, tmp_name
from .repodata import LocalRepo

log = logging.getLogger(__name__)
#: A metadata file name that starts with the sha256 of the file (createrepo_c's unique names).
_SHA256_NAME = re.compile(r"^[0-9a-f]{64}-")


def keep_repodata(previous: LocalRepo | None, content: RepoContent, repo_dir: Path) -> bool:
    """Take ``previous``'s ``repodata/`` into ``repo_dir`` when it was written from
    ``content``; False (and nothing taken) when it was not, or is not whole."""
    if previous is None or previous.content() != content:
        return False
    files = previous.repodata_files()
    if not files:
        return False
    dest = repo_dir / "repodata"
    dest.mkdir(parents=True)
    done: list[Path] = []
    sharer = Sharer()
    try:
        for src in files:
            sharer.new(src, dest / src.name)
            done.append(dest / src.name)
    except FileNotFoundError as exc:  # damaged since: write it anew
        log.warning("%s: %s is gone; writing the metadata anew", previous.path, exc.filename)
        for path in done:
            path.unlink()
        dest.rmdir()
        return False
    return True


def share_unchanged(previous: LocalRepo | None, repo_dir: Path) -> int:
    """Replace each file just written in ``repo_dir/repodata`` that ``previous`` has under
    the same name (with a sha256 prefix) and size by that file (a clone or a link); how
    many."""
    if previous is None:
        return 0
    shared = 0
    sharer = Sharer()
    for path in sorted((repo_dir / "repodata").iterdir()):
        old = previous.path / "repodata" / path.name
        if not _SHA256_NAME.match(path.name) or not old.is_file() or old.is_symlink():
            continue
        if old.stat().st_size != path.stat().st_size:
            continue
        tmp = tmp_name(path)
        try:
            sharer.temp(old, tmp)
        except FileNotFoundError:  # gone since: the file just written stays
            continue
        tmp.replace(path)
        shared += 1
    return shared


def place_keys(keys: Sequence[tuple[str, bytes]], dest: Path, previous: Path | None) -> None:
    """Put the GPG keys (``(file name, bytes)``) in ``dest``: taken from ``previous`` (the
    same directory of the previous compose) where it has the same bytes, else written."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in keys:
        old = previous / name if previous is not None else None
        if old is not None and _holds(old, data):
            try:
                clone_or_link(old, dest / name)
                continue
            except FileNotFoundError:
                pass
        atomic_write(dest / name, data, READ_ONLY)


def link_tree(src: Path, dst: Path) -> None:
    """Every file under ``src`` at the same place under ``dst`` (clones, else hardlinks)."""
    sharer = Sharer()
    for dirpath, _dirs, files in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            sharer.new(Path(dirpath) / name, dst / rel / name)


def _holds(path: Path, data: bytes) -> bool:
    """Whether the regular file ``path`` (not a symlink) holds exactly ``data``."""
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size != len(data):
            return False
        return path.read_bytes() == data
    except OSError:
        return False
