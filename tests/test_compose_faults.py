"""Bad upstreams and faults: each gives a clear message, a non-zero exit, a DOOMED
(or no) compose, an untouched ``latest-*`` link and an unchanged earlier compose."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import createrepo_c as cr
import pytest

from reconciler import testing as su

from .conftest import (
    CliResult,
    DesiredState,
    Host,
    Upstream,
    reconciler_process,
    tree_digest,
    wait_until,
    write_host_config,
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


# -- hostile upstreams and hosts ------------------------------------------------------

#: Runs the CLI with its address space limited (argv[1] MiB): a client that reads a
#: huge body into memory fails with MemoryError instead of taking the machine's memory.
_LIMITED_CLI = """\
import resource, runpy, sys
limit = int(sys.argv[1]) << 20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
sys.argv = ["reconciler", *sys.argv[2:]]
runpy.run_module("reconciler.cli", run_name="__main__")
"""


def compose_in_a_child(
    host: Host, ds: DesiredState, timeout: float, address_space_mib: int = 4096
) -> tuple[CliResult, float]:
    """A compose by the real CLI in a child process; its result and how long it took."""
    args = ["compose", "core", "9", "--config", str(host.config_path)]
    args += ["--desired-state", str(ds.path)]
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", _LIMITED_CLI, str(address_space_mib), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
        proc.wait()
    return CliResult(proc.returncode, out, err), time.monotonic() - started


def with_download(host: Host, upstream: Upstream, **download: Any) -> None:
    settings = {"workers": 4, "retries": 2, "backoff": 0.01, "timeout": 10, **download}
    write_host_config(host.root, upstream.server.base_url, download=settings)


def test_a_package_dripped_a_byte_a_second_dooms_the_compose_at_the_deadline(
    host: Host, desired_state: DesiredState, upstream: Upstream, earlier: Any
) -> None:
    path = upstream.path("core-common", "x86_64", f"Packages/{NEW_RPM}")
    upstream.server.drip(path, 1.0)
    with_download(host, upstream, deadline=3)
    result, elapsed = compose_in_a_child(host, desired_state, timeout=40)
    assert_failed_safely(result, host, earlier, upstream.server.url(path), "deadline")
    assert elapsed < 20, f"the compose took {elapsed:.1f}s with a 3 s deadline"


def test_a_repomd_xml_of_10_gib_dooms_the_compose_without_being_read(
    host: Host, desired_state: DesiredState, upstream: Upstream, earlier: Any
) -> None:
    path = upstream.path("core-infra", "x86_64", "repodata/repomd.xml")
    upstream.server.huge(path, 10 << 30)
    result, _ = compose_in_a_child(host, desired_state, timeout=60)
    assert_failed_safely(
        result, host, earlier, upstream.server.url(path), "max_metadata_bytes", str(10 << 30)
    )


def test_retry_after_is_waited_for_by_a_compose(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream, earlier: Any
) -> None:
    path = upstream.path("core-common", "x86_64", f"Packages/{NEW_RPM}")
    upstream.server.fail(path, 503, times=1, retry_after="1")
    result = run_compose(cli, host, desired_state)  # the host's backoff is 0.01 s
    assert result.code == 0, result.out + result.err
    server = upstream.server
    asked = [t for p, t in zip(server.requests, server.request_times, strict=True) if p == path]
    assert len(asked) == 2
    assert asked[1] - asked[0] >= 0.95


def test_signatures_are_checked_in_the_c_locale_whatever_the_host_speaks(
    cli: Any,
    host: Host,
    desired_state: DesiredState,
    upstream: Upstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """rpmkeys' verdicts ("signatures OK") are translated by gettext; they are parsed, so
    rpmkeys must run with LC_ALL=C. This host has no rpm translations installed to show a
    German verdict, so a real rpmkeys behind a wrapper records the environment it got."""
    real = shutil.which("rpmkeys")
    assert real is not None
    seen = tmp_path / "rpmkeys-environments"
    seen.mkdir()
    wrapper = tmp_path / "bin" / "rpmkeys"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nenv > "{seen}/$$"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")
    for name in ("LANG", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.setenv(name, "de_DE.UTF-8")
    monkeypatch.setenv("LANGUAGE", "de")
    result = run_compose(cli, host, desired_state)
    assert result.code == 0, result.out + result.err
    environments = [f.read_text().splitlines() for f in seen.iterdir()]
    assert len(environments) >= 2  # the key imported, the packages checked
    for env in environments:
        assert "LC_ALL=C" in env, env
