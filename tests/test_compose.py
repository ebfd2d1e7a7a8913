"""Composing from a real upstream over HTTP, checked with real clients."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import createrepo_c as cr
import productmd.compose
import pytest

from reconciler import testing as su
from reconciler.composemeta import read_record
from reconciler.layout import ComposeTree

from .clients import dnf_install
from .conftest import DesiredState, Host, Upstream, tree_digest, write_host_config


def run_compose(cli: Any, host: Host, ds: DesiredState, *extra: str) -> Any:
    return cli(
        "compose", "core", "9", "--config", host.config_path, "--desired-state", ds.path, *extra
    )


def compose_dirs(host: Host) -> list[Path]:
    return sorted(p for p in (host.compose_root / "9").glob("SIG-core-9-*") if p.is_dir())


def sig_tree(compose_dir: Path) -> Path:
    return compose_dir / "compose" / "9" / "core"


def repomd_types(repo: Path) -> set[str]:
    return {r.type for r in cr.Repomd(str(repo / "repodata" / "repomd.xml")).records}


def packages_in(repo: Path) -> list[str]:
    found: list[str] = []
    cr.xml_parse_primary(
        str(next((repo / "repodata").glob("*primary.xml*"))),
        pkgcb=lambda p: found.append(p.location_href) or True,
        do_files=0,
    )
    return sorted(found)


def test_compose_makes_the_documented_tree(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream
) -> None:
    result = run_compose(cli, host, desired_state)
    assert result.code == 0, result.out + result.err
    (cdir,) = compose_dirs(host)
    cid = cdir.name
    assert cid.startswith("SIG-core-9-") and cid.endswith(".0")
    assert (cdir / "COMPOSE_ID").read_text() == f"{cid}\n"
    assert (cdir / "STATUS").read_text() == "FINISHED\n"
    assert os.readlink(host.compose_root / "9" / "latest-SIG-core-9") == cid
    assert "compose" in (cdir / "logs" / "compose.log").read_text()
    assert f"FINISHED {cid}" in result.out

    tree = sig_tree(cdir)
    expected_repos = {
        "x86_64/core-common",
        "x86_64/core-common-debug",
        "aarch64/core-common",
        "aarch64/core-common-debug",
        "source/core-common",
        "x86_64/core-infra",
        "x86_64/core-infra-debug",
        "source/core-infra",
    }
    found = {str(p.parent.parent.relative_to(tree)) for p in tree.glob("*/*/repodata/repomd.xml")}
    assert found == expected_repos
    # hashed layout, newest version only (keep_versions: 1), noarch beside the arch packages
    assert packages_in(tree / "x86_64" / "core-common") == [
        "Packages/s/sig-data-1.0-1.noarch.rpm",
        "Packages/s/sig-hello-1.0-1.x86_64.rpm",
        "Packages/s/sig-tools-2.0-1.x86_64.rpm",
    ]
    assert "Packages/s/sig-hello-debuginfo-1.0-1.x86_64.rpm" in packages_in(
        tree / "x86_64" / "core-common-debug"
    )
    assert "Packages/s/sig-hello-1.0-1.src.rpm" in packages_in(tree / "source" / "core-common")
    # comps, modules and updateinfo carried over where upstream has them
    assert {"group", "modules", "updateinfo"} <= repomd_types(tree / "x86_64" / "core-common")
    assert "updateinfo" not in repomd_types(tree / "x86_64" / "core-infra")
    # GPG keys in each repo and in metadata/
    key = su.SAMPLE_KEY.name
    assert (tree / "metadata" / key).read_bytes() == su.SAMPLE_KEY.read_bytes()
    for repo in expected_repos:
        assert (tree / repo / key).is_file()
    assert not list(cdir.rglob("*.~tmp~")), "no temporary files left behind"


def test_productmd_loads_the_compose_and_lists_every_package(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream
) -> None:
    assert run_compose(cli, host, desired_state).code == 0
    (cdir,) = compose_dirs(host)
    compose = productmd.compose.Compose(str(cdir))
    assert compose.info.compose.id == cdir.name
    assert compose.info.release.short == "SIG-core"
    assert compose.info.release.version == "9"
    variants = {v.name for v in compose.info.variants.get_variants()}
    assert variants == {"core-common", "core-infra"}

    listed: set[str] = set()
    categories: set[str] = set()
    for arches in compose.rpms.rpms.values():
        for srpms in arches.values():
            for rpms in srpms.values():
                for info in rpms.values():
                    listed.add(info["path"])
                    categories.add(info["category"])
    on_disk = {str(p.relative_to(cdir / "compose")) for p in (cdir / "compose").rglob("*.rpm")}
    assert listed == on_disk
    assert categories == {"binary", "debug", "source"}
    repo = compose.info.variants["CoreCommon"].paths.repository["x86_64"]
    assert (cdir / "compose" / repo / "repodata" / "repomd.xml").is_file()


@pytest.mark.skipif(shutil.which("dnf") is None, reason="dnf is not installed")
def test_dnf_installs_from_the_compose_with_the_sig_key(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream, tmp_path: Path
) -> None:
    assert run_compose(cli, host, desired_state).code == 0
    repo = sig_tree(host.compose_root / "9" / "latest-SIG-core-9") / "x86_64" / "core-common"
    key = repo / su.SAMPLE_KEY.name
    proc = dnf_install(tmp_path / "dnf", repo.resolve().as_uri(), key, "sig-hello")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "dnf" / "root" / "usr/share/sig-hello/hello.txt").is_file()


def test_second_compose_downloads_only_the_changed_package(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream
) -> None:
    assert run_compose(cli, host, desired_state).code == 0
    (first,) = compose_dirs(host)
    before = tree_digest(first)
    new = su.sample_rpm("sig-hello-1.1-1.x86_64.rpm")
    su.add_packages(upstream.repo_dir("core-common", "x86_64"), [new])
    upstream.server.reset_counts()

    result = run_compose(cli, host, desired_state)
    assert result.code == 0, result.out + result.err
    assert upstream.rpm_requests() == [
        upstream.path("core-common", "x86_64", "Packages/sig-hello-1.1-1.x86_64.rpm")
    ]
    second = compose_dirs(host)[-1]
    assert os.readlink(host.compose_root / "9" / "latest-SIG-core-9") == second.name
    repo2 = sig_tree(second) / "x86_64" / "core-common"
    assert "Packages/s/sig-hello-1.1-1.x86_64.rpm" in packages_in(repo2)
    assert "Packages/s/sig-hello-1.0-1.x86_64.rpm" not in packages_in(repo2)
    # unchanged packages are the same inode as in the first compose
    rel = "x86_64/core-common/Packages/s/sig-data-1.0-1.noarch.rpm"
    assert (sig_tree(second) / rel).stat().st_ino == (sig_tree(first) / rel).stat().st_ino
    # aarch64 did not change: its packages are hardlinks too
    rel = "aarch64/core-common/Packages/s/sig-hello-1.0-1.aarch64.rpm"
    assert (sig_tree(second) / rel).stat().st_ino == (sig_tree(first) / rel).stat().st_ino
    assert tree_digest(first) == before, "the earlier compose was not changed"
    assert "1 downloaded" in result.out

    tree = ComposeTree(host.compose_root, "core", "9")
    r1, r2 = read_record(tree, first.name), read_record(tree, second.name)
    assert r1 is not None and r2 is not None
    assert r1.upstream_revision != r2.upstream_revision
    changed = {k for k in r1.upstream if r1.upstream[k] != r2.upstream[k]}
    assert changed == {"core-common/x86_64"}


def test_downloads_start_with_the_largest_package(
    cli: Any, tmp_path: Path, desired_state: DesiredState, upstream: Upstream
) -> None:
    """One download thread makes the order visible: largest first, whatever the metadata's."""
    root = tmp_path / "one-worker"
    root.mkdir()
    download = {"workers": 1, "retries": 2, "backoff": 0.01, "timeout": 10}
    host = Host(write_host_config(root, upstream.server.base_url, download=download), root)
    assert run_compose(cli, host, desired_state).code == 0
    served = [p for p in upstream.server.requests if p.endswith(".rpm")]
    sizes = [(upstream.server.root / p.lstrip("/")).stat().st_size for p in served]
    assert len(set(sizes)) > 1, "the sample packages must differ in size for this test"
    assert sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize(
    ("keep", "expected"),
    [
        (1, ["sig-hello-1.1-1.x86_64.rpm"]),
        (2, ["sig-hello-1.0-1.x86_64.rpm", "sig-hello-1.1-1.x86_64.rpm"]),
        (0, ["sig-hello-1.0-1.x86_64.rpm", "sig-hello-1.1-1.x86_64.rpm"]),
    ],
)
def test_keep_versions(
    cli: Any,
    host: Host,
    desired_state: DesiredState,
    upstream: Upstream,
    keep: int,
    expected: list[str],
) -> None:
    su.add_packages(
        upstream.repo_dir("core-common", "x86_64"), [su.sample_rpm("sig-hello-1.1-1.x86_64.rpm")]
    )
    desired_state.write(compose={"keep_versions": keep, "hashed": False})
    assert run_compose(cli, host, desired_state).code == 0
    repo = sig_tree(compose_dirs(host)[-1]) / "x86_64" / "core-common"
    hello = [h for h in packages_in(repo) if "sig-hello-1" in h]
    assert hello == [f"Packages/{name}" for name in expected]  # not hashed


