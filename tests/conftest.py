"""Shared fixtures: a real upstream over HTTP, a desired-state folder, a host config."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler import testing as su
from reconciler.cli import main
from reconciler.hostconfig import HostConfig
from reconciler.specfile import load_host_config, load_spec

PROJECT_ID = "47e0b4a8-84ba-43a9-bb94-eb99dde4cf14"


def pytest_configure(config: pytest.Config) -> None:
    """The CLI's record cache goes to a folder of this session, not to ~/.cache."""
    import tempfile

    os.environ["RECONCILER_CACHE_DIR"] = tempfile.mkdtemp(prefix="reconciler-test-cache-")
    # The tests count on a published file being the compose's inode (hardlinks), which
    # a temporary directory on XFS or btrfs would not give (clones): tests/test_reflink.py
    # turns clones back on where it shows them.
    os.environ["RECONCILER_REFLINKS"] = "off"
    # every server of the tests is on 127.0.0.1: a proxy of the machine is not in the way
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        os.environ.pop(name, None)
        os.environ.pop(name.upper(), None)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ.pop("RECONCILER_CACHE_DIR", ""), ignore_errors=True)


REPOS: dict[str, list[str]] = {"core-common": ["x86_64", "aarch64"], "core-infra": ["x86_64"]}


@dataclass
class Upstream:
    """A sample build system: its tree on disk and the HTTP server in front of it."""

    root: Path
    server: su.UpstreamServer

    def repo_dir(self, repo: str, arch: str) -> Path:
        return su.upstream_repo_dir(self.root, PROJECT_ID, repo, arch)

    def path(self, repo: str, arch: str, rel: str = "") -> str:
        """The URL path the server sees for a file of an upstream repo."""
        tail = f"/{rel}" if rel else ""
        return f"/{PROJECT_ID}/repo/{repo}/{arch}{tail}"

    def rpm_requests(self) -> list[str]:
        return [p for p in self.server.requests if p.endswith(".rpm")]


