"""The desired-state git repository: fetch it, decide whether to trust it, export it.

One pass of the loop (DESIGN.md section 2) starts here::

    source = GitSource(config.git, config.state_dir / "git")
    new = source.fetch()                      # SourceUnavailable when unreachable
    source.check_revision(new, last_applied)  # SourceRejected: rewritten or unsigned
    source.export(new, state_dir / "desired") # then load the spec from that folder

The clone is a bare repository at ``<workdir>/repo``; the configured branch is
fetched (forced, so a rewrite is seen and judged by :meth:`GitSource.check_revision`)
into ``refs/remotes/origin/<branch>``. Every git call is an argument list run
through GitPython with a timeout, no terminal and ``GIT_TERMINAL_PROMPT=0``, so a
fetch never waits for a password.

Signatures: SSH ones are checked against ``git.allowed_signers``; OpenPGP ones
against a private ``GNUPGHOME`` under the workdir holding only the keys of
``git.gpg_keys`` (rebuilt when that file changes; the user's keyring is never used).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import git
from git.objects import Blob, Tree

from .errors import SourceRejected, SourceUnavailable
from .fsutil import TMP_SUFFIX, fsync_dir
from .hostconfig import GitConfig

_SHA_RE = re.compile(r"^[0-9a-f]{4,64}$")
_SEP = "\x1f"
#: One commit per NUL-terminated record (``log -z``), fields split by 0x1f.
_COMMIT_FORMAT = "%H%x1f%an%x1f%ae%x1f%cn%x1f%ct%x1f%s"
#: %GT (trust level) is deliberately absent: git 2.39 aborts on it for some commits.
_SIG_FORMAT = "%G?%x1f%GS%x1f%GK%x1f%GF%x1f%GP%x1f%GG"
_SIG_HEADERS = ("gpgsig ", "gpgsig-sha256 ")
_ARMOR_KINDS = {
    "-----BEGIN SSH SIGNATURE-----": "ssh",
    "-----BEGIN PGP SIGNATURE-----": "openpgp",
    "-----BEGIN SIGNED MESSAGE-----": "x509",
}
_KEYS_STAMP = "reconciler-keys.sha256"


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


@dataclass(frozen=True)
class SignatureCheck:
    """The verdict on one commit's signature."""

    sha: str
    ok: bool
    signer: str | None
    reason: str


@dataclass(frozen=True)
class _SigFields:
    """The ``%G…`` placeholders of ``git log`` for one commit."""

    status: str
    signer: str
    key: str
    fingerprint: str
    primary: str
    raw: str

    @classmethod
    def parse(cls, text: str) -> _SigFields:
        parts = (text.split(_SEP, 5) + [""] * 6)[:6]
        return cls(*(p.strip() for p in parts))

    @property
    def raw_line(self) -> str:
        """The last line of git's verification output: usually the verdict."""
        lines = [ln.strip() for ln in self.raw.splitlines() if ln.strip()]
        return lines[-1] if lines else "no details"


