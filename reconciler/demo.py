"""``reconciler demo``: the whole GitOps flow on bundled sample packages, in under a minute.

In a fresh directory it builds a sample build system from the RPMs shipped in
``reconciler/samples``, serves it on 127.0.0.1, creates a desired-state git
repository, and walks through: compose -> staging -> a promotion commit ->
production -> an upstream update -> a second promotion -> rollback by
``git revert``, printing the plan, the status table and the history at each
step. It ends with the paths to look at and how to point dnf at them. The
sample server is stopped before it returns: nothing is left running.
"""

from __future__ import annotations

import shutil
import tempfile
import textwrap
from pathlib import Path

import git
import yaml

from . import testing as su
from .hostconfig import HostConfig
from .reconciling import open_state, run_pass
from .reporting import plan_text, print_history, print_status
from .specfile import load_host_config
from .vocabulary import Stage

#: Where the demo publishes under the staging and production roots (the real default).
CATEGORY = "mirror/pub/sig"

PROJECT_ID = "00000000-0000-4000-8000-000000000001"
REPOS = {"demo-common": ["x86_64", "aarch64"], "demo-extras": ["x86_64"]}
PEOPLE = {
    "alice": git.Actor("Alice Admin", "alice@example.org"),
    "bob": git.Actor("Bob Builder", "bob@example.org"),
    "carol": git.Actor("Carol Checker", "carol@example.org"),
    "dave": git.Actor("Dave Ops", "dave@example.org"),
}


class DemoRepo:
    """The desired-state repository: a bare "server" and a clone people commit in."""

    def __init__(self, root: Path) -> None:
        self.server = git.Repo.init(root / "desired-state.git", bare=True, initial_branch="main")
        self.work = git.Repo.init(root / "work", initial_branch="main")
        self.work.create_remote("origin", str(self.server.git_dir))
        self.folder = Path(self.work.working_dir) / "desired-state"

    def write_release(self, **changes: object) -> None:
        path = self.folder / "sigs" / "demo.yaml"
        doc = yaml.safe_load(path.read_text())
        doc["releases"]["9"].update(changes)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))

    def commit(self, message: str, who: str) -> str:
        self.work.git.add("--all")
        commit = self.work.index.commit(message, author=PEOPLE[who], committer=PEOPLE[who])
        self.work.git.push("origin", "HEAD:main")
        return commit.hexsha

    def revert(self, sha: str, who: str) -> str:
        self.work.git.revert("--no-commit", sha)
        return self.commit(f"Revert {sha[:12]}: roll production back", who)


def _write_desired_state(folder: Path) -> None:
    (folder / "sigs").mkdir(parents=True)
    (folder / "keys").mkdir()
    shutil.copy(su.SAMPLE_KEY, folder / "keys" / su.SAMPLE_KEY.name)
    defaults = {
        "upstream": {"base_url": "https://build.invalid/v1/projects"},
        "publish": {"category": CATEGORY, "delete_grace": "24h"},
        "compose": {"keep_composes": 5},
        "promotion": {"require_staged": True, "min_soak": "0h"},
        "releases": {"9": {"arches": ["x86_64", "aarch64"]}},
    }
    sig = {
        "sig": "demo",
        "releases": {
            "9": {
                "project_id": PROJECT_ID,
                "gpg_keys": [su.SAMPLE_KEY.name],
                "repos": {name: {"arches": arches} for name, arches in REPOS.items()},
                "compose": {
                    "hashed": True,
                    "keep_versions": 1,
                    "check_signatures": shutil.which("rpmkeys") is not None,
                },
                "staging": "latest",
                "production": None,
            }
        },
    }
    (folder / "defaults.yaml").write_text(yaml.safe_dump(defaults, sort_keys=False))
    (folder / "sigs" / "demo.yaml").write_text(yaml.safe_dump(sig, sort_keys=False))


def _host_config(work: Path, repo: DemoRepo, base_url: str) -> HostConfig:
    config = {
        "git": {"url": str(repo.server.git_dir), "branch": "main", "path": "desired-state"},
        "roots": {
            "compose": str(work / "compose"),
            "staging": str(work / "repos-staging"),
            "production": str(work / "repos-production"),
        },
        "state_dir": str(work / "state"),
        "upstream_base_url": base_url,
        "metrics": {"listen": ""},
    }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_host_config(path)


