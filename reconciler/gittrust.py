"""Whether to trust a fetched revision: no rewrite, and signatures as ``git.verify`` asks.

``git.verify`` is ``none`` (only the fast-forward check), ``head`` (the new head
needs a good signature) or ``strict`` (so does every commit since the last applied).

Signatures: SSH ones are checked against ``git.allowed_signers``; OpenPGP ones
against a private ``GNUPGHOME`` under the workdir holding only the keys of
``git.gpg_keys`` (rebuilt when that file changes; the user's keyring is never used).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import SourceRejected
from .gitrepo import FIELD_SEP, GitRepo, replace_dir, short
from .names import TMP_SUFFIX

#: %GT (trust level) is deliberately absent: git 2.39 aborts on it for some commits.
_SIG_FORMAT = "%G?%x1f%GS%x1f%GK%x1f%GF%x1f%GP%x1f%GG"
_SIG_HEADERS = ("gpgsig ", "gpgsig-sha256 ")
_ARMOR_KINDS = {
    "-----BEGIN SSH SIGNATURE-----": "ssh",
    "-----BEGIN PGP SIGNATURE-----": "openpgp",
    "-----BEGIN SIGNED MESSAGE-----": "x509",
}
_KEYS_STAMP = "reconciler-keys.sha256"


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
        parts = (text.split(FIELD_SEP, 5) + [""] * 6)[:6]
        return cls(*(p.strip() for p in parts))

    @property
    def raw_line(self) -> str:
        """The last line of git's verification output: usually the verdict."""
        lines = [ln.strip() for ln in self.raw.splitlines() if ln.strip()]
        return lines[-1] if lines else "no details"


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


class SourceTrust:
    """The trust policy of one host config's git source, applied to the clone ``repo``.

    The private keyring is built at ``gnupg_dir`` (temporary copies under ``workdir``).
    """

    def __init__(self, repo: GitRepo, workdir: Path, gnupg_dir: Path) -> None:
        self.repo = repo
        self.config = repo.config
        self.workdir = workdir
        self.gnupg_dir = gnupg_dir
        self._keyring: tuple[str, frozenset[str]] | None = None

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
        full = self.repo.require(sha)
        kind = _signature_kind(self.repo.check(self.repo.args("cat-file", "commit", full)))
        if kind is None:
            return SignatureCheck(full, False, None, "no signature")
        if kind == "ssh":
            return self._verify_ssh(full)
        if kind == "openpgp":
            return self._verify_gpg(full)
        return SignatureCheck(full, False, None, f"{kind} signatures are not accepted")

    def _sig_fields(self, sha: str, config: Sequence[str], env: Mapping[str, str]) -> _SigFields:
        args = ["-c", "log.showSignature=false", *config]
        args += self.repo.args("log", "-1", "--no-walk", f"--format={_SIG_FORMAT}", sha, "--")
        return _SigFields.parse(self.repo.check(args, env))

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

    # -- the private keyring ---------------------------------------------------------

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
            replace_dir(tmp, self.gnupg_dir)
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
        head = self.repo.require(new)
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
        if self.config.allow_rewrite or self.repo.is_ancestor(last_applied, head):
            return  # a commit is its own ancestor: an unchanged branch passes too
        raise SourceRejected(
            f"branch {self.config.branch} was rewritten: {short(head)} is not a "
            f"fast-forward of the last applied {short(last_applied)}; refusing "
            "(set git.allow_rewrite to accept)"
        )

    def _check_all_signed(self, head: str, last_applied: str | None) -> None:
        for commit in self.repo.commits_between(last_applied, head):
            check = self.verify(commit.sha)
            if not check.ok:
                since = f" since the last applied {short(last_applied)}" if last_applied else ""
                raise SourceRejected(
                    f"branch {self.config.branch} at {short(head)} is refused (git.verify is "
                    f"strict): commit {short(commit.sha)}{since} ({commit.summary!r} by "
                    f"{commit.author}): {check.reason}"
                )
