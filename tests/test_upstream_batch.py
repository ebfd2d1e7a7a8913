"""Many verified downloads at once (``Upstream.download_all``): first attempts through
libcurl's multi interface, the rest through the client's own loop, against real servers
on 127.0.0.1. Each fault the client's single downloads know must end the same way here:
retried and verified, or the same error, naming the URL, with no file left behind."""

from __future__ import annotations

import hashlib
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from reconciler.errors import HTTPStatusError, IntegrityError, UpstreamError
from reconciler.hostconfig import DownloadConfig
from reconciler.testing import UpstreamServer
from reconciler.upstream import Expected, Fetched, Upstream
from reconciler.upstream.batch import loops_for

# the proxy variables of the shell never leak in (an autouse fixture, shared)
from tests.test_upstream_hostile import _Proxy, no_proxy_from_the_environment  # noqa: F401

SIZES = [0, 1, 5000, 70_000, 300_000, 2_500_000, 12_345]  # one chunk, several, none


@pytest.fixture
def files(tmp_path: Path) -> Path:
    root = tmp_path / "upstream" / "Packages"
    root.mkdir(parents=True)
    for i, size in enumerate(SIZES):
        (root / f"p{i}.rpm").write_bytes(os.urandom(size))
    return root.parent


@pytest.fixture
def server(files: Path) -> Iterator[UpstreamServer]:
    with UpstreamServer(files) as srv:
        yield srv


@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


def _client(**kw: Any) -> Upstream:
    # 4 workers: two transfer loops on a machine of two CPUs or more (loops_for)
    settings: dict[str, Any] = {"workers": 4, "retries": 2, "backoff": 0.01, "timeout": 5.0}
    return Upstream(DownloadConfig(**{**settings, **kw}))


def _jobs(srv: UpstreamServer, files: Path, out: Path) -> list[tuple[str, Path, Expected]]:
    jobs = []
    for i in range(len(SIZES)):
        data = (files / "Packages" / f"p{i}.rpm").read_bytes()
        expected = Expected("sha256", hashlib.sha256(data).hexdigest(), len(data))
        jobs.append((srv.url(f"/Packages/p{i}.rpm"), out / f"p{i}.rpm", expected))
    return jobs


def _download_all(up: Upstream, jobs: list[tuple[str, Path, Expected]]) -> dict[int, Fetched]:
    done: dict[int, Fetched] = {}

    def record(index: int, fetched: Fetched) -> None:
        assert index not in done, f"job {index} reported twice"
        done[index] = fetched

    up.download_all(jobs, record)
    return done


def _check_all(files: Path, out: Path, done: dict[int, Fetched]) -> None:
    assert sorted(done) == list(range(len(SIZES)))
    for i, size in enumerate(SIZES):
        got = out / f"p{i}.rpm"
        assert got.read_bytes() == (files / "Packages" / f"p{i}.rpm").read_bytes()
        assert done[i] == Fetched(size, got.stat().st_mtime_ns)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"p{i}.rpm" for i in range(len(SIZES)))


def test_every_file_is_downloaded_and_verified_once(
    server: UpstreamServer, files: Path, out: Path
) -> None:
    with _client() as up:
        done = _download_all(up, _jobs(server, files, out))
        assert up.stats.files == len(SIZES) and up.stats.requests == len(SIZES)
    _check_all(files, out, done)
    assert server.count(".rpm") == len(SIZES)


@pytest.mark.parametrize(
    "fault",
    [
        lambda srv, path: srv.corrupt(path, times=1),
        lambda srv, path: srv.truncate(path, 1000, times=1),
        lambda srv, path: srv.fail(path, 503, times=2),
        lambda srv, path: srv.redirect(path, srv.url("/Moved/p4.rpm")),
    ],
    ids=["corrupt-once", "truncated-once", "503-twice", "redirect"],
)
def test_a_transient_fault_or_a_redirect_is_carried_through(
    server: UpstreamServer, files: Path, out: Path, fault: Any
) -> None:
    (files / "Moved").mkdir()
    (files / "Moved" / "p4.rpm").write_bytes((files / "Packages" / "p4.rpm").read_bytes())
    fault(server, "/Packages/p4.rpm")
    with _client() as up:
        done = _download_all(up, _jobs(server, files, out))
    _check_all(files, out, done)


def test_bad_bytes_fail_after_the_retries_and_leave_nothing(
    server: UpstreamServer, files: Path, out: Path
) -> None:
    server.corrupt("/Packages/p4.rpm")
    url = server.url("/Packages/p4.rpm")
    with _client(retries=1) as up, pytest.raises(IntegrityError) as err:
        _download_all(up, _jobs(server, files, out))
    assert str(err.value).startswith(f"{url}: sha256 ")
    assert "gave up after 2 attempts" in str(err.value)  # libcurl's try counts as the first
    assert server.count("/Packages/p4.rpm") == 2
    assert not (out / "p4.rpm").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".~tmp~")]


def test_without_retries_a_failed_first_try_is_the_end(
    server: UpstreamServer, files: Path, out: Path
) -> None:
    server.fail("/Packages/p2.rpm", 500)
    with _client(retries=0) as up, pytest.raises(UpstreamError, match="HTTP 500") as err:
        _download_all(up, _jobs(server, files, out))
    assert "gave up after 1 attempts" in str(err.value)
    assert server.count("/Packages/p2.rpm") == 1


