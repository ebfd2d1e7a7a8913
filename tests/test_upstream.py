"""The HTTP client against real servers on 127.0.0.1: keep-alive reuse, a server that
closed an idle connection, redirects, HTTPS verified against the CA store, and
downloads checked byte for byte."""

from __future__ import annotations

import hashlib
import http.server
import ssl
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trustme

from reconciler.errors import IntegrityError, UpstreamError
from reconciler.hostconfig import DownloadConfig
from reconciler.upstream import MAX_REDIRECTS, Expected, Upstream

from .conftest import Upstream as SampleUpstream

REPOMD = "repodata/repomd.xml"


def _client(**kw: float) -> Upstream:
    return Upstream(DownloadConfig(workers=2, retries=2, backoff=0.01, timeout=5.0, **kw))


def _expected(path: Path) -> Expected:
    data = path.read_bytes()
    return Expected("sha256", hashlib.sha256(data).hexdigest(), len(data))


def _rpms(upstream: SampleUpstream) -> list[Path]:
    return sorted(upstream.repo_dir("core-common", "x86_64").rglob("*.rpm"))


def test_one_connection_serves_many_requests(upstream: SampleUpstream, tmp_path: Path) -> None:
    rpms = _rpms(upstream)
    base = upstream.repo_dir("core-common", "x86_64")
    with _client() as up:
        for i, rpm in enumerate(rpms):
            url = upstream.server.url(
                upstream.path("core-common", "x86_64", str(rpm.relative_to(base)))
            )
            fetched = up.download(url, tmp_path / f"{i}.rpm", _expected(rpm))
            assert (tmp_path / f"{i}.rpm").read_bytes() == rpm.read_bytes()
            assert fetched.nbytes == rpm.stat().st_size
        assert up.stats.requests == len(rpms) == up.stats.files
    assert upstream.server.count(".rpm") == len(rpms)
    assert not list(tmp_path.glob("*.~tmp~"))


def test_a_connection_the_server_closed_is_reopened_without_a_retry(
    upstream: SampleUpstream,
    warnings_log: pytest.LogCaptureFixture,
) -> None:
    url = upstream.server.url(upstream.path("core-common", "x86_64", REPOMD))
    with _client() as up:
        first = up.get(url)
        upstream.server.drop_idle_connections()
        assert up.get(url) == first
    assert "retry" not in warnings_log.text  # reopened at once, no backoff


def test_redirects_are_followed(upstream: SampleUpstream, tmp_path: Path) -> None:
    real = upstream.path("core-common", "x86_64", REPOMD)
    upstream.server.redirect("/moved/repomd.xml", "/hop/repomd.xml", status=301)
    upstream.server.redirect("/hop/repomd.xml", real, status=307)
    with _client() as up:
        body = up.get(upstream.server.url("/moved/repomd.xml"))
    assert body == (upstream.repo_dir("core-common", "x86_64") / REPOMD).read_bytes()


def test_a_redirect_loop_is_a_clear_error(upstream: SampleUpstream) -> None:
    upstream.server.redirect("/loop", "/loop")
    with (
        _client() as up,
        pytest.raises(UpstreamError, match=f"more than {MAX_REDIRECTS} redirects"),
    ):
        up.get(upstream.server.url("/loop"))
    assert upstream.server.count("/loop") == MAX_REDIRECTS + 1


def test_a_body_cut_short_is_retried_on_a_new_connection(
    upstream: SampleUpstream, tmp_path: Path
) -> None:
    rpm = _rpms(upstream)[0]
    rel = upstream.path(
        "core-common", "x86_64", str(rpm.relative_to(upstream.repo_dir("core-common", "x86_64")))
    )
    upstream.server.truncate(rel, 100, times=1)
    with _client() as up:
        up.download(upstream.server.url(rel), tmp_path / "x.rpm", _expected(rpm))
    assert (tmp_path / "x.rpm").read_bytes() == rpm.read_bytes()
    assert upstream.server.count(rel) == 2


def test_wrong_bytes_are_never_kept(upstream: SampleUpstream, tmp_path: Path) -> None:
    rpm = _rpms(upstream)[0]
    rel = upstream.path(
        "core-common", "x86_64", str(rpm.relative_to(upstream.repo_dir("core-common", "x86_64")))
    )
    upstream.server.corrupt(rel)
    out = tmp_path / "out"
    out.mkdir()
    with _client() as up, pytest.raises(IntegrityError, match="does not match the metadata"):
        up.download(upstream.server.url(rel), out / "x.rpm", _expected(rpm))
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "http:///x", "http://127.0.0.1:port/x"])
def test_urls_that_are_not_http_are_refused(url: str) -> None:
    with _client() as up, pytest.raises(UpstreamError, match=r"^" + url.replace(".", r"\.")):
        up.get(url)


# -- HTTPS ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def https_server(ca: trustme.CA, tmp_path: Path) -> Iterator[str]:
    """A plain file server over TLS with a certificate for 127.0.0.1 from a test CA."""
    (tmp_path / "hello.txt").write_text("hello over TLS\n")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_https_from_an_unknown_ca_is_refused_at_once(https_server: str) -> None:
    with _client() as up, pytest.raises(UpstreamError, match="TLS verification failed") as err:
        up.get(f"{https_server}/hello.txt")
    assert "gave up" not in str(err.value)  # final, not retried
    assert str(err.value).startswith(f"{https_server}/hello.txt: ")


def test_https_from_a_trusted_ca_is_read(
    https_server: str, ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))  # what the system CA store would hold
    with _client() as up:
        assert up.get(f"{https_server}/hello.txt") == b"hello over TLS\n"
