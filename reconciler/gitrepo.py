"""The bare clone of the desired-state repository, and git run on it safely.

Every git call is an argument list run through GitPython with a timeout, no
terminal and ``GIT_TERMINAL_PROMPT=0``, so a fetch never waits for a password.
:class:`GitRepo` runs those calls, resolves revisions and reads history (for the
audit trail and the trust checks); fetching and exporting are in
:mod:`reconciler.gitsource`, the trust checks in :mod:`reconciler.gittrust`.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import git

from .errors import SourceRejected, SourceUnavailable
from .fsutil import fsync_dir
from .hostconfig import GitConfig
from .names import TMP_SUFFIX

SHA_RE = re.compile(r"^[0-9a-f]{4,64}$")
#: The field separator of the ``--format`` strings below and of :mod:`reconciler.gittrust`.
FIELD_SEP = "\x1f"
#: One commit per NUL-terminated record (``log -z``), fields split by 0x1f.
_COMMIT_FORMAT = "%H%x1f%an%x1f%ae%x1f%cn%x1f%ct%x1f%s"


def short(sha: str) -> str:
    """The 12-character abbreviation used in messages."""
    return sha[:12]


@dataclass(frozen=True)
class Commit:
    """What the audit trail needs to know about one commit."""

    sha: str
    author_name: str
    author_email: str
    committer_name: str
    committed_at: datetime
    summary: str

    @property
    def author(self) -> str:
        """``Name <email>``."""
        return f"{self.author_name} <{self.author_email}>"


def redact(url: str) -> str:
    """``url`` without a password, fit for messages and logs."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def useful_line(stderr: str) -> str:
    """What went wrong, from git's stderr: the first ``fatal:``/``error:`` line.

    A line printed before it (ssh's "Connection refused", "Permission denied")
    says more than git's generic "Could not read from remote repository", so it
    is put first.
    """
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        for prefix in ("fatal: ", "error: "):
            if line.startswith(prefix):
                before = [ln for ln in lines[:i] if not ln.startswith(("hint:", "warning:"))]
                cause = line.removeprefix(prefix)
                return f"{before[-1]}; {cause}" if before else cause
    return lines[-1] if lines else "no error message"


def _parse_commits(output: str) -> list[Commit]:
    """Commits from ``git log -z --format=_COMMIT_FORMAT`` output."""
    commits = []
    for raw in output.split("\0"):
        record = raw.strip("\n")
        if not record:
            continue
        sha, name, email, committer, when, summary = (record.split(FIELD_SEP, 5) + [""] * 6)[:6]
        at = datetime.fromtimestamp(int(when), tz=UTC)
        commits.append(Commit(sha, name, email, committer, at, summary))
    return commits


class GitRepo:
    """The bare clone at ``repo_dir`` of the repository of ``config``."""

    def __init__(self, config: GitConfig, repo_dir: Path) -> None:
        self.config = config
        self.repo_dir = repo_dir
        self._git = git.Git()

    @property
    def url(self) -> str:
        """The configured URL, password removed."""
        return redact(self.config.url)

    # -- running git -----------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        """Environment for every git call: never prompt, never stall silently."""
        return {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_NO_REPLACE_OBJECTS": "1",
            "GIT_HTTP_LOW_SPEED_LIMIT": "1000",
            "GIT_HTTP_LOW_SPEED_TIME": str(max(1, math.ceil(self.config.timeout))),
        }

    def run(
        self, args: Sequence[str], env: Mapping[str, str] | None = None, network: bool = False
    ) -> tuple[int, str, str]:
        """Run ``git ARGS``; return (status, stdout, stderr). Killed after the timeout.

        ``network`` calls run in a new session: without a controlling terminal,
        ssh cannot ask for a password or a host key confirmation either.
        """
        try:
            return self._git.execute(
                ["git", *args],
                with_extended_output=True,
                with_exceptions=False,
                kill_after_timeout=self.config.timeout,
                env={**self._env(), **(env or {})},
                start_new_session=network,
            )
        except git.GitCommandNotFound as exc:
            raise SourceUnavailable(f"git is not installed: {exc}") from exc

    def args(self, *args: str) -> list[str]:
        """``args`` prefixed to run on the clone."""
        return [f"--git-dir={self.repo_dir}", *args]

    def check(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> str:
        """Run a local git command that must succeed; return its stdout."""
        status, out, err = self.run(args, env)
        if status != 0:
            what = next((a for a in args if not a.startswith("-") and "=" not in a), "")
            raise SourceUnavailable(f"{self.repo_dir}: git {what} failed: {useful_line(err)}")
        return out

    # -- reading history -------------------------------------------------------------

    def resolve(self, rev: str) -> str | None:
        """The full sha of commit ``rev`` in the clone, or None when it is not there."""
        args = self.args(
            "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"
        )
        status, out, _ = self.run(args)
        return out.strip() if status == 0 else None

    def require(self, sha: str) -> str:
        """The full sha of commit ``sha``; SourceRejected when it is malformed or absent."""
        sha = sha.strip().lower()
        full = self.resolve(sha) if SHA_RE.match(sha) else None
        if full is None:
            raise SourceRejected(f"commit {sha!r} is not in the fetched history of {self.url}")
        return full

    def _log(self, *revs: str) -> list[Commit]:
        fmt = f"--format={_COMMIT_FORMAT}"
        args = ["-c", "log.showSignature=false", *self.args("log", "-z", fmt, *revs, "--")]
        return _parse_commits(self.check(args))

    def commit(self, sha: str) -> Commit:
        """Author, committer, date and summary of one commit."""
        return self._log("-1", "--no-walk", self.require(sha))[0]

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """True when ``descendant`` contains ``ancestor`` (a commit is its own ancestor).

        An ``ancestor`` absent from the clone is not an ancestor: everything
        reachable from a fetched head is in the clone.
        """
        new = self.require(descendant)
        old = ancestor.strip().lower()
        old_full = self.resolve(old) if SHA_RE.match(old) else None
        if old_full is None:
            return False
        status, _, err = self.run(self.args("merge-base", "--is-ancestor", old_full, new))
        if status not in (0, 1):
            raise SourceUnavailable(f"{self.repo_dir}: git merge-base failed: {useful_line(err)}")
        return status == 0

    def commits_between(self, old: str | None, new: str) -> list[Commit]:
        """Commits reachable from ``new`` but not from ``old``, oldest first.

        ``old`` None gives ``[new]``. An ``old`` absent from the clone (a rewrite
        whose old objects are gone) excludes nothing: all history of ``new``.
        """
        head = self.require(new)
        if old is None:
            return [self.commit(head)]
        old_sha = old.strip().lower()
        old_full = self.resolve(old_sha) if SHA_RE.match(old_sha) else None
        exclude = ["--not", old_full] if old_full else []
        return self._log("--topo-order", "--reverse", head, *exclude)


# -- swapping directories (the clone, the keyring, the export) -----------------------


def replace_dir(new: Path, dest: Path) -> None:
    """Rename directory ``new`` to ``dest``; an old ``dest`` is renamed aside, then removed."""
    old = dest.with_name(f".{dest.name}.old.{os.getpid()}{TMP_SUFFIX}")
    remove(old)
    if dest.exists() or dest.is_symlink():
        dest.rename(old)
    new.rename(dest)
    fsync_dir(dest.parent)
    remove(old)


def remove(path: Path) -> None:
    """Delete ``path`` (a directory tree, a file or a symlink) if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
