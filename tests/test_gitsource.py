"""The desired-state git source against real repositories, real gpg and real ssh-keygen."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import SourceRejected, SourceUnavailable
from reconciler.gitsource import Commit, GitSource
from reconciler.hostconfig import GitConfig

IDENTITY = {
    "GIT_AUTHOR_NAME": "Ada Author",
    "GIT_AUTHOR_EMAIL": "ada@example.org",
    "GIT_COMMITTER_NAME": "Carl Committer",
    "GIT_COMMITTER_EMAIL": "carl@example.org",
}

needs_gpg = pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg is not installed")
needs_ssh = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="no ssh-keygen")


@pytest.fixture(autouse=True)
def _isolated_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """No user or system git config; a fixed identity for test commits."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for key, value in IDENTITY.items():
        monkeypatch.setenv(key, value)


def run(cmd: Sequence[str], cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    proc = subprocess.run(
        list(cmd),
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"{cmd}: {proc.stderr}"
    return proc.stdout.strip()


@dataclass(frozen=True)
class Signer:
    """How a test commit is signed: git -c options and environment."""

    options: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Remote:
    """A bare 'server' repository and a working clone that pushes to it."""

    bare: Path
    work: Path

    def git(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        return run(["git", *args], cwd=self.work, env=env)

    def commit(
        self,
        files: Mapping[str, str | None],
        message: str,
        signer: Signer | None = None,
        env: Mapping[str, str] | None = None,
    ) -> str:
        """Write (or with None delete) files, commit them, return the sha."""
        for rel, text in files.items():
            path = self.work / rel
            if text is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        self.git("add", "-A")
        sign = ["-S"] if signer else []
        options = list(signer.options) if signer else []
        extra = {**(signer.env if signer else {}), **(env or {})}
        self.git(*options, "commit", "--quiet", "--allow-empty", "-m", message, *sign, env=extra)
        return self.git("rev-parse", "HEAD")

    def push(self, force: bool = False) -> None:
        self.git("push", "--quiet", *(["--force"] if force else []), "origin", "HEAD:main")


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    bare = tmp_path / "origin.git"
    work = tmp_path / "work"
    run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(bare)])
    run(["git", "init", "--quiet", "--initial-branch=main", str(work)])
    run(["git", "remote", "add", "origin", str(bare)], cwd=work)
    return Remote(bare, work)


def make_source(remote: Remote, tmp_path: Path, **overrides: Any) -> GitSource:
    config = GitConfig(url=str(remote.bare), **overrides)
    return GitSource(config, tmp_path / "state" / "git")


# -- fetching ---------------------------------------------------------------------------


def test_clone_then_fetch_sees_new_pushes(remote: Remote, tmp_path: Path) -> None:
    date = {"GIT_COMMITTER_DATE": "2024-05-01T12:00:00+02:00"}
    first = remote.commit({"desired-state/a.yaml": "a: 1\n"}, "Add a\n\nbody text", env=date)
    remote.push()
    source = make_source(remote, tmp_path)

    assert source.fetch() == first
    assert (tmp_path / "state" / "git" / "repo" / "HEAD").is_file()
    assert source.commit(first) == Commit(
        sha=first,
        author_name="Ada Author",
        author_email="ada@example.org",
        committer_name="Carl Committer",
        committed_at=datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
        summary="Add a",
    )
    assert source.commit(first[:12]).author == "Ada Author <ada@example.org>"

    second = remote.commit({"desired-state/a.yaml": "a: 2\n"}, "Change a")
    remote.push()
    # A new instance on the same workdir fetches into the existing clone.
    again = make_source(remote, tmp_path)
    assert again.fetch() == second
    assert [c.summary for c in again.commits_between(first, second)] == ["Change a"]


def test_file_url_works(remote: Remote, tmp_path: Path) -> None:
    sha = remote.commit({"x": "1"}, "one")
    remote.push()
    source = GitSource(GitConfig(url=remote.bare.as_uri()), tmp_path / "git")
    assert source.fetch() == sha


@pytest.mark.parametrize("url", ["{tmp}/does-not-exist.git", "http://127.0.0.1:9/x.git"])
def test_unreachable_remote_is_unavailable_naming_the_url(tmp_path: Path, url: str) -> None:
    url = url.format(tmp=tmp_path)
    source = GitSource(GitConfig(url=url, timeout=10), tmp_path / "git")
    started = time.monotonic()
    with pytest.raises(SourceUnavailable, match="cannot fetch branch main of") as info:
        source.fetch()
    assert url in str(info.value)
    assert time.monotonic() - started < 5


def test_missing_branch_is_unavailable(remote: Remote, tmp_path: Path) -> None:
    remote.commit({"x": "1"}, "one")
    remote.push()
    source = make_source(remote, tmp_path, branch="release")
    with pytest.raises(SourceUnavailable, match="couldn't find remote ref refs/heads/release"):
        source.fetch()


def test_silent_server_times_out(tmp_path: Path) -> None:
    with socket.socket() as server:  # accepts connections (backlog), never answers
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/x.git"
        source = GitSource(GitConfig(url=url, timeout=1), tmp_path / "git")
        started = time.monotonic()
        with pytest.raises(SourceUnavailable, match=re.escape(url)) as info:
            source.fetch()
        assert time.monotonic() - started < 5
        # Killed by the timeout, or aborted by curl's low-speed limit: both fire at 1 s.
        assert re.search(r"no answer within 1 s|too slow", str(info.value)), info.value


def test_password_is_not_shown(tmp_path: Path) -> None:
    url = "http://user:s3cret@127.0.0.1:9/x.git"
    source = GitSource(GitConfig(url=url, timeout=5), tmp_path / "git")
    with pytest.raises(SourceUnavailable) as info:
        source.fetch()
    assert "s3cret" not in str(info.value)
    assert "user:***@127.0.0.1:9" in str(info.value)


# -- history and the rewrite policy -----------------------------------------------------


def test_rewritten_branch_is_refused_unless_allowed(remote: Remote, tmp_path: Path) -> None:
    base = remote.commit({"a": "1"}, "base")
    applied = remote.commit({"a": "2"}, "applied")
    remote.push()
    source = make_source(remote, tmp_path)
    assert source.fetch() == applied
    source.check_revision(applied, None)
    source.check_revision(applied, applied)

    remote.git("reset", "--quiet", "--hard", base)
    rewritten = remote.commit({"a": "3"}, "rewritten")
    remote.push(force=True)
    assert source.fetch() == rewritten
    assert not source.is_ancestor(applied, rewritten)
    with pytest.raises(SourceRejected) as info:
        source.check_revision(rewritten, applied)
    message = str(info.value)
    assert "branch main was rewritten" in message
    assert rewritten[:12] in message
    assert applied[:12] in message
    assert "git.allow_rewrite" in message

    make_source(remote, tmp_path, allow_rewrite=True).check_revision(rewritten, applied)

    forward = remote.commit({"a": "4"}, "forward")
    remote.push()
    assert source.fetch() == forward
    source.check_revision(forward, rewritten)
    # Going back to an older commit is a rewrite too.
    with pytest.raises(SourceRejected, match="rewritten"):
        source.check_revision(rewritten, forward)


def test_history_queries(remote: Remote, tmp_path: Path) -> None:
    shas = [remote.commit({"f": str(i)}, f"c{i}") for i in range(4)]
    remote.push()
    source = make_source(remote, tmp_path)
    source.fetch()
    assert source.is_ancestor(shas[0], shas[3])
    assert source.is_ancestor(shas[2], shas[2])
    assert not source.is_ancestor(shas[3], shas[0])
    assert not source.is_ancestor("0" * 40, shas[3])
    assert [c.sha for c in source.commits_between(shas[0], shas[3])] == shas[1:]
    assert [c.sha for c in source.commits_between(None, shas[3])] == [shas[3]]
    assert source.commits_between(shas[3], shas[3]) == []
    # An old revision the clone never saw excludes nothing.
    assert [c.sha for c in source.commits_between("ab" * 20, shas[2])] == shas[:3]
    with pytest.raises(SourceRejected, match="not in the fetched history"):
        source.commit("deadbeef" * 5)
    with pytest.raises(SourceRejected, match="not in the fetched history"):
        source.commit("--output=/tmp/x")


# -- GPG signatures ---------------------------------------------------------------------


@dataclass(frozen=True)
class GpgKeys:
    trusted: Signer
    other: Signer
    trusted_file: Path  # armored public key of `trusted`
    other_file: Path


def _gen_key(home: Path, uid: str) -> Signer:
    home.mkdir(mode=0o700)
    env = {"GNUPGHOME": str(home)}
    gen = ["gpg", "--batch", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never"]
    run(gen, env=env)
    listing = run(["gpg", "--batch", "--with-colons", "--list-secret-keys"], env=env)
    fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))
    options = ("-c", f"user.signingkey={fpr}", "-c", "gpg.program=gpg")
    return Signer(options, env)


