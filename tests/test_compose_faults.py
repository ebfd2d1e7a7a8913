"""Bad upstreams and faults: each gives a clear message, a non-zero exit, a DOOMED
(or no) compose, an untouched ``latest-*`` link and an unchanged earlier compose."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import createrepo_c as cr
import pytest

from reconciler import testing as su

from .conftest import (
    DesiredState,
    Host,
    Upstream,
    reconciler_process,
    tree_digest,
    wait_until,
)
from .mounts import needs_root, tmpfs
from .test_compose import compose_dirs, run_compose

LATEST = "latest-SIG-core-9"
NEW_RPM = "sig-hello-1.1-1.x86_64.rpm"


@pytest.fixture
def earlier(cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream) -> Any:
    """A finished earlier compose, then an upstream update that the next compose must fetch."""
    assert run_compose(cli, host, desired_state).code == 0
    (first,) = compose_dirs(host)
    su.add_packages(upstream.repo_dir("core-common", "x86_64"), [su.sample_rpm(NEW_RPM)])
    upstream.server.reset_counts()
    return first, tree_digest(first)


def assert_failed_safely(result: Any, host: Host, earlier: Any, *fragments: str) -> None:
    first, digest = earlier
    assert result.code == 1, result.out + result.err
    text = result.out + result.err
    for fragment in fragments:
        assert fragment in text, text
    newest = compose_dirs(host)[-1]
    assert newest != first
    assert (newest / "STATUS").read_text() == "DOOMED\n"
    assert os.readlink(host.compose_root / "9" / LATEST) == first.name
    assert tree_digest(first) == digest, "the earlier compose must not change"
    assert not list(newest.rglob("*.~tmp~"))


@pytest.mark.parametrize("status", [404, 500])
def test_repomd_error(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream, earlier: Any, status: int
) -> None:
    path = upstream.path("core-infra", "x86_64", "repodata/repomd.xml")
    upstream.server.fail(path, status)
    result = run_compose(cli, host, desired_state)
    assert_failed_safely(result, host, earlier, upstream.server.url(path), f"HTTP {status}")
    if status == 500:  # retried, then given up
        assert upstream.server.requests.count(path) == 3


@pytest.mark.parametrize("status", [404, 500])
def test_package_error(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream, earlier: Any, status: int
) -> None:
    path = upstream.path("core-common", "x86_64", f"Packages/{NEW_RPM}")
    upstream.server.fail(path, status)
    result = run_compose(cli, host, desired_state)
    assert_failed_safely(result, host, earlier, upstream.server.url(path), f"HTTP {status}")


def test_corrupt_package(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream, earlier: Any
) -> None:
    path = upstream.path("core-common", "x86_64", f"Packages/{NEW_RPM}")
    upstream.server.corrupt(path)
    result = run_compose(cli, host, desired_state)
    assert_failed_safely(result, host, earlier, upstream.server.url(path), "does not match")


def test_dropped_connection_every_time(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream, earlier: Any
) -> None:
    path = upstream.path("core-common", "x86_64", f"Packages/{NEW_RPM}")
    upstream.server.truncate(path, 100)
    result = run_compose(cli, host, desired_state)
    assert_failed_safely(result, host, earlier, upstream.server.url(path), "gave up after 3")


@pytest.mark.parametrize("fault", ["truncate", "status", "corrupt"])
def test_transient_faults_are_retried(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream, earlier: Any, fault: str
) -> None:
    path = upstream.path("core-common", "x86_64", f"Packages/{NEW_RPM}")
    if fault == "truncate":
        upstream.server.truncate(path, 100, times=1)
    elif fault == "status":
        upstream.server.fail(path, 503, times=1)
    else:
        upstream.server.corrupt(path, times=1)
    result = run_compose(cli, host, desired_state)
    assert result.code == 0, result.out + result.err
    assert upstream.server.requests.count(path) == 2
    assert os.readlink(host.compose_root / "9" / LATEST) == compose_dirs(host)[-1].name


@pytest.mark.parametrize(
    ("rpm_set", "fragment"), [("unsigned", "unsigned"), ("otherkey", "NOT OK")]
)
def test_bad_signature_dooms_the_compose(
    cli: Any,
    host: Host,
    desired_state: DesiredState,
    upstream: Upstream,
    earlier: Any,
    rpm_set: str,
    fragment: str,
) -> None:
    bad = su.sample_rpm(NEW_RPM, rpm_set)  # type: ignore[arg-type]
    repo = upstream.repo_dir("core-common", "x86_64")
    su.remove_packages(repo, [NEW_RPM])
    su.add_packages(repo, [bad])
    result = run_compose(cli, host, desired_state)
    assert_failed_safely(result, host, earlier, NEW_RPM, "signature check failed", fragment)


def test_signature_check_can_be_off(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream, earlier: Any
) -> None:
    repo = upstream.repo_dir("core-common", "x86_64")
    su.remove_packages(repo, [NEW_RPM])
    su.add_packages(repo, [su.sample_rpm(NEW_RPM, "unsigned")])
    assert run_compose(cli, host, desired_state, "--no-check-signatures").code == 0


def rewrite_hrefs(repo: Path, bad_href: str) -> None:
    """Rewrite an upstream repo's metadata so that one package's location leaves the repo."""
    rpms = sorted((repo / "Packages").glob("*.rpm"))
    for old in (repo / "repodata").iterdir():
        old.unlink()
    with cr.RepositoryWriter(str(repo), num_packages=len(rpms), compression=cr.GZ_COMPRESSION) as w:
        for i, rpm in enumerate(rpms):
            href = bad_href if i == 0 else f"Packages/{rpm.name}"
            w.add_pkg(cr.package_from_rpm(str(rpm), location_href=href))


@pytest.mark.parametrize(
    "href",
    [
        "../../../../etc/passwd.rpm",
        "/abs/path/x.rpm",
        "Packages/../../../x.rpm",
        "Packages/sig\thello.rpm",  # would break the manifest's and file lists' lines
        "Packages/sig\nhello.rpm",
    ],
)
def test_href_leaving_the_repo_is_refused(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream, earlier: Any, href: str
) -> None:
    rewrite_hrefs(upstream.repo_dir("core-infra", "x86_64"), href)
    result = run_compose(cli, host, desired_state)
    assert_failed_safely(result, host, earlier, repr(href), "repomd.xml")
    assert not any(".." in p or p.startswith("/abs") for p in upstream.server.requests)
    assert not any("sig\thello" in p or "sig%09hello" in p for p in upstream.server.requests)


@needs_root
def test_compose_root_not_writable(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream
) -> None:
    with tmpfs(host.compose_root, "ro,size=1m"):  # root ignores permission bits
        result = run_compose(cli, host, desired_state)
        assert result.code == 1
        assert str(host.compose_root / "9") in result.err
        assert "Read-only file system" in result.err
    assert upstream.server.requests == []


def test_two_composes_at_once(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream, earlier: Any
) -> None:
    path = upstream.path("core-common", "x86_64", f"Packages/{NEW_RPM}")
    upstream.server.delay(path, 3.0)
    first = reconciler_process(
        "compose",
        "core",
        "9",
        "--config",
        host.config_path,
        "--desired-state",
        desired_state.path,
        stdout=subprocess.PIPE,
    )
    try:
        wait_until(lambda: path in upstream.server.requests, first, "the first compose's download")
        running = compose_dirs(host)[-1]
        started = time.monotonic()
        second = run_compose(cli, host, desired_state)
        assert time.monotonic() - started < 2, "the second compose must fail fast"
        assert second.code == 1
        assert f"pid {first.pid}" in second.err and "already running" in second.err
        out, err = first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode == 0, out + err
    assert compose_dirs(host)[-1] == running
    assert (running / "STATUS").read_text() == "FINISHED\n"
    assert os.readlink(host.compose_root / "9" / LATEST) == running.name
