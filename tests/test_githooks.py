"""The git hooks of hooks/ in real repositories: real pushes through a bare server's hooks.

Every git command runs with HOME in tmp_path and no system config, so the user's
git configuration plays no part.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HOOKS = ROOT / "hooks"
TEMPLATE = ROOT / "desired-state"
CORE = "desired-state/sigs/core.yaml"
GOOD_LINE = "core-common: {arches: [x86_64, aarch64]}"
BAD_LINE = "core-common: {arches: [x86_64, sparc]}"

needs_ssh = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="no ssh-keygen")
needs_gpg = pytest.mark.skipif(shutil.which("gpg") is None, reason="no gpg")


def git_env(home: Path) -> dict[str, str]:
    home.mkdir(exist_ok=True)
    return {
        **os.environ,
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Alice Admin",
        "GIT_AUTHOR_EMAIL": "alice@example.org",
        "GIT_COMMITTER_NAME": "Alice Admin",
        "GIT_COMMITTER_EMAIL": "alice@example.org",
    }


@dataclass
class Repos:
    """A bare ``server`` with hooks installed and a ``work`` clone to commit and push from."""

    server: Path
    work: Path
    env: dict[str, str]

    def git(self, *args: str, cwd: Path | None = None, check: bool = True) -> str:
        proc = self.run("git", *args, cwd=cwd)
        assert not check or proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args,
            cwd=cwd or self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def config(self, key: str, value: str | Path) -> None:
        self.git("config", key, str(value), cwd=self.server)

    def commit(self, message: str, sign: Path | None = None) -> str:
        """Commit everything in the work tree (signed with SSH key ``sign``); return the sha."""
        self.git("add", "-A")
        if sign is None:
            self.git("commit", "-q", "-m", message)
        else:
            ssh = ("-c", "gpg.format=ssh", "-c", f"user.signingkey={sign}")
            self.git(*ssh, "commit", "-S", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")

    def push(self, *refspecs: str) -> subprocess.CompletedProcess[str]:
        return self.run("git", "push", "origin", *(refspecs or ("HEAD:refs/heads/main",)))

    def server_head(self, branch: str = "main") -> str:
        return self.git("rev-parse", "-q", "--verify", f"refs/heads/{branch}", cwd=self.server)

    def edit(self, rel: str, old: str, new: str) -> int:
        """Replace the first ``old`` in work file ``rel``; return its 1-based line number."""
        path = self.work / rel
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new, 1))
        return text[: text.index(old)].count("\n") + 1


def make_repos(tmp_path: Path, *hooks: str) -> Repos:
    env = git_env(tmp_path / "home")
    server, work = tmp_path / "server.git", tmp_path / "work"
    repos = Repos(server, work, env)
    repos.git("init", "-q", "--bare", "-b", "main", str(server), cwd=tmp_path)
    for hook in hooks:
        shutil.copy2(HOOKS / hook, server / "hooks" / hook)
    reconciler = shutil.which("reconciler")
    assert reconciler, "the reconciler console script is not on PATH"
    repos.config("reconciler.command", reconciler)  # hooks on a server rarely share our PATH
    repos.git("clone", "-q", str(server), str(work), cwd=tmp_path)
    shutil.copytree(TEMPLATE, work / "desired-state")
    return repos


@pytest.fixture
def repos(tmp_path: Path) -> Repos:
    """Server with pre-receive and post-receive, and a valid desired state pushed to main."""
    repos = make_repos(tmp_path, "pre-receive", "post-receive")
    repos.commit("initial desired state")
    pushed = repos.push()
    assert pushed.returncode == 0, pushed.stderr
    return repos


# -- pre-receive: validation ----------------------------------------------------------


def test_pre_receive_accepts_valid_and_rejects_invalid_desired_state(repos: Repos) -> None:
    good = repos.server_head()
    assert good == repos.git("rev-parse", "HEAD")

    line = repos.edit(CORE, GOOD_LINE, BAD_LINE)
    bad = repos.commit("add sparc")
    pushed = repos.push()
    assert pushed.returncode == 1
    assert f"remote: reconciler:   {CORE}:{line}: " in pushed.stderr
    assert "unknown arch 'sparc'" in pushed.stderr
    assert "[remote rejected]" in pushed.stderr
    assert repos.server_head() == good

    other = repos.push("HEAD:refs/heads/experiment")  # other branches are not checked
    assert other.returncode == 0, other.stderr
    assert repos.server_head("experiment") == bad

    deleted = repos.push(":refs/heads/main")
    assert deleted.returncode == 1
    assert "deleting the protected branch is not allowed" in deleted.stderr
    assert repos.server_head() == good


def test_pre_receive_rejects_a_missing_folder_and_honours_branch_and_path(repos: Repos) -> None:
    shutil.rmtree(repos.work / "desired-state")
    (repos.work / "README").write_text("no desired state\n")
    repos.commit("remove the desired state")
    pushed = repos.push()
    assert pushed.returncode == 1
    assert "desired-state/ is missing" in pushed.stderr

    # Protect another branch with another folder: main is now free, "live" is checked.
    repos.config("reconciler.branch", "live")
    repos.config("reconciler.path", "state/")
    assert repos.push().returncode == 0
    shutil.copytree(TEMPLATE, repos.work / "state")
    line = repos.edit("state/sigs/core.yaml", GOOD_LINE, BAD_LINE)
    repos.commit("state folder with sparc")
    pushed = repos.push("HEAD:refs/heads/live")
    assert pushed.returncode == 1
    assert f"state/sigs/core.yaml:{line}: " in pushed.stderr


def test_pre_receive_refuses_a_link_out_of_the_folder(repos: Repos) -> None:
    before = repos.server_head()
    (repos.work / "desired-state" / "sigs" / "evil.yaml").symlink_to("/etc/passwd")
    repos.commit("a link to a server file")
    pushed = repos.push()
    assert pushed.returncode == 1
    assert "cannot be exported safely: 'desired-state/sigs/evil.yaml' is a link" in pushed.stderr
    assert "root:" not in pushed.stderr
    assert repos.server_head() == before


def test_pre_receive_rejects_a_recursive_anchor_with_file_and_line(repos: Repos) -> None:
    before = repos.server_head()
    path = repos.work / CORE
    line = len(path.read_text().splitlines()) + 1
    with path.open("a") as f:
        f.write("x: &r {y: *r}\n")
    repos.commit("a recursive anchor")
    pushed = repos.push()
    assert pushed.returncode == 1
    assert f"remote: reconciler:   {CORE}:{line}: " in pushed.stderr
    assert "recursive" in pushed.stderr
    assert "Traceback" not in pushed.stderr and "RecursionError" not in pushed.stderr
    assert repos.server_head() == before


def test_pre_receive_names_ignored_files_and_accepts(repos: Repos) -> None:
    (repos.work / "desired-state" / "sigs" / "core.yaml.disabled").write_text("sig: core\n")
    sha = repos.commit("park a file")
    pushed = repos.push()
    assert pushed.returncode == 0, pushed.stderr
    assert (
        "remote: reconciler: warning: desired-state/sigs/core.yaml.disabled: "
        "ignored: not a <name>.yaml file"
    ) in pushed.stderr
    assert repos.server_head() == sha


# -- pre-receive: signatures ----------------------------------------------------------


def ssh_key(tmp_path: Path, name: str) -> tuple[Path, str]:
    key = tmp_path / f"{name}_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
        check=True,
        timeout=30,
    )
    return key, key.with_suffix(".pub").read_text().strip()


@pytest.fixture
def signers(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(trusted key, stranger key, allowed_signers file naming only the trusted one)."""
    trusted, trusted_pub = ssh_key(tmp_path, "alice")
    stranger, _ = ssh_key(tmp_path, "mallory")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f'alice@example.org namespaces="git" {trusted_pub}\n')
    return trusted, stranger, allowed