@pytest.fixture(scope="module")
def gpg_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgKeys]:
    root = tmp_path_factory.mktemp("gpg")
    trusted = _gen_key(root / "t", "Trusted Tester <tester@example.org>")
    other = _gen_key(root / "o", "Other Person <other@example.org>")
    files = []
    for signer, name in ((trusted, "trusted.asc"), (other, "other.asc")):
        (root / name).write_text(run(["gpg", "--batch", "--armor", "--export"], env=signer.env))
        files.append(root / name)
    yield GpgKeys(trusted, other, files[0], files[1])
    for signer in (trusted, other):  # stop the agents that signing started
        subprocess.run(
            ["gpgconf", "--kill", "gpg-agent"], check=False, env={**os.environ, **signer.env}
        )


@needs_gpg
def test_gpg_verify(remote: Remote, tmp_path: Path, gpg_keys: GpgKeys) -> None:
    good = remote.commit({"a": "1"}, "signed", gpg_keys.trusted)
    unsigned = remote.commit({"a": "2"}, "unsigned")
    stranger = remote.commit({"a": "3"}, "stranger", gpg_keys.other)
    remote.push()
    source = make_source(remote, tmp_path, gpg_keys=gpg_keys.trusted_file)
    source.fetch()

    check = source.verify(good)
    assert check.ok, check
    assert check.sha == good
    assert check.signer and len(check.signer) == 40
    assert "good signature from Trusted Tester" in check.reason

    check = source.verify(unsigned)
    assert (check.ok, check.signer, check.reason) == (False, None, "no signature")

    check = source.verify(stranger)
    assert not check.ok
    assert "signed by unknown key" in check.reason

    home = tmp_path / "state" / "git" / "gnupg"
    assert home.stat().st_mode & 0o777 == 0o700

    # The keyring follows the file: now only the other key may sign.
    gpg_keys_file = tmp_path / "keys.asc"
    gpg_keys_file.write_text(gpg_keys.other_file.read_text())
    swapped = make_source(remote, tmp_path, gpg_keys=gpg_keys_file)
    assert swapped.verify(stranger).ok
    assert not swapped.verify(good).ok