def test_debug_and_source_can_be_turned_off(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream
) -> None:
    desired_state.write(compose={"debug": False, "source": False})
    assert run_compose(cli, host, desired_state).code == 0
    tree = sig_tree(compose_dirs(host)[-1])
    assert not list(tree.glob("*/*-debug")) and not (tree / "source").exists()
    assert not any("debug" in p or ".src.rpm" in p for p in upstream.server.requests)


def test_compose_of_one_repo_carries_the_others_over(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream
) -> None:
    assert run_compose(cli, host, desired_state).code == 0
    first = compose_dirs(host)[-1]
    upstream.server.reset_counts()
    result = run_compose(cli, host, desired_state, "--repo", "core-infra")
    assert result.code == 0, result.out + result.err
    assert all("/core-infra/" in p for p in upstream.server.requests)
    second = compose_dirs(host)[-1]
    rel = "aarch64/core-common/Packages/s/sig-hello-1.0-1.aarch64.rpm"
    assert (sig_tree(second) / rel).stat().st_ino == (sig_tree(first) / rel).stat().st_ino
    assert productmd.compose.Compose(str(second)).info.compose.id == second.name


def test_compose_of_one_repo_without_a_previous_compose_is_incomplete(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream
) -> None:
    result = run_compose(cli, host, desired_state, "--repo", "core-infra", "--arch", "x86_64")
    assert result.code == 1
    assert "FINISHED_INCOMPLETE" in result.out and "core-common/x86_64" in result.out
    (cdir,) = compose_dirs(host)
    assert (cdir / "STATUS").read_text() == "FINISHED_INCOMPLETE\n"
    assert not (host.compose_root / "9" / "latest-SIG-core-9").exists()


