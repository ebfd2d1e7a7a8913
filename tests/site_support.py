"""A desired state in a real git repository and the host that follows it (the end-of-life
and vault tests): the SIG documents are kept here, written into the work tree and
committed; the host is driven through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from .conftest import Upstream, make_desired_state, write_host_config
from .gitrepo import DesiredRepo


class GitSite:
    """``docs`` (``{sig: doc}``) with ``defaults`` in a git desired state, committed as
    ``message``; the host under ``tmp/host`` follows its ``main`` (``drift_interval: 1``)."""

    def __init__(
        self,
        tmp: Path,
        upstream: Upstream,
        cli: Any,
        defaults: dict[str, Any],
        docs: dict[str, dict[str, Any]],
        message: str,
    ) -> None:
        ds = make_desired_state(tmp / "desired-state", yaml.safe_dump(defaults), write=False)
        self.docs = docs
        self.write(ds.path / "sigs")
        self.repo = DesiredRepo(tmp / "git", ds.path)
        self.repo.commit(message)
        self.root = tmp / "host"
        self.root.mkdir()
        git = {"url": str(self.repo.server), "branch": "main", "path": "desired-state"}
        self.config = write_host_config(
            self.root, upstream.server.base_url, git=git, drift_interval=1
        )
        self.cli = cli

    @property
    def work_sigs(self) -> Path:
        return self.repo.work / "desired-state" / "sigs"

    def write(self, sigs: Path | None = None) -> None:
        """Each SIG document into ``sigs`` (the work tree's), not committed."""
        for name, doc in self.docs.items():
            path = (sigs or self.work_sigs) / f"{name}.yaml"
            path.write_text(yaml.safe_dump(doc, sort_keys=False))

    def commit(self, message: str) -> str:
        """Write the SIG documents into the work tree and commit on the current branch."""
        self.write()
        return self.repo.commit(message)

    def change(self, message: str, **releases: dict[str, Any]) -> str:
        """Change some releases (``core_9={...}``) and commit on the current branch."""
        for key, changes in releases.items():
            sig, release = key.split("_")
            self.docs[sig]["releases"][release].update(changes)
        return self.commit(message)

    def run(self, *args: str | Path) -> Any:
        return self.cli(*args, "--config", self.config)

    def apply(self, code: int = 0) -> Any:
        result = self.run("apply")
        assert result.code == code, result.out + result.err
        return result

    def status(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        rows = json.loads(self.run("status", "--format", "json").out)
        return {(r["sig"], r["release"], r["stage"]): r for r in rows}


def files(top: Path) -> set[str]:
    """Every file under ``top``, relative to it."""
    return {str(p.relative_to(top)) for p in top.rglob("*") if p.is_file()}


def mirror_reader(tree: Path, out: Path, stop: Path, *extra: str) -> subprocess.Popen[str]:
    """tests/mirror_reader.py reading ``tree`` into ``out`` until ``stop`` exists."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.mirror_reader", str(tree), str(out), str(stop), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).parent.parent,
    )  # fmt: skip


def slowed_apply(config: Path, syscalls: str, delay_us: int, *args: str) -> None:
    """``reconciler apply`` under strace, each of ``syscalls`` delayed by ``delay_us`` (so
    that a reader overlaps the moments between them); it must succeed."""
    slow = ["strace", "-qq", "-o", "/dev/null", "-e", "trace=none",
            "-e", f"inject={syscalls}:delay_exit={delay_us}"]  # fmt: skip
    proc = subprocess.run(
        [*slow, sys.executable, "-m", "reconciler.cli", "apply", "--config", str(config), *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