def _redact(url: str) -> str:
    """``url`` without a password, fit for messages and logs."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _useful_line(stderr: str) -> str:
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
        sha, name, email, committer, when, summary = (record.split(_SEP, 5) + [""] * 6)[:6]
        at = datetime.fromtimestamp(int(when), tz=UTC)
        commits.append(Commit(sha, name, email, committer, at, summary))
    return commits


def _signature_kind(raw_commit: str) -> str | None:
    """``ssh``, ``openpgp``, ``x509``, ``unknown``, or None for an unsigned commit object."""
    for line in raw_commit.split("\n"):
        if not line:
            break  # end of the headers
        for header in _SIG_HEADERS:
            if line.startswith(header):
                return _ARMOR_KINDS.get(line.removeprefix(header).strip(), "unknown")
    return None


def _ssh_check(sha: str, f: _SigFields, allowed: Path) -> SignatureCheck:
    """Judge ``%G?`` for an SSH signature (G only when a principal matched)."""
    if f.status == "G" and f.signer:
        return SignatureCheck(sha, True, f.signer, f"good SSH signature from {f.signer} ({f.key})")
    if f.status in ("G", "U"):
        return SignatureCheck(
            sha, False, f.key or None, f"signed by unknown SSH key {f.key} (not in {allowed})"
        )
    if f.status == "B":
        return SignatureCheck(sha, False, f.key or None, f"bad SSH signature (key {f.key})")
    return SignatureCheck(
        sha, False, f.key or None, f"SSH signature cannot be checked: {f.raw_line}"
    )


_GPG_BAD = {
    "B": "bad signature from {who}",
    "X": "good signature from {who}, but the signature has expired",
    "Y": "signed by expired key {who}",
    "R": "signed by revoked key {who}",
    "E": "signed by unknown key {who}",
    "N": "no signature",
}


def _gpg_check(sha: str, f: _SigFields, allowed: frozenset[str]) -> SignatureCheck:
    """Judge ``%G?`` for an OpenPGP signature against the allowed fingerprints.

    The private keyring trusts nobody, so a good signature shows as ``U``
    (unknown validity) as well as ``G``; either counts when the key is one of ours.
    """
    key = f.primary or f.fingerprint or f.key
    if f.status in ("G", "U"):
        if {f.primary, f.fingerprint} & allowed:
            reason = f"good signature from {f.signer or key} (key {key})"
            return SignatureCheck(sha, True, key, reason)
        return SignatureCheck(sha, False, key, f"signed by key {key}, which git.gpg_keys lacks")
    who = f"{f.signer} ({key})" if f.signer else key
    unknown = "signature cannot be checked ({status}): {raw}"
    template = _GPG_BAD.get(f.status, unknown) if key or f.status == "N" else unknown
    reason = template.format(who=who, status=f.status, raw=f.raw_line)
    return SignatureCheck(sha, False, key or None, reason)


class GitSource:
    """The desired-state repository of one host config, cloned under ``workdir``."""

    def __init__(self, config: GitConfig, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.repo_dir = workdir / "repo"
        self.gnupg_dir = workdir / "gnupg"
        self._ref = f"refs/remotes/origin/{config.branch}"
        self._git = git.Git()
        self._keyring: tuple[str, frozenset[str]] | None = None

    # -- running git -----------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        """Environment for every git call: never prompt, never stall silently."""
        return {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_NO_REPLACE_OBJECTS": "1",
            "GIT_HTTP_LOW_SPEED_LIMIT": "1000",
            "GIT_HTTP_LOW_SPEED_TIME": str(max(1, math.ceil(self.config.timeout))),
        }

    def _run(
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

    def _repo(self, *args: str) -> list[str]:
        return [f"--git-dir={self.repo_dir}", *args]

    def _check(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> str:
        """Run a local git command that must succeed; return its stdout."""
        status, out, err = self._run(args, env)
        if status != 0:
            what = next((a for a in args if not a.startswith("-") and "=" not in a), "")
            raise SourceUnavailable(f"{self.repo_dir}: git {what} failed: {_useful_line(err)}")
        return out

    # -- the clone -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The configured URL, password removed."""
        return _redact(self.config.url)

    def _unavailable(self, what: str) -> SourceUnavailable:
        return SourceUnavailable(f"cannot fetch branch {self.config.branch} of {self.url}: {what}")

    def _ensure_clone(self) -> None:
        """Create the bare repository on first use (or after it was damaged)."""
        status, out, _ = self._run(self._repo("rev-parse", "--is-bare-repository"))
        if status == 0 and out.strip() == "true":
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".repo.", suffix=TMP_SUFFIX, dir=self.workdir))
        try:
            self._check(["-c", "init.defaultBranch=main", "init", "--quiet", "--bare", str(tmp)])
            _replace_dir(tmp, self.repo_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def fetch(self) -> str:
        """Clone or fetch; return the sha of the configured branch on the remote."""
        status, _, _ = self._run(["check-ref-format", f"refs/heads/{self.config.branch}"])
        if status != 0:
            raise self._unavailable(f"{self.config.branch!r} is not a valid branch name")
        self._ensure_clone()
        refspec = f"+refs/heads/{self.config.branch}:{self._ref}"
        args = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--", self.config.url]
        status, _, err = self._run(self._repo(*args, refspec), network=True)
        if status != 0:
            timed_out = err.startswith("Timeout:")  # GitPython killed it
            line = f"no answer within {self.config.timeout:g} s" if timed_out else _useful_line(err)
            password = urlsplit(self.config.url).password
            raise self._unavailable(line.replace(password, "***") if password else line)
        sha = self._resolve(self._ref)
        if sha is None:
            raise self._unavailable(f"{self._ref} is missing after the fetch")
        return sha

    def fetch_ref(self, rev: str) -> str:
        """The sha of ``rev`` on the remote: a branch (``feature``, ``origin/feature``) or a sha.

        Used by ``plan --against`` to see what merging a branch would do.
        """
        self._ensure_clone()
        if _SHA_RE.match(rev.strip().lower()):
            known = self._resolve(rev.strip().lower())
            if known is not None:
                return known
        branch = rev.removeprefix("origin/")
        status, _, _ = self._run(["check-ref-format", f"refs/heads/{branch}"])
        if status != 0:
            raise SourceRejected(f"{rev!r} is neither a known commit nor a valid branch name")
        local = f"refs/reconciler/against/{branch}"
        args = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--", self.config.url]
        status, _, err = self._run(self._repo(*args, f"+refs/heads/{branch}:{local}"), network=True)
        if status != 0:
            raise SourceUnavailable(f"cannot fetch {rev} from {self.url}: {_useful_line(err)}")
        sha = self._resolve(local)
        if sha is None:
            raise SourceUnavailable(f"{local} is missing after the fetch")
        return sha

    # -- reading history -------------------------------------------------------------

    def _resolve(self, rev: str) -> str | None:
        """The full sha of commit ``rev`` in the clone, or None when it is not there."""
        args = self._repo(
            "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"
        )
        status, out, _ = self._run(args)
        return out.strip() if status == 0 else None

    def _require(self, sha: str) -> str:
        """The full sha of commit ``sha``; SourceRejected when it is malformed or absent."""
        sha = sha.strip().lower()
        full = self._resolve(sha) if _SHA_RE.match(sha) else None
        if full is None:
            raise SourceRejected(f"commit {sha!r} is not in the fetched history of {self.url}")
        return full

    def _log(self, *revs: str) -> list[Commit]:
        fmt = f"--format={_COMMIT_FORMAT}"
        args = ["-c", "log.showSignature=false", *self._repo("log", "-z", fmt, *revs, "--")]
        return _parse_commits(self._check(args))

    def commit(self, sha: str) -> Commit:
        """Author, committer, date and summary of one commit."""
        return self._log("-1", "--no-walk", self._require(sha))[0]

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """True when ``descendant`` contains ``ancestor`` (a commit is its own ancestor).

        An ``ancestor`` absent from the clone is not an ancestor: everything
        reachable from a fetched head is in the clone.
        """
        new = self._require(descendant)
        old = ancestor.strip().lower()
        old_full = self._resolve(old) if _SHA_RE.match(old) else None
        if old_full is None:
            return False
        status, _, err = self._run(self._repo("merge-base", "--is-ancestor", old_full, new))
        if status not in (0, 1):
            raise SourceUnavailable(f"{self.repo_dir}: git merge-base failed: {_useful_line(err)}")
        return status == 0

    def commits_between(self, old: str | None, new: str) -> list[Commit]:
        """Commits reachable from ``new`` but not from ``old``, oldest first.

        ``old`` None gives ``[new]``. An ``old`` absent from the clone (a rewrite
        whose old objects are gone) excludes nothing: all history of ``new``.
        """
        head = self._require(new)
        if old is None:
            return [self.commit(head)]
        old_sha = old.strip().lower()
        old_full = self._resolve(old_sha) if _SHA_RE.match(old_sha) else None
        exclude = ["--not", old_full] if old_full else []
        return self._log("--topo-order", "--reverse", head, *exclude)

    # -- signatures ------------------------------------------------------------------

    def _require_keys(self) -> None:
        """SourceRejected unless at least one kind of trusted key is configured."""
        if self.config.allowed_signers is None and self.config.gpg_keys is None:
            raise SourceRejected(
                f"git.verify is {self.config.verify!r} but neither git.allowed_signers nor "
                "git.gpg_keys is set: the host config is incomplete, no signature can be trusted"
            )

    def verify(self, sha: str) -> SignatureCheck:
        """Whether commit ``sha`` carries a good signature by one of the configured keys."""
        self._require_keys()
        full = self._require(sha)
        kind = _signature_kind(self._check(self._repo("cat-file", "commit", full)))
        if kind is None:
            return SignatureCheck(full, False, None, "no signature")
        if kind == "ssh":
            return self._verify_ssh(full)
        if kind == "openpgp":
            return self._verify_gpg(full)
        return SignatureCheck(full, False, None, f"{kind} signatures are not accepted")

    def _sig_fields(self, sha: str, config: Sequence[str], env: Mapping[str, str]) -> _SigFields:
        args = ["-c", "log.showSignature=false", *config]
        args += self._repo("log", "-1", "--no-walk", f"--format={_SIG_FORMAT}", sha, "--")
        return _SigFields.parse(self._check(args, env))

    def _verify_ssh(self, sha: str) -> SignatureCheck:
        allowed = self.config.allowed_signers
        if allowed is None:
            reason = "signed with an SSH key, but git.allowed_signers is not configured"
            return SignatureCheck(sha, False, None, reason)
        if not allowed.is_file():
            raise SourceRejected(f"git.allowed_signers {allowed} does not exist")
        config = ["-c", f"gpg.ssh.allowedSignersFile={allowed.resolve()}"]
        return _ssh_check(sha, self._sig_fields(sha, config, {}), allowed)

    def _verify_gpg(self, sha: str) -> SignatureCheck:
        if self.config.gpg_keys is None:
            reason = "signed with an OpenPGP key, but git.gpg_keys is not configured"
            return SignatureCheck(sha, False, None, reason)
        allowed = self._gpg_keyring(self.config.gpg_keys)
        env = {"GNUPGHOME": str(self.gnupg_dir)}
        return _gpg_check(sha, self._sig_fields(sha, ["-c", "gpg.program=gpg"], env), allowed)

    def _gpg_keyring(self, keys: Path) -> frozenset[str]:
        """Fingerprints in the private keyring, rebuilt when ``keys`` changed."""
        try:
            digest = hashlib.sha256(keys.read_bytes()).hexdigest()
        except OSError as exc:
            raise SourceRejected(f"git.gpg_keys {keys} cannot be read: {exc.strerror}") from exc
        if self._keyring is not None and self._keyring[0] == digest:
            return self._keyring[1]
        stamp = self.gnupg_dir / _KEYS_STAMP
        if not (stamp.is_file() and stamp.read_text().strip() == digest):
            self._build_keyring(keys, digest)
        fingerprints = self._gpg_fingerprints(self.gnupg_dir)
        self._keyring = (digest, fingerprints)
        return fingerprints

    def _gpg(self, home: Path, *args: str) -> str:
        """Run gpg on a private home (never starting an agent); return stdout."""
        cmd = ["gpg", "--homedir", str(home), "--batch", "--no-autostart", *args]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=self.config.timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SourceRejected(f"cannot run gpg for git.gpg_keys: {exc}") from exc
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines() or ["no error message"]
            raise SourceRejected(f"gpg {args[0]} failed for git.gpg_keys: {lines[-1]}")
        return proc.stdout

    def _build_keyring(self, keys: Path, digest: str) -> None:
        """Import ``keys`` into a fresh 0700 GNUPGHOME and swap it into place."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".gnupg.", suffix=TMP_SUFFIX, dir=self.workdir))
        try:
            self._gpg(tmp, "--import", str(keys.resolve()))
            if not self._gpg_fingerprints(tmp):
                raise SourceRejected(f"git.gpg_keys {keys} holds no public key")
            (tmp / _KEYS_STAMP).write_text(digest + "\n")
            _replace_dir(tmp, self.gnupg_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _gpg_fingerprints(self, home: Path) -> frozenset[str]:
        """Every fingerprint (primary keys and subkeys) in the keyring at ``home``."""
        out = self._gpg(home, "--with-colons", "--list-keys")
        return frozenset(
            fields[9] for fields in (ln.split(":") for ln in out.splitlines()) if fields[0] == "fpr"
        )

    # -- the policy ------------------------------------------------------------------

    def check_revision(self, new: str, last_applied: str | None) -> None:
        """Raise SourceRejected unless ``new`` may be applied after ``last_applied``."""
        head = self._require(new)
        if self.config.verify != "none":
            self._require_keys()
        if last_applied is not None:
            self._check_fast_forward(head, last_applied)
        if self.config.verify == "head":
            check = self.verify(head)
            if not check.ok:
                raise SourceRejected(
                    f"branch {self.config.branch} at {short(head)} is refused "
                    f"(git.verify is head): {check.reason}"
                )
        elif self.config.verify == "strict":
            self._check_all_signed(head, last_applied)

    def _check_fast_forward(self, head: str, last_applied: str) -> None:
        if self.config.allow_rewrite or self.is_ancestor(last_applied, head):
            return  # a commit is its own ancestor: an unchanged branch passes too
        raise SourceRejected(
            f"branch {self.config.branch} was rewritten: {short(head)} is not a "
            f"fast-forward of the last applied {short(last_applied)}; refusing "
            "(set git.allow_rewrite to accept)"
        )

    def _check_all_signed(self, head: str, last_applied: str | None) -> None:
        for commit in self.commits_between(last_applied, head):
            check = self.verify(commit.sha)
            if not check.ok:
                since = f" since the last applied {short(last_applied)}" if last_applied else ""
                raise SourceRejected(
                    f"branch {self.config.branch} at {short(head)} is refused (git.verify is "
                    f"strict): commit {short(commit.sha)}{since} ({commit.summary!r} by "
                    f"{commit.author}): {check.reason}"
                )

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
        full = self._require(sha)
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
            _replace_dir(tmp, dest)
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
            _remove(sibling)


def _replace_dir(new: Path, dest: Path) -> None:
    """Rename directory ``new`` to ``dest``; an old ``dest`` is renamed aside, then removed."""
    old = dest.with_name(f".{dest.name}.old.{os.getpid()}{TMP_SUFFIX}")
    _remove(old)
    if dest.exists() or dest.is_symlink():
        dest.rename(old)
    new.rename(dest)
    fsync_dir(dest.parent)
    _remove(old)


def _remove(path: Path) -> None:
    """Delete ``path`` (a directory tree, a file or a symlink) if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
