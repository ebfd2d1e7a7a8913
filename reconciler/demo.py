"""``reconciler demo``: a self-contained run on the bundled sample packages.

It builds a sample upstream from the RPMs shipped in ``reconciler/samples``,
serves it on 127.0.0.1, writes a desired state and a host config, composes,
updates one upstream package, composes again (only that package is
downloaded) and tells where to look. Nothing is left running.
"""

from __future__ import annotations

import shutil
import tempfile
import textwrap
from pathlib import Path

import yaml

from . import sampleupstream as su
from .composing import ComposeRequest, ComposeResult, compose
from .hostconfig import load_host_config
from .specfile import load_spec

PROJECT_ID = "00000000-0000-4000-8000-000000000001"
REPOS = {"demo-common": ["x86_64", "aarch64"], "demo-extras": ["x86_64"]}


def _write_desired_state(path: Path) -> None:
    (path / "sigs").mkdir(parents=True, exist_ok=True)
    (path / "keys").mkdir(exist_ok=True)
    shutil.copy(su.SAMPLE_KEY, path / "keys" / su.SAMPLE_KEY.name)
    (path / "defaults.yaml").write_text(
        textwrap.dedent(
            """\
            upstream:
              base_url: https://build.invalid/v1/projects
              url_template: "{base_url}/{project_id}/repo/{repo}/{arch}"
            releases:
              "9": {arches: [x86_64, aarch64]}
            """
        )
    )
    sig = {
        "sig": "demo",
        "releases": {
            "9": {
                "project_id": PROJECT_ID,
                "gpg_keys": [su.SAMPLE_KEY.name],
                "repos": {name: {"arches": arches} for name, arches in REPOS.items()},
                "compose": {"hashed": True, "keep_versions": 1, "check_signatures": True},
                "staging": "latest",
                "production": None,
            }
        },
    }
    (path / "sigs" / "demo.yaml").write_text(yaml.safe_dump(sig, sort_keys=False))


def _write_host_config(path: Path, work: Path, base_url: str) -> None:
    config = {
        "roots": {
            "compose": str(work / "compose"),
            "staging": str(work / "repos-staging"),
            "production": str(work / "repos-production"),
        },
        "state_dir": str(work / "state"),
        "upstream_base_url": base_url,
    }
    path.write_text(yaml.safe_dump(config))


def _show(step: str, result: ComposeResult) -> None:
    print(f"\n== {step}")
    print(
        f"   {result.status.value} {result.compose_id}: {result.packages} packages, "
        f"{result.downloaded} downloaded ({result.downloaded_bytes} bytes), "
        f"{result.linked} hardlinked, {result.requests} HTTP requests, {result.seconds:.2f}s"
    )
    if result.error:
        print(f"   error: {result.error}")


def run_demo(directory: Path | None) -> int:
    """Run the demo in ``directory`` (a new temporary one when None). Returns the exit code."""
    work = Path(tempfile.mkdtemp(prefix="reconciler-demo-")) if directory is None else directory
    work.mkdir(parents=True, exist_ok=True)
    print(f"Demo directory: {work}")
    upstream_root = work / "upstream"
    if upstream_root.exists():
        shutil.rmtree(upstream_root)
    su.build_upstream(upstream_root, PROJECT_ID, REPOS, extras_for=["demo-common"])
    spec_dir = work / "desired-state"
    _write_desired_state(spec_dir)
    spec = load_spec(spec_dir)
    print(f"Desired state: {spec_dir} (SIG demo, release 9: {', '.join(REPOS)})")

    with su.UpstreamServer(upstream_root) as server:
        print(f"Sample build system serving {upstream_root} at {server.base_url}")
        config = work / "config.yaml"
        _write_host_config(config, work, server.base_url)
        host = load_host_config(config)
        request = ComposeRequest("demo", "9")

        first = compose(spec, spec_dir, host, request)
        _show("1. first compose: everything is downloaded and verified", first)
        if not first.ok:
            return 1

        update = su.sample_rpm("sig-hello-1.1-1.x86_64.rpm")
        su.add_packages(
            su.upstream_repo_dir(upstream_root, PROJECT_ID, "demo-common", "x86_64"), [update]
        )
        print(f"\n   upstream update: {update.name} published to demo-common/x86_64")
        second = compose(spec, spec_dir, host, request)
        _show("2. second compose: only the changed package is downloaded", second)
        if not second.ok:
            return 1

    latest = host.roots.compose / "9" / "latest-SIG-demo-9"
    repo = latest / "compose" / "9" / "demo" / "x86_64" / "demo-common"
    print(
        textwrap.dedent(f"""
        == Where to look
           composes:         {host.roots.compose / "9"}
           latest compose:   {latest} -> {second.compose_id}
           compose log:      {second.path / "logs" / "compose.log"}
           productmd:        {second.path / "compose" / "metadata" / "composeinfo.json"}
           a repo:           {repo}

        == Install from it with dnf
           dnf --installroot=/tmp/demo-root --setopt=reposdir=/dev/null --releasever=9 \\
               --repofrompath=demo,{repo.as_uri()} --repo=demo \\
               --setopt=demo.gpgkey={(repo / su.SAMPLE_KEY.name).as_uri()} install sig-hello
        """)
    )
    print("The sample server has stopped; nothing is left running.")
    return 0