def test_a_404_is_final_and_carries_its_status(
    server: UpstreamServer, files: Path, out: Path
) -> None:
    (files / "Packages" / "p3.rpm").unlink()
    jobs = _jobs_without_p3(server, files, out)
    with _client() as up, pytest.raises(HTTPStatusError) as err:
        _download_all(up, jobs)
    assert err.value.status == 404
    assert str(err.value).startswith(f"{server.url('/Packages/p3.rpm')}: HTTP 404")
    assert server.count("/Packages/p3.rpm") == 1


def _jobs_without_p3(
    srv: UpstreamServer, files: Path, out: Path
) -> list[tuple[str, Path, Expected]]:
    (files / "Packages" / "p3.rpm").write_bytes(b"")
    jobs = _jobs(srv, files, out)
    (files / "Packages" / "p3.rpm").unlink()
    return jobs


def test_a_package_dripped_slowly_fails_at_the_deadline(
    server: UpstreamServer, files: Path, out: Path
) -> None:
    server.drip("/Packages/p3.rpm", 0.05)
    with _client(deadline=1.5) as up, pytest.raises(UpstreamError) as err:
        _download_all(up, _jobs(server, files, out))
    assert str(err.value).startswith(f"{server.url('/Packages/p3.rpm')}: ")
    assert "deadline" in str(err.value)
    assert not (out / "p3.rpm").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".~tmp~")]


def test_a_length_other_than_the_metadata_says_is_refused_before_reading(
    server: UpstreamServer, files: Path, out: Path
) -> None:
    server.huge("/Packages/p5.rpm", 10 << 30)
    with _client(retries=0) as up, pytest.raises(IntegrityError) as err:
        _download_all(up, _jobs(server, files, out))
    assert f"Content-Length {10 << 30} does not match" in str(err.value)
    assert up.stats.bytes < sum(SIZES)


def test_a_file_of_unstated_size_is_capped_like_metadata(server: UpstreamServer, out: Path) -> None:
    server.huge("/Packages/p0.rpm", 0)
    url = server.url("/Packages/p0.rpm")
    unsized = Expected("sha256", "0" * 64, None)
    with _client(retries=0, max_metadata_bytes=1 << 20) as up, pytest.raises(UpstreamError) as e:
        up.download_all([(url, out / "x", unsized)], lambda i, f: None)
    assert str(e.value).startswith(f"{url}: ") and "max_metadata_bytes" in str(e.value)
    assert list(out.iterdir()) == []


def test_a_disk_error_is_raised_as_it_is(server: UpstreamServer, files: Path, out: Path) -> None:
    jobs = _jobs(server, files, out)
    url, _, expected = jobs[4]
    jobs[4] = (url, out / "missing-dir" / "p4.rpm", expected)
    with _client() as up, pytest.raises(FileNotFoundError):
        _download_all(up, jobs)
    assert server.count("/Packages/p4.rpm") == 0  # the file is made first; never retried


# -- TLS and proxies -------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(files: Path, ca: trustme.CA) -> Iterator[UpstreamServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with UpstreamServer(files, tls=context) as srv:
        yield srv


def test_https_from_an_unknown_ca_is_refused_at_once(
    tls_server: UpstreamServer, files: Path, out: Path
) -> None:
    with _client() as up, pytest.raises(UpstreamError, match="TLS verification failed") as err:
        _download_all(up, _jobs(tls_server, files, out))
    assert "gave up" not in str(err.value)  # final, not retried
    assert str(err.value).startswith("https://127.0.0.1:")
    assert list(out.iterdir()) == []


def test_https_from_the_trusted_store_is_read(
    tls_server: UpstreamServer,
    ca: trustme.CA,
    files: Path,
    out: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))  # what the system CA store would hold
    with _client() as up:
        done = _download_all(up, _jobs(tls_server, files, out))
    _check_all(files, out, done)


def test_a_proxied_url_goes_through_the_proxy(
    server: UpstreamServer, files: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = _Proxy()
    try:
        monkeypatch.setenv("http_proxy", proxy.url)
        with _client() as up:
            done = _download_all(up, _jobs(server, files, out))
        assert sorted(proxy.lines()) == sorted(
            f"GET {server.url(f'/Packages/p{i}.rpm')} HTTP/1.1" for i in range(len(SIZES))
        )
    finally:
        proxy.close()
    _check_all(files, out, done)


@pytest.mark.parametrize(
    ("workers", "cpus", "loops"),
    [(4, 2, 2), (4, 8, 2), (8, 8, 4), (1, 8, 1), (3, 1, 1), (64, None, 1)],
)
def test_one_loop_per_cpu_with_two_connections_each_at_least(
    workers: int, cpus: int | None, loops: int
) -> None:
    assert loops_for(workers, cpus) == loops


def test_nothing_to_download_does_not_load_libcurl() -> None:
    code = (
        "import sys\n"
        "from reconciler.hostconfig import DownloadConfig\n"
        "from reconciler.upstream import Upstream\n"
        "Upstream(DownloadConfig()).download_all([], lambda i, f: None)\n"
        "print('pycurl' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "False"