@needs_ssh
def test_verify_head_requires_a_trusted_ssh_signature(
    repos: Repos, signers: tuple[Path, Path, Path]
) -> None:
    trusted, stranger, allowed = signers
    repos.config("reconciler.verify", "head")
    before = repos.server_head()

    (repos.work / "desired-state" / "NOTES").write_text("1\n")
    unsigned = repos.commit("unsigned")
    pushed = repos.push()
    assert pushed.returncode == 1
    assert "reconciler.allowedSigners nor reconciler.gpgKeys is set" in pushed.stderr

    repos.config("reconciler.allowedSigners", allowed)
    pushed = repos.push()
    assert pushed.returncode == 1
    assert f"commit {unsigned[:12]} (unsigned): not signed" in pushed.stderr

    (repos.work / "desired-state" / "NOTES").write_text("2\n")
    repos.commit("by a stranger", sign=stranger)
    pushed = repos.push()
    assert pushed.returncode == 1
    assert "reconciler.allowedSigners does not list" in pushed.stderr
    assert repos.server_head() == before

    (repos.work / "desired-state" / "NOTES").write_text("3\n")
    head = repos.commit("signed head", sign=trusted)  # the unsigned ones below it are fine
    pushed = repos.push()
    assert pushed.returncode == 0, pushed.stderr
    assert repos.server_head() == head


