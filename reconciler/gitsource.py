"""The desired-state git repository: fetch it, decide whether to trust it, export it.

One pass of the loop (docs/architecture.md, "One pass") starts here::

    source = GitSource(host.git, host.layout.git)
    new = source.fetch()                        # SourceUnavailable when unreachable
    source.check_revision(new, last_applied)    # SourceRejected: rewritten or unsigned
    source.export(new, host.layout.candidate)   # then load the spec from that folder

The clone is a bare repository at ``<workdir>/repo``; the configured branch is
fetched (forced, so a rewrite is seen and judged by :meth:`GitSource.check_revision`)
into ``refs/remotes/origin/<branch>``.

This module fetches and exports; running git (never waiting for a password) and
reading history is :mod:`reconciler.gitrepo`, the fast-forward and signature checks
(``git.verify``, ``git.allowed_signers``, ``git.gpg_keys``) are :mod:`reconciler.gittrust`.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import git
from git.objects import Blob, Tree

from .errors import SourceRejected, SourceUnavailable
from .gitrepo import SHA_RE, Commit, GitRepo, remove, replace_dir, short, useful_line
from .gittrust import SignatureCheck, SourceTrust
from .hostconfig import GitConfig
from .names import TMP_SUFFIX

__all__ = ["Commit", "GitSource", "SignatureCheck", "short"]


class GitSource:
    """The desired-state repository of one host config, cloned under ``workdir``."""

    def __init__(self, config: GitConfig, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.repo_dir = workdir / "repo"
        self.gnupg_dir = workdir / "gnupg"
        self._ref = f"refs/remotes/origin/{config.branch}"
        self._repo = GitRepo(config, self.repo_dir)
        self._trust = SourceTrust(self._repo, workdir, self.gnupg_dir)

    # -- the clone -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The configured URL, password removed."""
        return self._repo.url

    def _unavailable(self, what: str) -> SourceUnavailable:
        return SourceUnavailable(f"cannot fetch branch {self.config.branch} of {self.url}: {what}")

    def _ensure_clone(self) -> None:
        """Create the bare repository on first use (or after it was damaged)."""
        status, out, _ = self._repo.run(self._repo.args("rev-parse", "--is-bare-repository"))
        if status == 0 and out.strip() == "true":
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".repo.", suffix=TMP_SUFFIX, dir=self.workdir))
        try:
            self._repo.check(
                ["-c", "init.defaultBranch=main", "init", "--quiet", "--bare", str(tmp)]
            )
            replace_dir(tmp, self.repo_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def fetch(self) -> str:
        """Clone or fetch; return the sha of the configured branch on the remote."""
        status, _, _ = self._repo.run(["check-ref-format", f"refs/heads/{self.config.branch}"])
        if status != 0:
            raise self._unavailable(f"{self.config.branch!r} is not a valid branch name")
        self._ensure_clone()
        refspec = f"+refs/heads/{self.config.branch}:{self._ref}"
        args = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--", self.config.url]
        status, _, err = self._repo.run(self._repo.args(*args, refspec), network=True)
        if status != 0:
            timed_out = err.startswith("Timeout:")  # GitPython killed it
            line = f"no answer within {self.config.timeout:g} s" if timed_out else useful_line(err)
            password = urlsplit(self.config.url).password
            raise self._unavailable(line.replace(password, "***") if password else line)
        sha = self._repo.resolve(self._ref)
        if sha is None:
            raise self._unavailable(f"{self._ref} is missing after the fetch")
        return sha

    def fetch_ref(self, rev: str) -> str:
        """The sha of ``rev`` on the remote: a branch (``feature``, ``origin/feature``) or a sha.

        Used by ``plan --against`` to see what merging a branch would do.
        """
        self._ensure_clone()
        if SHA_RE.match(rev.strip().lower()):
            known = self._repo.resolve(rev.strip().lower())
            if known is not None:
                return known
        branch = rev.removeprefix("origin/")
        status, _, _ = self._repo.run(["check-ref-format", f"refs/heads/{branch}"])
        if status != 0:
            raise SourceRejected(f"{rev!r} is neither a known commit nor a valid branch name")
        local = f"refs/reconciler/against/{branch}"
        args = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--", self.config.url]
        status, _, err = self._repo.run(
            self._repo.args(*args, f"+refs/heads/{branch}:{local}"), network=True
        )
        if status != 0:
            raise SourceUnavailable(f"cannot fetch {rev} from {self.url}: {useful_line(err)}")
        sha = self._repo.resolve(local)
        if sha is None:
            raise SourceUnavailable(f"{local} is missing after the fetch")
        return sha

    # -- history and trust (gitrepo, gittrust) --------------------------------------

    def commit(self, sha: str) -> Commit:
        """Author, committer, date and summary of one commit."""
        return self._repo.commit(sha)

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """True when ``descendant`` contains ``ancestor`` (see :meth:`GitRepo.is_ancestor`)."""
        return self._repo.is_ancestor(ancestor, descendant)

    def commits_between(self, old: str | None, new: str) -> list[Commit]:
        """Commits reachable from ``new`` but not from ``old``, oldest first (see
        :meth:`GitRepo.commits_between`)."""
        return self._repo.commits_between(old, new)

    def verify(self, sha: str) -> SignatureCheck:
        """Whether commit ``sha`` carries a good signature by one of the configured keys."""
        return self._trust.verify(sha)

    def check_revision(self, new: str, last_applied: str | None) -> None:
        """Raise SourceRejected unless ``new`` may be applied after ``last_applied``."""
        self._trust.check_revision(new, last_applied)

    # -- export ----------------------------------------------------------------------

    def _subpath(self) -> str:
        """``config.path`` as a clean relative git path ("" for the whole tree)."""
        rel = self.config.path.strip("/")
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise SourceRejected(f"git.path {self.config.path!r} must not contain '..'")
        return "/".join(parts)

    def export(self, sha: str, dest: Path) -> Path:
        """Write the tree of ``config.path`` at ``sha`` to ``dest``, replacing it whole."""
        full = self._repo.require(sha)
        rel = self._subpath()
        dest.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(dest)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=TMP_SUFFIX, dir=dest.parent))
        try:
            with git.Repo(self.repo_dir) as repo:
                root = repo.commit(full).tree
                try:
                    tree = root / rel if rel else root
                except KeyError:
                    raise SourceRejected(
                        f"{rel!r} does not exist at commit {short(full)} of {self.url}"
                    ) from None
                if not isinstance(tree, Tree):
                    raise SourceRejected(f"{rel!r} is not a directory at commit {short(full)}")
                _write_tree(tree, tmp, full)
            tmp.chmod(0o755)
            replace_dir(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dest


def _write_tree(tree: Tree, dest: Path, sha: str) -> None:
    """Write regular files and directories of ``tree`` under ``dest``; refuse the rest."""
    for item in tree:
        name = item.name
        if name in ("", ".", "..") or "/" in name or "\0" in name:
            raise SourceRejected(f"unsafe name {item.path!r} at commit {short(sha)}")
        target = dest / name
        if isinstance(item, Tree):
            target.mkdir(mode=0o755)
            _write_tree(item, target, sha)
        elif isinstance(item, Blob) and stat.S_ISREG(item.mode):
            mode = 0o755 if item.mode & 0o111 else 0o644
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            with os.fdopen(os.open(target, flags, mode), "wb") as fh:
                fh.write(item.data_stream.read())
        else:
            kind = "a symlink" if isinstance(item, Blob) else "a submodule or special entry"
            raise SourceRejected(
                f"{item.path!r} at commit {short(sha)} is {kind}; the desired state may only "
                "hold regular files and directories"
            )


def _remove_stale(dest: Path) -> None:
    """Delete temporary siblings of ``dest`` left by an interrupted export."""
    prefix = f".{dest.name}."
    for sibling in dest.parent.iterdir():
        if sibling.name.startswith(prefix) and sibling.name.endswith(TMP_SUFFIX):
            remove(sibling)