@pytest.fixture
def warnings_log(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> pytest.LogCaptureFixture:
    """caplog with the reconciler's warnings, even after an in-process CLI run turned
    the ``reconciler`` logger's propagation off (``logs.setup_logging``)."""
    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(logging.getLogger("reconciler"), "propagate", True)
    return caplog


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    root = tmp_path / "upstream"
    su.build_upstream(root, PROJECT_ID, REPOS, extras_for=["core-common"])
    with su.UpstreamServer(root) as server:
        yield Upstream(root, server)


def sample_release(**overrides: Any) -> dict[str, Any]:
    """A SIG release of the sample upstream (its repos, the sample key, staging
    following latest), with ``overrides``."""
    rel: dict[str, Any] = {
        "project_id": PROJECT_ID,
        "gpg_keys": [su.SAMPLE_KEY.name],
        "repos": {name: {"arches": arches} for name, arches in REPOS.items()},
        "compose": {"hashed": True, "keep_versions": 1, "check_signatures": True},
        "staging": "latest",
        "production": None,
    }
    rel.update(overrides)
    return rel


@dataclass
class DesiredState:
    """A desired-state folder the test can rewrite."""

    path: Path
    release: dict[str, Any] = field(default_factory=dict)

    def write(self, **overrides: Any) -> None:
        rel = sample_release(**overrides)
        self.release = rel
        doc = {"sig": "core", "releases": {"9": rel}}
        (self.path / "sigs" / "core.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))

    def spec(self) -> Any:
        return load_spec(self.path)


DEFAULTS_YAML = textwrap.dedent(
    """\
    upstream:
      base_url: https://build.invalid/v1/projects
      url_template: "{base_url}/{project_id}/repo/{repo}/{arch}"
    publish: {category: mirror/pub/sig, delete_grace: 24h}
    compose: {keep_composes: 5}
    promotion: {require_staged: true, min_soak: 0h}
    releases:
      "9": {arches: [x86_64, aarch64, ppc64le, s390x]}
    """
)


def make_desired_state(
    path: Path, defaults: str = DEFAULTS_YAML, write: bool = True
) -> DesiredState:
    """A desired-state folder: ``defaults.yaml``, the sample key, and (``write``) SIG core."""
    (path / "sigs").mkdir(parents=True)
    (path / "keys").mkdir()
    shutil.copy(su.SAMPLE_KEY, path / "keys" / su.SAMPLE_KEY.name)
    (path / "defaults.yaml").write_text(defaults)
    ds = DesiredState(path)
    if write:
        ds.write()
    return ds


@pytest.fixture
def desired_state(tmp_path: Path) -> DesiredState:
    return make_desired_state(tmp_path / "desired-state")


@dataclass
class Host:
    config_path: Path
    root: Path

    @property
    def config(self) -> HostConfig:
        return load_host_config(self.config_path)

    @property
    def compose_root(self) -> Path:
        return self.root / "compose"


def write_host_config(root: Path, base_url: str, **extra: Any) -> Path:
    conf = {
        "roots": {
            "compose": str(root / "compose"),
            "staging": str(root / "staging"),
            "production": str(root / "production"),
        },
        "state_dir": str(root / "state"),
        "upstream_base_url": base_url,
        "download": {"workers": 4, "retries": 2, "backoff": 0.01, "timeout": 10},
        "metrics": {"listen": "127.0.0.1:0"},
        **extra,
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def git_host(
    tmp_path: Path,
    desired_state: DesiredState,
    upstream: Upstream,
    message: str = "Add SIG core",
    author: str = "Alice Admin",
    **extra: Any,
) -> tuple[Path, Any]:
    """A desired-state git repository (SIG core staged from ``latest``, one commit) and a
    host config whose source it is: ``(config path, DesiredRepo)``."""
    from .gitrepo import DesiredRepo

    desired_state.write(production=None, staging="latest")
    repo = DesiredRepo(tmp_path / "git", desired_state.path)
    repo.commit(message, author=author)
    root = tmp_path / "host"
    root.mkdir()
    git = {"url": str(repo.server), "branch": "main", "path": "desired-state"}
    return write_host_config(root, upstream.server.base_url, git=git, **extra), repo


@pytest.fixture
def host(tmp_path: Path, upstream: Upstream) -> Host:
    root = tmp_path / "host"
    root.mkdir()
    return Host(write_host_config(root, upstream.server.base_url), root)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    """Run the real CLI entry point in-process: ``cli("validate", dir)``."""

    def run(*args: str | os.PathLike[str]) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and link under ``root`` with its content digest (to prove nothing changed)."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            st = path.stat()
            out[rel] = f"{hashlib.sha256(path.read_bytes()).hexdigest()} {st.st_mtime_ns}"
    return out


def reconciler_process(*args: str | os.PathLike[str], stdout: Any = subprocess.DEVNULL,
                       stderr: Any = subprocess.PIPE) -> subprocess.Popen[str]:  # fmt: skip
    """The real CLI in a child process (for locks, signals and crashes)."""
    return subprocess.Popen([sys.executable, "-m", "reconciler.cli", *map(str, args)],
                            stdout=stdout, stderr=stderr, text=True)  # fmt: skip


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen[str], what: str,
               timeout: float = 30) -> None:  # fmt: skip
    """Poll ``condition`` while ``proc`` runs; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the process ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """One throwaway PostgreSQL cluster for the session (tests/pgcluster.py); each test
    that needs a database makes its own with ``pg_cluster.new_database()``."""
    from .pgcluster import PgCluster

    cluster = PgCluster.create()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def pg_state(pg_cluster: Any) -> dict[str, object]:
    """The host config's ``state`` section for a fresh, empty PostgreSQL database."""
    return dict(pg_cluster.state_config(pg_cluster.new_database()))