@needs_ssh
def test_verify_strict_requires_every_new_commit_signed(
    repos: Repos, signers: tuple[Path, Path, Path]
) -> None:
    trusted, _, allowed = signers
    repos.config("reconciler.verify", "strict")
    repos.config("reconciler.allowedSigners", allowed)
    notes = repos.work / "desired-state" / "NOTES"
    notes.write_text("1\n")
    repos.commit("first", sign=trusted)
    notes.write_text("2\n")
    middle = repos.commit("middle")
    notes.write_text("3\n")
    repos.commit("last", sign=trusted)
    pushed = repos.push()
    assert pushed.returncode == 1
    problems = [ln.rstrip() for ln in pushed.stderr.splitlines() if "): " in ln]
    assert problems == [f"remote: reconciler:   commit {middle[:12]} (middle): not signed"]

    repos.git("reset", "-q", "--hard", f"{middle}~1")
    notes.write_text("2\n")
    repos.commit("middle, signed", sign=trusted)
    pushed = repos.push()
    assert pushed.returncode == 0, pushed.stderr


@pytest.fixture(scope="module")
def gpg_signers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[str, ...]]]:
    """Git options that sign with a trusted and with an unknown OpenPGP key, and the key file."""
    root = tmp_path_factory.mktemp("gpg")
    options: dict[str, tuple[str, ...]] = {}
    homes = []
    for name in ("trusted", "other"):
        home = root / name
        home.mkdir(mode=0o700)
        homes.append(home)
        gpg = ["gpg", "--homedir", str(home), "--batch"]
        uid = f"{name} <{name}@example.org>"
        gen = [*gpg, "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never"]
        subprocess.run(gen, check=True, capture_output=True, timeout=60)
        listing = subprocess.run(
            [*gpg, "--with-colons", "--list-secret-keys"],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        fpr = next(ln.split(":")[9] for ln in listing.splitlines() if ln.startswith("fpr"))
        armored = subprocess.run(
            [*gpg, "--armor", "--export", fpr], check=True, capture_output=True, timeout=30
        ).stdout
        (root / f"{name}.asc").write_bytes(armored)
        program = root / f"gpg-{name}"  # gpg with this key's home, whatever GNUPGHOME says
        program.write_text(f'#!/bin/sh\nexec gpg --homedir "{home}" "$@"\n')
        program.chmod(0o755)
        options[name] = ("-c", f"gpg.program={program}", "-c", f"user.signingkey={fpr}")
    options["keys"] = (str(root / "trusted.asc"),)
    yield options
    for home in homes:  # stop the agents that signing started
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)


@needs_gpg
def test_verify_head_with_openpgp_keys(
    repos: Repos, gpg_signers: dict[str, tuple[str, ...]]
) -> None:
    repos.config("reconciler.verify", "head")
    repos.config("reconciler.gpgKeys", gpg_signers["keys"][0])
    notes = repos.work / "desired-state" / "NOTES"
    notes.write_text("1\n")
    repos.git("add", "-A")
    repos.git(*gpg_signers["other"], "commit", "-S", "-q", "-m", "other key")
    pushed = repos.push()
    assert pushed.returncode == 1
    assert "(other key): signed by a key that is not trusted here" in pushed.stderr

    notes.write_text("2\n")
    repos.git("add", "-A")
    repos.git(*gpg_signers["trusted"], "commit", "-S", "-q", "-m", "trusted key")
    pushed = repos.push()
    assert pushed.returncode == 0, pushed.stderr


# -- post-receive ---------------------------------------------------------------------


def test_post_receive_touches_the_trigger_file(repos: Repos, tmp_path: Path) -> None:
    trigger = tmp_path / "state" / "trigger"
    trigger.parent.mkdir()
    trigger.write_text("")
    os.utime(trigger, (1_000_000, 1_000_000))
    repos.config("reconciler.triggerFile", trigger)

    (repos.work / "desired-state" / "NOTES").write_text("1\n")
    repos.commit("notes")
    assert repos.push("HEAD:refs/heads/other").returncode == 0
    assert trigger.stat().st_mtime == 1_000_000  # not the protected branch

    pushed = repos.push()
    assert pushed.returncode == 0, pushed.stderr
    assert trigger.stat().st_mtime > 1_000_000
    assert "woke the reconciler (trigger file touched)" in pushed.stderr