def test_unknown_repo_or_sig_is_a_clear_error(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream
) -> None:
    result = run_compose(cli, host, desired_state, "--repo", "nope")
    assert result.code == 1 and "has no repo nope" in result.err
    result = cli(
        "compose", "cloud", "9", "--config", host.config_path, "--desired-state", desired_state.path
    )
    assert result.code == 1 and "no SIG 'cloud'" in result.err
    assert not (host.compose_root / "9").exists() or not compose_dirs(host)


def test_manifest_lists_exactly_the_files_of_the_compose(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream
) -> None:
    from reconciler.manifest import read_manifest, scan_source

    def check(cdir: Path) -> None:
        tree = sig_tree(cdir)
        listed = read_manifest(cdir / "compose" / "metadata" / "reconciler-files.tsv", tree)
        assert listed is not None
        walked = {(f.rel, f.size, f.mtime_ns) for f in scan_source(tree)}
        assert {(f.rel, f.size, f.mtime_ns) for f in listed} == walked

    assert run_compose(cli, host, desired_state).code == 0
    check(compose_dirs(host)[-1])
    su.add_packages(
        upstream.repo_dir("core-common", "x86_64"), [su.sample_rpm("sig-hello-1.1-1.x86_64.rpm")]
    )
    assert run_compose(cli, host, desired_state).code == 0  # hardlinks + one download
    check(compose_dirs(host)[-1])
    assert run_compose(cli, host, desired_state, "--repo", "core-infra").code == 0  # carried
    check(compose_dirs(host)[-1])


