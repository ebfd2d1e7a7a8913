"""A world ready for a promotion that adds, updates and drops packages.

Compose A (sig-hello 1.0, sig-tools) is staged and in production; compose B
(sig-hello 1.1, sig-data added, sig-tools dropped) is staged; the desired state
pins production to A, and ``pin(B)`` makes the next apply promote B.
"""

from __future__ import annotations

import json
import os
import subprocess
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


def build_world(
    tmp: Path, grace: str = "24h", later_second: bool = False, **host_extra: Any
) -> Iterator[World]:
    """``later_second``: compose B in a later second than A, as real composes are (a mirror
    client's rsync takes a file of the same size and whole-second mtime as unchanged)."""
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
        if later_second:
            import time

            time.sleep(1.0 - time.time() % 1.0 + 0.01)
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


#: What the old scripts' trees hold besides the repos (relpaths in the SIG directory).
IMAGE = "images/rpi/Rocky-9-rpi.raw.xz"  # declared unmanaged (publish.unmanaged: [images])
OLD_KEY = "x86_64/core-common/RPM-GPG-KEY-Rocky-SIG-Core"  # a key at a repo's top
STRAYS = ("README.txt", "x86_64/core-common/notes.txt")  # a human's files
#: The owner the old scripts' rsync gave the trees (not the reconciler's).
OTHER_ID = 4321


def build_adopted_world(tmp: Path, **publish: Any) -> Iterator[World]:
    """Compose A, then B, staged; production is a tree the old scripts made, never
    published by the reconciler: B's repos rsync'd (``-rlptDSH``), then A's over them
    (A's old packages and metadata, A's ``repomd.xml``), a key at a repo's top, an
    image, stray files, everything owned by another uid. ``world.pin(world.b)`` then
    makes the next apply publish B over it; superseded files go at once (grace 0)."""
    root = tmp / "world"
    root.mkdir(parents=True, exist_ok=True)
    up_root = root / "upstream"
    su.build_upstream(up_root, PROJECT_ID, REPOS, include=_initial)
    defaults = {
        "upstream": {"base_url": "https://build.invalid/v1/projects"},
        "publish": {"category": CATEGORY, "delete_grace": "0s", "unmanaged": ["images"],
                    **publish},
        "compose": {"keep_composes": 5},
        "promotion": {"require_staged": True, "min_soak": "0h"},
        "releases": {"9": {"arches": ["x86_64", "aarch64"]}},
    }  # fmt: skip
    ds = make_desired_state(root / "desired-state", yaml.safe_dump(defaults), write=False)
    with su.UpstreamServer(up_root) as server:
        config = write_host_config(root, server.base_url, drift_interval=0)
        world = World(root, config, ds, up_root, server)
        ds.write(production=None)
        assert world.run("apply") == 0
        world.a = world.staged()
        world.update_upstream()
        assert world.run("apply") == 0
        world.b = world.staged()
        old = world.production / SIG_REL
        old.mkdir(parents=True)
        for cid, how in ((world.b, "-rlptDSH"), (world.a, "-rlptDSHI")):  # -I: A's wins
            rsync = ["rsync", how, f"{world.compose_sig_dir(cid)}/", f"{old}/"]
            subprocess.run(rsync, check=True)
        for rel in (IMAGE, OLD_KEY, *STRAYS):
            (old / rel).parent.mkdir(parents=True, exist_ok=True)
            (old / rel).write_bytes(f"not the reconciler's: {rel}\n".encode())
        for path in (old, *old.rglob("*")):
            os.lchown(path, OTHER_ID, OTHER_ID)
        yield world


#: What :func:`snapshot` keeps of a file: inode, size, mtime, owner, group, sha256.
Stat = tuple[int, int, int, int, int, str]


def snapshot(top: Path) -> dict[str, Stat]:
    """Every regular file under ``top`` (relpath -> :data:`Stat`): to prove which changed."""
    import hashlib

    out = {}
    for path in sorted(top.rglob("*")):
        st = path.lstat()
        if path.is_file() and not path.is_symlink():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[str(path.relative_to(top))] = (
                st.st_ino,
                st.st_size,
                st.st_mtime_ns,
                st.st_uid,
                st.st_gid,
                digest,
            )
    return out
