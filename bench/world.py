"""One bench world: a host (config, trees), a desired state, and its own upstream (a
hard-linked copy of the generated data, so that the 1% change stays in this world)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import generate as gen
from procs import RECONCILER, Run, run
from servers import Upstream, start_upstream

SIG, REL = "bench", "9"
CATEGORY = "mirror/pub/sig"


def write_config(
    root: Path,
    base_url: str,
    *,
    compose: Path,
    staging: Path,
    production: Path,
    state: Path | None = None,
    name: str = "config.yaml",
    extra: dict[str, Any] | None = None,
) -> Path:
    conf = {
        "roots": {"compose": str(compose), "staging": str(staging), "production": str(production)},
        "state_dir": str(state or root / "state"),
        "upstream_base_url": base_url,
        **(extra or {}),
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    path.write_text(yaml.safe_dump(conf))
    return path


def defaults_doc(arches: dict[str, list[str]]) -> dict[str, Any]:
    """``defaults.yaml`` of a bench desired state; ``arches``: each release's arches."""
    return {
        "upstream": {
            "base_url": "https://build.invalid/v1/projects",
            "url_template": "{base_url}/{project_id}/repo/{repo}/{arch}",
        },
        "publish": {"category": CATEGORY, "delete_grace": "24h"},
        "compose": {"keep_composes": 5},
        "promotion": {"require_staged": True, "min_soak": "0h"},
        "releases": {rel: {"arches": a} for rel, a in arches.items()},
    }


def release_doc(
    project_id: str,
    repos: dict[str, list[str]],
    keep_versions: int,
    staging: str | None,
    production: str | None,
) -> dict[str, Any]:
    """One SIG release of a bench desired state: every repo with debug and source, hashed,
    composed when the upstream changes, signatures not checked (filler, not RPMs)."""
    return {
        "project_id": project_id,
        "gpg_keys": [],
        "repos": {r: {"arches": a} for r, a in repos.items()},
        "compose": {
            "hashed": True,
            "keep_versions": keep_versions,
            "debug": True,
            "source": True,
            "trigger": "upstream",
            "check_signatures": False,
        },
        "staging": staging,
        "production": production,
    }


def write_documents(
    path: Path, defaults: dict[str, Any], sigs: dict[str, dict[str, dict[str, Any]]]
) -> None:
    """A desired-state folder: ``defaults`` and, per SIG, its releases' documents."""
    (path / "sigs").mkdir(parents=True, exist_ok=True)
    (path / "keys").mkdir(exist_ok=True)
    (path / "defaults.yaml").write_text(yaml.safe_dump(defaults, sort_keys=False))
    for sig, releases in sigs.items():
        doc = {"sig": sig, "releases": releases}
        (path / "sigs" / f"{sig}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def write_desired_state(
    path: Path,
    repos: dict[str, list[str]],
    keep_versions: int,
    staging: str | None,
    production: str | None,
) -> None:
    arches = sorted({a for v in repos.values() for a in v})
    rel = release_doc(gen.PROJECT_ID, repos, keep_versions, staging, production)
    write_documents(path, defaults_doc({REL: arches}), {SIG: {REL: rel}})


@dataclass
class Env:
    """What one N's runs share."""

    n: int
    scale: float
    base: Path
    pristine: Path  # generated data (upstream/ + manifest.json), never modified
    repos: dict[str, list[str]]
    keep_versions: int
    tools: dict[str, str | None]
    tmpfs: Path | None
    tmpfs_note: str
    fraction: float
    seed: int
    profiler: str = "cprofile"
    #: the upstream's server: "nginx" (its own process) or "python" (in the bench)
    upstream: str = "nginx"
    #: measure passes inside a running ``reconciler run`` too
    daemon: bool = True
    #: run the reposync baselines (slow at large N)
    reposync: bool = True
    #: keep each world's trees (``--keep``)
    keep: bool = False


