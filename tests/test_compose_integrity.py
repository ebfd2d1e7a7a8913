"""What a compose leaves behind: read-only files, closed directories, and a manifest
that says what every file's bytes must hash to (issue 13, item 2).

A package is one inode hardlinked into every compose, staging and production, so a
file that is writable anywhere is writable everywhere. Every file a compose writes or
links ends 0444 and every directory 0755, even under a group-writable umask; the
manifest (v2) carries a sha256 per file, taken from the upstream metadata for the
packages (never hashed again) and computed for the small files the compose writes.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler import testing as su
from reconciler.manifest import read_manifest, scan_source

from .conftest import DesiredState, Host, Upstream
from .publish_support import SIG_REL, World, build_world
from .test_compose import compose_dirs, run_compose, sig_tree

FILE_MODE, DIR_MODE = 0o444, 0o755


@pytest.fixture
def group_umask() -> Iterator[None]:
    """A umask that would leave new files and directories group-writable (0664, 0775)."""
    old = os.umask(0o002)
    try:
        yield
    finally:
        os.umask(old)


def wrong_modes(top: Path, files: bool = True) -> list[str]:
    """Every path under ``top`` (not ``top`` itself) whose mode is not the expected one."""
    wrong = []
    for path in sorted(top.rglob("*")):
        st = path.lstat()
        mode = stat.S_IMODE(st.st_mode)
        want = DIR_MODE if stat.S_ISDIR(st.st_mode) else FILE_MODE
        if (stat.S_ISDIR(st.st_mode) or (files and stat.S_ISREG(st.st_mode))) and mode != want:
            wrong.append(f"{path}: {mode:o}")
    return wrong


def test_every_file_and_directory_of_a_finished_compose_is_read_only(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream, group_umask: None
) -> None:
    assert run_compose(cli, host, desired_state).code == 0  # downloads
    su.add_packages(
        upstream.repo_dir("core-common", "x86_64"), [su.sample_rpm("sig-hello-1.1-1.x86_64.rpm")]
    )
    assert run_compose(cli, host, desired_state).code == 0  # hardlinks + one download
    assert run_compose(cli, host, desired_state, "--repo", "core-infra").code == 0  # carried
    for cdir in compose_dirs(host):
        assert (cdir / "STATUS").read_text() == "FINISHED\n"
        assert not wrong_modes(cdir), cdir
        assert stat.S_IMODE(cdir.stat().st_mode) == DIR_MODE


def test_published_trees_are_read_only_too(tmp_path: Path, group_umask: None) -> None:
    for world in build_world(tmp_path):
        (world.production / SIG_REL / "x86_64").chmod(0o777)  # as an older version left it
        world.pin(world.b)
        assert world.run("apply") == 0
        for root in (world.production, world.staging):
            assert not wrong_modes(root / SIG_REL), root
            assert not wrong_modes(root, files=False), root
        # published files are the compose's inodes, or copies with its mode (repomd.xml)
        repomd = "x86_64/core-common/repodata/repomd.xml"
        st = (world.production / SIG_REL / repomd).stat()
        assert st.st_ino != (world.compose_sig_dir(world.b) / repomd).stat().st_ino
        assert stat.S_IMODE(st.st_mode) == FILE_MODE


def manifest_sums(cdir: Path) -> dict[str, str | None]:
    files = read_manifest(cdir / "compose" / "metadata" / "reconciler-files.tsv", sig_tree(cdir))
    assert files is not None
    return {f.rel: f.sha256 for f in files}


def real_sums(cdir: Path) -> dict[str, str | None]:
    return {
        f.rel: hashlib.sha256(f.path.read_bytes()).hexdigest() for f in scan_source(sig_tree(cdir))
    }


def test_the_manifest_gives_every_file_its_sha256_without_hashing_packages_again(
    cli: Any,
    host: Host,
    desired_state: DesiredState,
    upstream: Upstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from reconciler import checksums

    hashed: list[Path] = []
    real = checksums.hash_file

    def counting(path: Path, algo: str = "sha256") -> str:
        hashed.append(Path(path))
        return real(path, algo)

    monkeypatch.setattr(checksums, "hash_file", counting)
    assert run_compose(cli, host, desired_state).code == 0
    su.add_packages(
        upstream.repo_dir("core-common", "x86_64"), [su.sample_rpm("sig-hello-1.1-1.x86_64.rpm")]
    )
    assert run_compose(cli, host, desired_state).code == 0
    assert run_compose(cli, host, desired_state, "--repo", "core-infra").code == 0
    for cdir in compose_dirs(host):
        header = (cdir / "compose/metadata/reconciler-files.tsv").read_text().splitlines()[0]
        assert header.startswith("# reconciler compose manifest v2")
        assert manifest_sums(cdir) == real_sums(cdir)
    assert hashed, "the small files are hashed"
    assert not [p for p in hashed if p.suffix == ".rpm"], "the metadata's sha256 is used"


def test_a_v1_manifest_is_still_read(world_b: World) -> None:
    cdir = world_b.root / "compose" / "9" / world_b.b
    path = cdir / "compose" / "metadata" / "reconciler-files.tsv"
    lines = path.read_text().splitlines()
    v1 = ["# reconciler compose manifest v1: relpath<TAB>size<TAB>mtime_ns"]
    v1 += ["\t".join(line.split("\t")[:3]) for line in lines[1:]]
    path.chmod(0o644)
    path.write_text("\n".join(v1) + "\n")
    files = read_manifest(path, sig_tree(cdir))
    assert files is not None and len(files) == len(lines) - 1
    assert {f.sha256 for f in files} == {None}


@pytest.fixture
def world_b(tmp_path: Path) -> Iterator[World]:
    for world in build_world(tmp_path):
        (world.production / SIG_REL / "x86_64").chmod(0o777)  # as an older version left it
        world.pin(world.b)
        assert world.run("apply") == 0
        yield world


def test_a_package_of_an_upstream_with_sha1_sums_is_hashed_once_and_checked(
    tmp_path: Path,
) -> None:
    """The manifest's sha256 of a package whose metadata gives another checksum type is
    hashed from its bytes, in one read that checks the metadata's checksum too: a linked
    copy whose bytes are wrong is not vouched for (composing downloads it instead)."""
    from reconciler import placing
    from reconciler.placement import PlacementStep
    from reconciler.selection import PackageFact
    from reconciler.vocabulary import PlacementKind

    rpm = su.sample_rpm("sig-data-1.0-1.noarch.rpm")
    data = rpm.read_bytes()
    path = tmp_path / rpm.name
    path.write_bytes(data)

    def step(checksum_type: str, checksum: str) -> PlacementStep:
        fact = PackageFact(
            checksum, checksum_type, "sig-data", "0", "1.0", "1", "noarch", len(data), rpm.name
        )
        return PlacementStep(PlacementKind.LINK, fact, "test")

    sha256 = hashlib.sha256(data).hexdigest()
    sha1 = hashlib.sha1(data).hexdigest()  # what such an upstream gives
    assert placing._sha256(step("sha1", sha1), path) == sha256
    assert placing._sha256(step("sha1", sha1), path, known="a" * 64) == "a" * 64
    assert placing._sha256(step("sha256", sha256.upper()), tmp_path / "not read") == sha256
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert placing._sha256(step("sha1", sha1), path) is None