@needs_gpg
def test_gpg_check_revision_head_and_strict(
    remote: Remote, tmp_path: Path, gpg_keys: GpgKeys
) -> None:
    applied = remote.commit({"a": "1"}, "applied", gpg_keys.trusted)
    middle = remote.commit({"a": "2"}, "sneaky unsigned")
    head = remote.commit({"a": "3"}, "signed head", gpg_keys.trusted)
    remote.push()
    keys = {"gpg_keys": gpg_keys.trusted_file}
    make_source(remote, tmp_path, **keys).fetch()

    make_source(remote, tmp_path, verify="head", **keys).check_revision(head, applied)
    make_source(remote, tmp_path, verify="strict", **keys).check_revision(applied, None)
    with pytest.raises(SourceRejected) as info:
        make_source(remote, tmp_path, verify="strict", **keys).check_revision(head, applied)
    assert middle[:12] in str(info.value)
    assert "no signature" in str(info.value)
    assert "sneaky unsigned" in str(info.value)

    with pytest.raises(SourceRejected, match="no signature"):
        make_source(remote, tmp_path, verify="head", **keys).check_revision(middle, applied)
    make_source(remote, tmp_path, verify="none", **keys).check_revision(middle, applied)


@needs_gpg
def test_unsigned_head_refused_by_other_key(
    remote: Remote, tmp_path: Path, gpg_keys: GpgKeys
) -> None:
    head = remote.commit({"a": "1"}, "by other", gpg_keys.other)
    remote.push()
    source = make_source(remote, tmp_path, verify="head", gpg_keys=gpg_keys.trusted_file)
    source.fetch()
    with pytest.raises(SourceRejected, match="signed by unknown key"):
        source.check_revision(head, None)


