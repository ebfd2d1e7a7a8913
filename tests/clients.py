"""Real clients the tests drive: dnf into an empty installroot, productmd."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def dnf_install(
    workdir: Path, repo_url: str, gpgkey: Path, package: str, releasever: str = "9"
) -> subprocess.CompletedProcess[str]:
    """``dnf install`` into an empty installroot from one repo only, checking signatures."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(
        [
            "dnf",
            "-y",
            "-q",
            f"--installroot={workdir / 'root'}",
            f"--setopt=cachedir={workdir / 'cache'}",
            "--setopt=reposdir=/dev/null",
            f"--setopt=module_platform_id=platform:el{releasever}",
            f"--releasever={releasever}",
            f"--repofrompath=t,{repo_url}",
            "--repo=t",
            "--setopt=t.gpgcheck=1",
            f"--setopt=t.gpgkey={gpgkey.as_uri()}",
            "install",
            package,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