def _step(title: str, host: HostConfig) -> str | None:
    """Plan and apply once; print the plan, what was done and the status table."""
    print(f"\n{'=' * 78}\n{title}\n{'=' * 78}")
    with open_state(host) as state:
        # first what a plan shows (each publish's files), then the apply
        print(plan_text(run_pass(host, state, apply=False).plan))
        result = run_pass(host, state, apply=True)
        for r in result.applied.results if result.applied else ():
            print(f"  -> {r.result}: {r.action.describe()}" + (f" ({r.error})" if r.error else ""))
        print()
        print_status(state.targets.statuses(), {"revision": result.source.revision, "problems": []},
                     "table")  # fmt: skip
        target = state.targets.get("demo", "9", Stage.STAGING)
        return target.compose_id if target else None


def run_demo(directory: Path | None) -> int:
    """Run the demo in ``directory`` (a new temporary one when None). Returns the exit code."""
    work = Path(tempfile.mkdtemp(prefix="reconciler-demo-")) if directory is None else directory
    if directory is not None and directory.exists() and any(directory.iterdir()):
        print(f"{directory} is not empty; give --dir a new or empty directory")
        return 1
    work.mkdir(parents=True, exist_ok=True)
    print(f"Demo directory: {work}")
    upstream_root = work / "upstream"
    su.build_upstream(upstream_root, PROJECT_ID, REPOS, extras_for=["demo-common"])
    repo = DemoRepo(work / "git")
    _write_desired_state(repo.folder)
    if shutil.which("rpmkeys") is None:
        print("rpmkeys is not installed (apt-get install rpm): RPM signature checks are off "
              "in this demo")  # fmt: skip
    repo.commit("Add SIG demo for release 9", "alice")

    with su.UpstreamServer(upstream_root) as server:
        print(f"Sample build system: {upstream_root}, served at {server.base_url}")
        host = _host_config(work, repo, server.base_url)

        first = _step("1. Alice adds the SIG: the reconciler composes it and stages it", host)
        repo.write_release(production=first)
        repo.commit(f"Promote {first} to production", "bob")
        _step(f"2. Bob merges a promotion of {first}: it is published to production", host)

        update = su.sample_rpm("sig-hello-1.1-1.x86_64.rpm")
        x86 = su.upstream_repo_dir(upstream_root, PROJECT_ID, "demo-common", "x86_64")
        su.add_packages(x86, [update])
        second = _step(f"3. The build system publishes {update.name}: a new compose, staged "
                       "(only that package is downloaded)", host)  # fmt: skip
        repo.write_release(production=second)
        pin = repo.commit(f"Promote {second} to production", "carol")
        _step(f"4. Carol promotes {second}", host)
        repo.revert(pin, "dave")
        _step(f"5. Dave reverts Carol's commit: production rolls back to {first}", host)

    with open_state(host) as state:
        print(f"\n{'=' * 78}\nHistory: what was applied, from which commit, by whom\n{'=' * 78}")
        print_history(state.history.entries(), "table")
    _epilogue(work, host)
    return 0


def _epilogue(work: Path, host: HostConfig) -> None:
    production = host.published(CATEGORY, Stage.PRODUCTION, "demo", "9")
    prod = production.path
    repo = prod / "x86_64" / "demo-common"
    composes = host.compose_tree("demo", "9").release_dir
    print(
        textwrap.dedent(f"""
        Where to look:
          desired state (git):   {work / "git" / "desired-state.git"}
          composes:              {composes}  (latest-SIG-demo-9 -> newest)
          staging:               {host.published(CATEGORY, Stage.STAGING, "demo", "9").path}
          production:            {prod}
          mirror file lists:     {production.category_dir}/fullfiletimelist-sig
          state database:        {host.layout.database}

        Try:
          reconciler status  --config {work / "config.yaml"}
          reconciler history --config {work / "config.yaml"}
          reconciler verify {host.roots.production}

        Install from production with dnf:
          dnf --installroot=/tmp/demo-root --setopt=reposdir=/dev/null --releasever=9 \\
              --repofrompath=demo,{repo.as_uri()} --repo=demo \\
              --setopt=demo.gpgkey={(repo / su.SAMPLE_KEY.name).as_uri()} install sig-hello

        The sample build system has stopped; nothing is left running.""").rstrip()
    )
