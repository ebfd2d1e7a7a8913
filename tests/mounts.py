"""Real filesystems for tests that need another device, a full disk or a read-only one;
a systemd unit's sandbox rebuilt as the mounts of a private mount namespace."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting tmpfs needs root")


@contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``path`` (made if missing) with ``options`` ("size=4m", "ro,…")."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


# -- a systemd unit's file-system sandbox, reproduced in a mount namespace -------------------
#
# ProtectSystem=strict makes the whole file system read-only; each ReadWritePaths= (and
# StateDirectory=, CacheDirectory=) entry that is not a mount point already is bind-mounted
# on itself and stays writable; ReadOnlyPaths= entries are bind-mounted read-only. That
# is what matters for publishing: each such entry is a mount of its own, and link(2)
# across two mounts fails with EXDEV even when both are views of one file system.
# Here a directory stands for "/" (the unit's paths are taken below it), and the mounts
# are built in a private mount namespace (`unshare --mount --propagation private`),
# so that nothing leaks to the host and everything goes when the command exits.


@dataclass(frozen=True)
class Sandbox:
    """The mounts a unit's sandbox makes, over ``root`` standing for "/"."""

    root: Path
    writable: frozenset[str]  # absolute paths as the unit names them
    read_only: frozenset[str] = frozenset()

    def path(self, unit_path: str) -> Path:
        """Where a path of the unit is in this sandbox."""
        return self.root / unit_path.lstrip("/")

    def make_paths(self) -> None:
        """Create every listed path (systemd refuses to start a unit missing one)."""
        for unit_path in self.writable | self.read_only:
            self.path(unit_path).mkdir(parents=True, exist_ok=True)

    def run(
        self, command: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """``command`` in a new mount namespace holding this sandbox (it cannot change it)."""
        flags = [f"--rw={p}" for p in sorted(self.writable)]
        flags += [f"--ro={p}" for p in sorted(self.read_only)]
        argv = ["unshare", "--mount", "--propagation", "private", "--"]
        argv += [sys.executable, __file__, str(self.root), *flags, "--", *command]
        return subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )


def unshare_refusal() -> str | None:
    """Why a private mount namespace cannot be made here, or None when it can."""
    if os.geteuid() != 0:
        return "unshare --mount needs root (CAP_SYS_ADMIN)"
    if shutil.which("unshare") is None:
        return "unshare is not installed (util-linux)"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "true"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        return f"the kernel refuses a mount namespace: {probe.stderr.strip()}"
    return None


def _mount_points() -> set[str]:
    """Mount points of this namespace (/proc/self/mountinfo escapes spaces and such as \\ooo)."""
    points = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        field = line.split()[4]
        points.add(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field))
    return points


def _mount(*args: str | Path) -> None:
    subprocess.run(["mount", *map(str, args)], check=True, timeout=30)


def _build(sandbox: Sandbox) -> None:
    """The mounts, in systemd's order: bind each listed path that is not a mount point yet
    on itself (shorter paths first), then make "/" read-only, then the read-only ones."""
    _mount("--bind", sandbox.root, sandbox.root)  # "/" is a mount point of its own
    points = _mount_points()
    for unit_path in sorted(sandbox.writable | sandbox.read_only):
        target = sandbox.path(unit_path)
        if str(target) not in points:
            _mount("--rbind", target, target)
            points.add(str(target))
    # a bind mount starts with its source's flags: those made above are writable, and
    # remounting "/" read-only (this one mount, not recursively) leaves them so
    _mount("-o", "remount,bind,ro", sandbox.root)
    for unit_path in sorted(sandbox.read_only):
        _mount("-o", "remount,bind,ro", sandbox.path(unit_path))


def _main(argv: Sequence[str]) -> None:
    """``mounts.py ROOT [--rw=PATH]... [--ro=PATH]... -- COMMAND...``: build, then exec."""
    split = list(argv).index("--")
    root, *flags = argv[:split]
    command = argv[split + 1 :]
    writable = frozenset(f.removeprefix("--rw=") for f in flags if f.startswith("--rw="))
    read_only = frozenset(f.removeprefix("--ro=") for f in flags if f.startswith("--ro="))
    _build(Sandbox(Path(root), writable, read_only))
    os.execvp(command[0], command)


if __name__ == "__main__":
    _main(sys.argv[1:])
