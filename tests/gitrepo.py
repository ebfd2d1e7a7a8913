"""A real desired-state git repository for tests: a bare "server" and a working clone."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml


class DesiredRepo:
    """``server`` is the bare repository the reconciler fetches; ``work`` is a clone we commit in."""

    def __init__(self, root: Path, template: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.server = root / "server.git"
        self.work = root / "work"
        self._git(root, "init", "-q", "--bare", "-b", "main", str(self.server))
        self._git(root, "clone", "-q", str(self.server), str(self.work))
        shutil.copytree(template, self.work / "desired-state")

    def _git(self, cwd: Path, *args: str, author: str = "Alice Admin") -> str:
        email = author.split(maxsplit=1)[0].lower() + "@example.org"
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": author,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": author,
            "GIT_COMMITTER_EMAIL": email,
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": str(cwd),
        }
        proc = subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
        )
        return proc.stdout.strip()

    def git(self, *args: str, author: str = "Alice Admin") -> str:
        return self._git(self.work, *args, author=author)

    @property
    def sig_file(self) -> Path:
        return self.work / "desired-state" / "sigs" / "core.yaml"

    def release(self) -> dict[str, Any]:
        doc: dict[str, Any] = yaml.safe_load(self.sig_file.read_text())
        return doc["releases"]["9"]  # type: ignore[no-any-return]

    def set_release(self, **changes: Any) -> None:
        doc = yaml.safe_load(self.sig_file.read_text())
        doc["releases"]["9"].update(changes)
        self.sig_file.write_text(yaml.safe_dump(doc, sort_keys=False))

    def commit(
        self, message: str, author: str = "Alice Admin", sign_key: Path | None = None
    ) -> str:
        """Commit everything and push; ``sign_key`` (an SSH private key) signs the commit."""
        self.git("add", "-A", author=author)
        signing = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={sign_key}"] if sign_key else []
        self.git(
            *signing, "commit", *(["-S"] if sign_key else []), "-q", "-m", message, author=author
        )
        self.git("push", "-q", "origin", "HEAD:main", author=author)
        return self.git("rev-parse", "HEAD")

    def force_push_rewrite(self, author: str) -> str:
        """Rewrite the branch: drop the last commit, commit something else, force-push."""
        self.git("reset", "-q", "--hard", "HEAD~1", author=author)
        (self.work / "desired-state" / "README.txt").write_text("rewritten\n")
        self.git("add", "-A", author=author)
        self.git("commit", "-q", "-m", "rewrite", author=author)
        self.git("push", "-q", "--force", "origin", "HEAD:main", author=author)
        return self.git("rev-parse", "HEAD")

    def revert(self, sha: str, author: str) -> str:
        self.git("revert", "--no-edit", sha, author=author)
        self.git("push", "-q", "origin", "HEAD:main", author=author)
        return self.git("rev-parse", "HEAD")
