"""A world ready for a promotion that adds, updates and drops packages.

Compose A (sig-hello 1.0, sig-tools) is staged and in production; compose B
(sig-hello 1.1, sig-data added, sig-tools dropped) is staged; the desired state
pins production to A, and ``pin(B)`` makes the next apply promote B.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reconciler import testing as su
from reconciler.cli import main
from reconciler.vocabulary import Stage

from .conftest import PROJECT_ID, REPOS, DesiredState, make_desired_state, write_host_config

CATEGORY = "mirror/pub/sig"
SIG_REL = f"{CATEGORY}/9/core"


def _initial(repo: str, path: Path) -> bool:
    name = path.name
    return not name.startswith(("sig-data", "sig-hello-1.1", "sig-hello-debuginfo-1.1"))


@dataclass
class World:
    root: Path
    config: Path
    ds: DesiredState
    upstream_root: Path
    server: su.UpstreamServer
    a: str = ""
    b: str = ""

    def run(self, *args: str | Path) -> int:
        return main(
            [str(x) for x in (*args, "--config", self.config, "--desired-state", self.ds.path)]
        )

    def pin(self, compose_id: str | None) -> None:
        self.ds.write(production=compose_id)

    @property
    def production(self) -> Path:
        return self.root / "production"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    def compose_sig_dir(self, cid: str) -> Path:
        return self.root / "compose" / "9" / cid / "compose" / "9" / "core"

    def staged(self) -> str:
        from reconciler.state import StateDB

        with StateDB.open(self.root / "state") as state:
            t = state.targets.get("core", "9", Stage.STAGING)
            return t.compose_id if t else ""

    def update_upstream(self) -> None:
        """sig-hello 1.0 -> 1.1, sig-data added, sig-tools dropped (binary, debug and source)."""
        for repo, arches in REPOS.items():
            changes: dict[str, list[str]] = {
                "src": ["sig-hello-1.1-1.src.rpm", "sig-data-1.0-1.src.rpm"]
            }
            for arch in arches:
                changes[arch] = ["sig-data-1.0-1.noarch.rpm", f"sig-hello-1.1-1.{arch}.rpm"]
                changes[f"{arch}-debug"] = [f"sig-hello-debuginfo-1.1-1.{arch}.rpm"]
            for arch_dir, names in changes.items():
                d = su.upstream_repo_dir(self.upstream_root, PROJECT_ID, repo, arch_dir)
                su.remove_packages(d, [p.name for p in (d / "Packages").glob("sig-tools-*")])
                su.add_packages(d, [su.sample_rpm(n) for n in names])


def build_world(tmp: Path, grace: str = "24h", **host_extra: Any) -> Iterator[World]:
    root = tmp / "world"
    root.mkdir(parents=True, exist_ok=True)
    up_root = root / "upstream"
    su.build_upstream(up_root, PROJECT_ID, REPOS, include=_initial)
    defaults = {
        "upstream": {"base_url": "https://build.invalid/v1/projects"},
        "publish": {"category": CATEGORY, "delete_grace": grace},
        "compose": {"keep_composes": 5},
        "promotion": {"require_staged": True, "min_soak": "0h"},
        "releases": {"9": {"arches": ["x86_64", "aarch64"]}},
    }
    ds = make_desired_state(root / "desired-state", yaml.safe_dump(defaults), write=False)
    with su.UpstreamServer(up_root) as server:
        config = write_host_config(root, server.base_url, drift_interval=0, **host_extra)
        world = World(root, config, ds, up_root, server)
        ds.write(production=None)
        assert world.run("apply") == 0
        world.a = world.staged()
        world.pin(world.a)
        assert world.run("apply") == 0
        world.update_upstream()
        assert world.run("apply") == 0
        world.b = world.staged()
        assert world.b != world.a
        yield world


def tree_listing(root: Path) -> dict[str, tuple[int, str]]:
    """relpath -> (size, sha256) of every regular file (the content view of a tree)."""
    import hashlib

    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(root))] = (
                path.stat().st_size,
                hashlib.sha256(path.read_bytes()).hexdigest(),
            )
    return out


def history(world: World) -> list[dict[str, Any]]:
    from reconciler.reporting import history_rows
    from reconciler.state import StateDB

    with StateDB.open(world.root / "state") as state:
        return json.loads(json.dumps(history_rows(state.history.entries())))  # type: ignore[no-any-return]
