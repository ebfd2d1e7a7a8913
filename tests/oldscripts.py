"""A staging and production tree made the way the old scripts make them.

The toolkit (sig-core-toolkit) composes a SIG with ``dnf reposync --download-metadata
--norepopath --remote-time --gpgcheck`` per repo variant into
``<compose>/<major>/<sig>/<arch>/<repo>[-debug]`` and ``source/<repo>`` (its
``empanadas/util/dnf_utils.py``), copies the SIG's key into each repo
(``deploy_extra_files``), then ``sync-to-staging-sig.sh`` and
``sync-to-prod-sig.sh`` rsync each top directory with ``-av --chown=10004:10005
--delete`` (the issue names the flags ``-rlptDSH``), and ``sync-sig-file-list.sh`` writes
``fullfilelist`` (``find .``) in the category. Here: the same commands, on the sample
build system, with another owner than the reconciler's.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from reconciler import testing as su

from .conftest import PROJECT_ID

CATEGORY = "mirror/pub/sig"
#: the old scripts' owner of published files (not the reconciler's root)
OLD_UID, OLD_GID = 4242, 4243
OLD_KEY = "RPM-GPG-KEY-Rocky-SIG-Core"


def _run(args: list[str], **kw: object) -> None:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, f"{args[:3]}: {done.stdout[-500:]} {done.stderr[-1500:]}"


def reposync(base_url: str, repo: str, arch_dir: str, dest: Path, work: Path) -> None:
    """The toolkit's reposync of one upstream repo variant into ``dest``."""
    url = f"{base_url}/{PROJECT_ID}/repo/{repo}/{arch_dir}"
    root = work / "installroot"
    if not root.is_dir():  # the toolkit imports the SIG's keys before it syncs
        root.mkdir(parents=True)
        _run(["rpm", "--root", str(root), "--import", str(su.SAMPLE_KEY)])
    forcearch = [] if arch_dir == "src" else [f"--forcearch={arch_dir.removesuffix('-debug')}"]
    _run([
        "dnf", "reposync", "-q", f"--installroot={root}", "--setopt=reposdir=/dev/null",
        f"--setopt=cachedir={work / 'cache'}", f"--repofrompath=r,{url}", "--repoid=r",
        "-p", str(dest), "--norepopath", "--download-metadata", "--remote-time",
        "--gpgcheck", "--setopt=r.gpgcheck=1", f"--setopt=r.gpgkey={su.SAMPLE_KEY.as_uri()}",
        "--releasever=9", *forcearch, "--assumeyes",
    ])  # fmt: skip


def old_compose(base_url: str, repos: dict[str, list[str]], work: Path) -> Path:
    """``<work>/compose/9/core/...`` as the toolkit's SIG sync lays it out."""
    sig_dir = work / "compose" / "9" / "core"
    for repo, arches in repos.items():
        for arch in arches:
            reposync(base_url, repo, arch, sig_dir / arch / repo, work)
            reposync(base_url, repo, f"{arch}-debug", sig_dir / arch / f"{repo}-debug", work)
        reposync(base_url, repo, "src", sig_dir / "source" / repo, work)
    for repomd in sig_dir.glob("**/repodata/repomd.xml"):
        (repomd.parent.parent / OLD_KEY).write_bytes(su.SAMPLE_KEY.read_bytes())
    images = sig_dir / "images"
    images.mkdir()
    (images / "Rocky-9-core-rpi.raw.xz").write_bytes(b"an image\n" * 100)
    return sig_dir


def rsync_into(sig_dir: Path, stage_root: Path) -> Path:
    """The old sync script: rsync the SIG's tree into ``<stage>/<category>/9/core/``."""
    target = stage_root / CATEGORY / "9" / "core"
    target.mkdir(parents=True, exist_ok=True)
    _run(["rsync", "-rlptDSH", "--delete", f"--chown={OLD_UID}:{OLD_GID}",
          f"{sig_dir}/", f"{target}/"])  # fmt: skip
    return target


def file_lists(category_dir: Path) -> None:
    """sync-sig-file-list.sh's ``find . > fullfilelist`` (create-filelist is not here)."""
    found = subprocess.run(
        ["find", "."], cwd=category_dir, capture_output=True, text=True, check=True
    ).stdout
    (category_dir / "fullfilelist").write_text(found)
    os.chown(category_dir / "fullfilelist", OLD_UID, OLD_GID)


@dataclass(frozen=True)
class Seen:
    """A file as a mirror and an auditor see it."""

    ino: int
    size: int
    mtime_ns: int
    uid: int
    gid: int
    mode: int
    sha256: str


def snapshot(root: Path) -> dict[str, Seen]:
    """Every regular file under ``root``: inode, size, mtime, owner, mode and content."""
    out: dict[str, Seen] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if stat.S_ISREG(st.st_mode):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[str(path.relative_to(root))] = Seen(
                st.st_ino, st.st_size, st.st_mtime_ns, st.st_uid, st.st_gid,
                stat.S_IMODE(st.st_mode), digest,
            )  # fmt: skip
    return out