def test_verify_without_keys_is_an_incomplete_config(remote: Remote, tmp_path: Path) -> None:
    head = remote.commit({"a": "1"}, "one")
    remote.push()
    source = make_source(remote, tmp_path, verify="strict")
    source.fetch()
    with pytest.raises(SourceRejected, match=r"neither git\.allowed_signers nor git\.gpg_keys"):
        source.check_revision(head, head)
    with pytest.raises(SourceRejected, match="incomplete"):
        source.verify(head)


# -- SSH signatures ---------------------------------------------------------------------


def _ssh_key(directory: Path, name: str) -> tuple[Signer, str]:
    key = directory / name
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)])
    public = " ".join(key.with_suffix(".pub").read_text().split()[:2])
    options = ("-c", "gpg.format=ssh", "-c", f"user.signingkey={key}.pub")
    return Signer(options), public


@needs_ssh
def test_ssh_verify(remote: Remote, tmp_path: Path) -> None:
    trusted, public = _ssh_key(tmp_path, "trusted")
    stranger, _ = _ssh_key(tmp_path, "stranger")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f'"tester@example.org" {public}\n')
    good = remote.commit({"a": "1"}, "ssh signed", trusted)
    bad = remote.commit({"a": "2"}, "ssh stranger", stranger)
    remote.push()
    source = make_source(remote, tmp_path, verify="head", allowed_signers=allowed)
    source.fetch()

    check = source.verify(good)
    assert check.ok, check
    assert check.signer == "tester@example.org"
    check = source.verify(bad)
    assert not check.ok
    assert "unknown SSH key SHA256:" in check.reason
    source.check_revision(good, None)
    with pytest.raises(SourceRejected, match="unknown SSH key"):
        source.check_revision(bad, good)
    # An SSH signature is not trusted when only GPG keys are configured.
    gpg_only = make_source(remote, tmp_path, gpg_keys=allowed)
    assert "git.allowed_signers is not configured" in gpg_only.verify(good).reason


# -- export -----------------------------------------------------------------------------


def test_export_materialises_the_subfolder_at_that_commit(remote: Remote, tmp_path: Path) -> None:
    old = remote.commit(
        {
            "desired-state/defaults.yaml": "v: 1\n",
            "desired-state/sigs/core.yaml": "sig: core\n",
            "README": "outside\n",
        },
        "first",
    )
    (remote.work / "desired-state" / "sigs" / "core.yaml").chmod(0o755)
    remote.commit({}, "make core.yaml executable")
    remote.commit({"desired-state/defaults.yaml": "v: 2\n", "desired-state/new.yaml": "n"}, "2nd")
    remote.push()
    source = make_source(remote, tmp_path)
    head = source.fetch()

    dest = tmp_path / "desired"
    dest.mkdir()
    (dest / "stale.yaml").write_text("left over")
    assert source.export(old, dest) == dest
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == [
        "defaults.yaml",
        "sigs",
        "sigs/core.yaml",
    ]
    assert (dest / "defaults.yaml").read_text() == "v: 1\n"

    source.export(head, dest)
    assert (dest / "defaults.yaml").read_text() == "v: 2\n"
    assert (dest / "new.yaml").read_text() == "n"
    assert (dest / "sigs" / "core.yaml").stat().st_mode & 0o777 == 0o755
    assert (dest / "defaults.yaml").stat().st_mode & 0o111 == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".desired")] == []


def test_export_of_a_missing_path_is_rejected(remote: Remote, tmp_path: Path) -> None:
    sha = remote.commit({"elsewhere/a.yaml": "a"}, "no desired state yet")
    remote.push()
    source = make_source(remote, tmp_path)
    source.fetch()
    dest = tmp_path / "desired"
    with pytest.raises(
        SourceRejected, match=f"'desired-state' does not exist at commit {sha[:12]}"
    ):
        source.export(sha, dest)
    assert not dest.exists()
    assert make_source(remote, tmp_path, path="elsewhere").export(sha, dest) == dest
    assert (dest / "a.yaml").read_text() == "a"


def test_export_refuses_symlinks(remote: Remote, tmp_path: Path) -> None:
    (remote.work / "desired-state").mkdir()
    (remote.work / "desired-state" / "passwd").symlink_to("/etc/passwd")
    sha = remote.commit({"desired-state/a.yaml": "a"}, "with a symlink")
    remote.push()
    source = make_source(remote, tmp_path)
    source.fetch()
    dest = tmp_path / "desired"
    with pytest.raises(SourceRejected, match=r"'desired-state/passwd' .* is a symlink"):
        source.export(sha, dest)
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".desired")] == []