class Recorder(BaseHTTPRequestHandler):
    requests: list[tuple[str, str, str | None, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.requests.append((self.command, self.path, self.headers.get("Authorization"), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[tuple[str, str, str | None, bytes]]]]:
    handler = type("Handler", (Recorder,), {"requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/trigger", handler.requests
    server.shutdown()
    server.server_close()
    thread.join()


def test_post_receive_calls_the_webhook_with_the_secret(
    repos: Repos, tmp_path: Path, webhook: tuple[str, list[tuple[str, str, str | None, bytes]]]
) -> None:
    url, requests = webhook
    secret = tmp_path / "webhook.secret"
    secret.write_text("s3cret-token\n")
    repos.config("reconciler.webhook", url)
    repos.config("reconciler.webhookSecretFile", secret)

    (repos.work / "desired-state" / "NOTES").write_text("1\n")
    repos.commit("notes")
    pushed = repos.push()
    assert pushed.returncode == 0, pushed.stderr
    assert requests == [("POST", "/trigger", "Bearer s3cret-token", b'{"event":"push"}')]
    assert "s3cret" not in pushed.stderr


def test_post_receive_warns_when_the_webhook_is_down(repos: Repos) -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    repos.config("reconciler.webhook", f"http://127.0.0.1:{port}/trigger")

    (repos.work / "desired-state" / "NOTES").write_text("1\n")
    head = repos.commit("notes")
    pushed = repos.push()
    assert pushed.returncode == 0, pushed.stderr
    assert "remote: reconciler: warning: reconciler.webhook failed" in pushed.stderr
    assert repos.server_head() == head


# -- pre-commit -----------------------------------------------------------------------


def test_pre_commit_checks_the_index(tmp_path: Path) -> None:
    repos = make_repos(tmp_path)  # no server hooks: only the work clone's pre-commit
    shutil.copy2(HOOKS / "pre-commit", repos.work / ".git" / "hooks" / "pre-commit")
    repos.commit("valid desired state")

    line = repos.edit(CORE, GOOD_LINE, BAD_LINE)
    repos.git("add", "-A")
    refused = repos.run("git", "commit", "-q", "-m", "add sparc")
    assert refused.returncode == 1
    assert f"{CORE}:{line}: " in refused.stderr
    assert "unknown arch 'sparc'" in refused.stderr
    assert str(tmp_path) not in refused.stderr  # paths are relative to the repository

    repos.edit(CORE, BAD_LINE, GOOD_LINE)  # fixed in the work tree, but not staged
    assert repos.run("git", "commit", "-q", "-m", "add sparc").returncode == 1
    with (repos.work / CORE).open("a") as f:
        f.write("# a valid change\n")
    repos.git("add", "-A")
    (repos.work / CORE).write_text("broken: [\n")  # broken in the work tree, valid in the index
    repos.git("commit", "-q", "-m", "index is valid")

    # A commit that does not touch the folder passes even when HEAD's folder is invalid.
    repos.git("add", "-A")
    repos.git("commit", "-q", "--no-verify", "-m", "broken, bypassing the hook")
    (repos.work / "README").write_text("unrelated\n")
    repos.git("add", "README")
    repos.git("commit", "-q", "-m", "unrelated")
    assert repos.git("log", "-1", "--format=%s") == "unrelated"


def test_pre_commit_without_the_folder_and_with_reconciler_path(tmp_path: Path) -> None:
    repos = make_repos(tmp_path)
    shutil.copy2(HOOKS / "pre-commit", repos.work / ".git" / "hooks" / "pre-commit")
    shutil.rmtree(repos.work / "desired-state")
    (repos.work / "README").write_text("no desired state here\n")
    repos.commit("no folder")

    repos.git("config", "reconciler.path", "ops/state")
    shutil.copytree(TEMPLATE, repos.work / "ops" / "state")
    line = repos.edit("ops/state/sigs/core.yaml", GOOD_LINE, BAD_LINE)
    repos.git("add", "-A")
    refused = repos.run("git", "commit", "-q", "-m", "state with sparc")
    assert refused.returncode == 1
    assert f"ops/state/sigs/core.yaml:{line}: " in refused.stderr


def test_pre_commit_framework_manifest() -> None:
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "reconciler-validate"
    assert hook["language"] == "python"
    assert hook["entry"] == "reconciler validate"
    assert hook["pass_filenames"] is False
    assert hook["files"] == "^desired-state/"
    assert hook["args"] == ["desired-state"]


def test_hooks_are_executable_python() -> None:
    for name in ("pre-commit", "pre-receive", "post-receive"):
        path = HOOKS / name
        assert os.access(path, os.X_OK), name
        assert path.read_text().startswith("#!/usr/bin/env python3\n"), name