class World:
    """One run: a copy (hardlinks) of the upstream, a server, a host, a desired state.

    ``where``: the directory (a file system of ``--fs``) that holds the world's trees;
    the upstream copy stays beside the generated data (hard links do not cross file
    systems)."""

    def __init__(self, env: Env, name: str, where: Path | None = None) -> None:
        self.env = env
        self.dir = (where or env.base) / name
        self.dir.mkdir(parents=True)
        self.data = self.dir / "data" if where is None else env.base / f"{name}-data"
        subprocess.run(["cp", "-al", str(env.pristine), str(self.data)], check=True)
        self.server: Upstream = start_upstream(
            env.upstream, self.data / "upstream", env.base / f"{name}-server"
        )
        self.ds = self.dir / "desired-state"
        self.host = self.dir / "host"
        self.compose_root = self.host / "compose"
        self.staging = self.host / "staging"
        self.production = self.host / "production"
        self.config = write_config(
            self.host,
            self.server.base_url,
            compose=self.compose_root,
            staging=self.staging,
            production=self.production,
        )
        self.rsync = self.dir / "rsync"
        self.rs_staging = self.rsync / "staging" / CATEGORY / REL / SIG
        self.rs_production = self.rsync / "production" / CATEGORY / REL / SIG
        self.pin(staging=None, production=None)

    def close(self) -> None:
        self.server.stop()
        if self.env.keep:
            return
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.data, ignore_errors=True)
        shutil.rmtree(self.env.base / f"{self.dir.name}-server", ignore_errors=True)

    # desired state and commands

    def pin(self, staging: str | None, production: str | None) -> None:
        write_desired_state(self.ds, self.env.repos, self.env.keep_versions, staging, production)

    def reconciler(self, *args: str, config: Path | None = None, **kw: Any) -> Run:
        cmd = [
            *RECONCILER,
            *args,
            "--config",
            str(config or self.config),
            "--desired-state",
            str(self.ds),
        ]
        # Each world starts with an empty record cache (README: "Start-up in proportion
        # to the change"): a desired state written by a step is validated by that step,
        # as on a host that never saw it; what an earlier step validated is reused.
        env = dict(os.environ, RECONCILER_CACHE_DIR=str(self.dir / "record-cache"))
        return run(cmd, env=env, **kw)

    def latest(self) -> str:
        return (self.compose_root / REL / f"latest-SIG-{SIG}-{REL}").readlink().name

    def sig_dir(self, cid: str) -> Path:
        return self.compose_root / REL / cid / "compose" / REL / SIG

    # bytes served

    def served_bytes(self) -> tuple[int, int]:
        """(bytes, GET requests) of what the server answered since the last reset."""
        return self.server.served()

    # baselines

    def reposync(self, dest: Path, *, delete: bool = False) -> tuple[Run, int]:
        """``dnf reposync`` of every repo and arch (sequentially); (total, bytes served)."""
        self.server.reset_counts()
        cpu = self.server.cpu_seconds()
        started = time.perf_counter()
        rss = 0
        failed: list[str] = []
        for repo, arches in self.env.repos.items():
            for variant in [a for arch in arches for a in (arch, f"{arch}-debug")] + ["src"]:
                url = f"{self.server.base_url}/{gen.PROJECT_ID}/repo/{repo}/{variant}"
                repoid = f"{repo}-{variant}"
                cache = Path(tempfile.mkdtemp(prefix="dnfcache-", dir=self.dir))
                cmd = [
                    "dnf",
                    "reposync",
                    "--download-metadata",
                    "--norepopath",
                    "--remote-time",
                    f"--repofrompath={repoid},{url}",
                    f"--repoid={repoid}",
                    "-p",
                    str(dest / repo / variant),
                    "--setopt=reposdir=/dev/null",
                    f"--setopt=cachedir={cache}",
                    f"--releasever={REL}",
                ]
                if delete:
                    cmd.append("--delete")
                r = run(cmd, check=False)
                rss = max(rss, r.rss_kb)
                shutil.rmtree(cache, ignore_errors=True)
                if r.rc != 0:
                    lines = r.err.replace("\r", "\n").splitlines()
                    failed.append(
                        f"{repoid} exit {r.rc}: "
                        + " | ".join(ln for ln in lines if "FAILED" in ln or "Error" in ln)[-600:]
                    )
        seconds = time.perf_counter() - started
        nbytes, _ = self.served_bytes()
        return Run(
            ["dnf", "reposync", "..."],
            seconds,
            rss,
            1 if failed else 0,
            "",
            "; ".join(failed),
            server_cpu=self.server.cpu_seconds() - cpu,
        ), nbytes