def inodes(tree: Path) -> dict[str, int]:
    return {str(p.relative_to(tree)): p.stat().st_ino for p in tree.rglob("*") if p.is_file()}


def test_a_compose_of_an_unchanged_upstream_is_the_same_files(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream
) -> None:
    """Packages, metadata and keys are the previous compose's inodes, and its changes are
    empty: a publish of it changes nothing."""
    from reconciler.manifest import read_changes

    assert run_compose(cli, host, desired_state).code == 0
    assert run_compose(cli, host, desired_state).code == 0
    first, second = compose_dirs(host)
    assert inodes(sig_tree(first)) == inodes(sig_tree(second))
    tree = ComposeTree(host.compose_root, "core", "9")
    changes = read_changes(tree.changes(second.name), sig_tree(second))
    assert changes is not None and changes.base == first.name
    assert (changes.added, changes.removed) == ((), ())


def test_a_changed_key_changes_the_keys_only(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream
) -> None:
    desired_state.write(compose={"keep_versions": 1, "hashed": True, "check_signatures": False})
    assert run_compose(cli, host, desired_state).code == 0
    key = desired_state.path / "keys" / su.SAMPLE_KEY.name
    key.write_bytes(key.read_bytes() + b"\n")
    assert run_compose(cli, host, desired_state).code == 0
    first, second = (inodes(sig_tree(c)) for c in compose_dirs(host))
    assert first.keys() == second.keys()
    changed = sorted(rel for rel in first if first[rel] != second[rel])
    assert changed and all(rel.endswith(f"/{su.SAMPLE_KEY.name}") for rel in changed)
    assert len(changed) == 9  # in each of the 8 repos, and in metadata/


def test_changed_carried_metadata_rewrites_only_its_repo(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream
) -> None:
    """Same packages, other modules metadata upstream: that repo gets a new repomd.xml (its
    unchanged metadata files stay the previous compose's); the other repos keep theirs."""
    assert run_compose(cli, host, desired_state).code == 0
    repo = upstream.repo_dir("core-common", "x86_64")
    text = (su.EXTRAS_DIR / "modules.yaml").read_text().replace("Sample SIG module", "Changed")
    su.write_repo(repo, sorted((repo / "Packages").glob("*.rpm")), extras=True, modules=text)
    assert run_compose(cli, host, desired_state).code == 0
    first, second = (inodes(sig_tree(c)) for c in compose_dirs(host))
    changed = sorted(rel for rel in second if first.get(rel) != second[rel])
    assert "x86_64/core-common/repodata/repomd.xml" in changed
    assert [rel for rel in changed if not rel.startswith("x86_64/core-common/repodata/")] == []
    names = sorted(Path(rel).name.split("-", 1)[-1] for rel in changed)
    assert names == ["modules.yaml.gz", "repomd.xml"], changed  # primary etc. are shared
