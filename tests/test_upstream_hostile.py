"""The HTTP client against hostile or unusual upstreams, all real servers on 127.0.0.1:
bodies and headers dripped a byte at a time (the per-request deadline), bodies far
larger than metadata can be (the size cap, checked in a child process under an
address-space limit), a redirect from https to http (a downgrade), the proxy
variables (a small real proxy that tunnels CONNECT and forwards absolute-form
requests) and ``Retry-After``."""

from __future__ import annotations

import base64
import contextlib
import email.utils
import hashlib
import json
import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from reconciler import upstream as upstream_module
from reconciler.errors import IntegrityError, UpstreamError
from reconciler.hostconfig import DownloadConfig
from reconciler.testing import UpstreamServer
from reconciler.upstream import Expected, Upstream

REPO_ROOT = Path(__file__).resolve().parents[1]
REPOMD = "/repodata/repomd.xml"
PACKAGE = "/Packages/pkg-1.0-1.x86_64.rpm"
GIB = 1 << 30
PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")


def _client(**kw: Any) -> Upstream:
    settings: dict[str, Any] = {"workers": 2, "retries": 2, "backoff": 0.01, "timeout": 5.0}
    return Upstream(DownloadConfig(**{**settings, **kw}))


def _fails_within(
    seconds: float, client: Upstream, call: Callable[[Upstream], object]
) -> tuple[float, BaseException]:
    """Run ``call(client)`` in a thread, then close the client there; fail unless it
    raised within ``seconds``. Returns how long it took and what it raised. A client
    stuck past that fails the test instead of hanging it (the server's teardown then
    frees the thread)."""
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            call(client)
        except BaseException as exc:  # handed to the test
            outcome.append(exc)
        finally:
            client.close()

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    elapsed = time.monotonic() - started
    assert not thread.is_alive(), f"still waiting after {elapsed:.1f}s"
    assert outcome, "the call succeeded"
    return elapsed, outcome[0]


@pytest.fixture(autouse=True)
def no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests set the proxy variables they mean; none leak in from the shell."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    root = tmp_path / "upstream"
    (root / "repodata").mkdir(parents=True)
    (root / "Packages").mkdir()
    (root / REPOMD.lstrip("/")).write_bytes(b"<repomd>" + b"x" * 3000 + b"</repomd>\n")
    (root / PACKAGE.lstrip("/")).write_bytes(os.urandom(300_000))
    return root


@pytest.fixture
def server(files: Path) -> Iterator[UpstreamServer]:
    with UpstreamServer(files) as srv:
        yield srv


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def trusted(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test CA in the CA store the client reads (as the system's would hold it)."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))


@pytest.fixture
def tls_server(files: Path, ca: trustme.CA) -> Iterator[UpstreamServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with UpstreamServer(files, tls=context) as srv:
        yield srv


def _expected(files: Path, rel: str) -> Expected:
    data = (files / rel.lstrip("/")).read_bytes()
    return Expected("sha256", hashlib.sha256(data).hexdigest(), len(data))


# -- small real TCP servers ----------------------------------------------------------


class _Listener:
    """A TCP server on 127.0.0.1 handling each connection in a thread (:meth:`handle`);
    :meth:`close` ends every connection and joins every thread."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(10)
            thread = threading.Thread(target=self._run, args=(conn,), daemon=True)
            with self._lock:
                self._conns.append(conn)
                self._threads.append(thread)
            thread.start()

    def _run(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # the client went away
            self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stop.set()
        self._acceptor.join()
        self.sock.close()
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(10)


def _read_head(conn: socket.socket, pending: bytes = b"") -> tuple[bytes, bytes]:
    """One request's head (through the blank line) and whatever came after it."""
    while b"\r\n\r\n" not in pending:
        data = conn.recv(65536)
        if not data:
            return b"", b""
        pending += data
    head, _, rest = pending.partition(b"\r\n\r\n")
    return head, rest


def _relay(a: socket.socket, b: socket.socket, stop: threading.Event) -> None:
    """Copy bytes both ways until either side closes."""
    while not stop.is_set():
        ready, _, _ = select.select([a, b], [], [], 0.1)
        for src in ready:
            data = src.recv(65536)
            if not data:
                return
            (b if src is a else a).sendall(data)


class _DripHeaders(_Listener):
    """Answers every request with a status line, then a header one byte every 0.2 s."""

    def handle(self, conn: socket.socket) -> None:
        _read_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        while not self.stop.wait(0.2):
            conn.sendall(b"x")


class _Proxy(_Listener):
    """An HTTP proxy: tunnels CONNECT, forwards absolute-form requests (keeping the
    client's connection alive), and records each request line with its headers."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lines(self) -> list[str]:
        with self._lock:
            return [line for line, _ in self.seen]

    def handle(self, conn: socket.socket) -> None:
        rest = b""
        while True:
            head, rest = _read_head(conn, rest)
            if not head:
                return
            line, *fields = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, v in (f.split(":", 1) for f in fields)}
            with self._lock:
                self.seen.append((line, headers))
            method, target, _ = line.split(" ")
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                with socket.create_connection((host, int(port)), timeout=10) as far:
                    conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    _relay(conn, far, self.stop)
                return
            self._forward(conn, method, target, headers)

    def _forward(
        self, conn: socket.socket, method: str, target: str, headers: dict[str, str]
    ) -> None:
        assert target.startswith("http://"), target
        authority, _, path = target.removeprefix("http://").partition("/")
        host, _, port = authority.partition(":")
        keep = {k: v for k, v in headers.items() if not k.startswith("proxy-")}
        keep["connection"] = "close"
        request = f"{method} /{path} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in keep.items()
        )
        with socket.create_connection((host, int(port or 80)), timeout=10) as far:
            far.sendall(request.encode("latin-1") + b"\r\n")
            while data := far.recv(65536):  # the server closes after its answer
                conn.sendall(data)


@pytest.fixture
def proxy() -> Iterator[_Proxy]:
    p = _Proxy()
    try:
        yield p
    finally:
        p.close()


# -- 1. the deadline -------------------------------------------------------------------


def test_a_body_dripped_a_byte_a_second_fails_at_the_deadline(server: UpstreamServer) -> None:
    server.drip(REPOMD, 1.0)
    url = server.url(REPOMD)
    elapsed, error = _fails_within(6.0, _client(deadline=2.0), lambda up: up.get(url))
    assert isinstance(error, UpstreamError), repr(error)
    assert str(error).startswith(f"{url}: ")
    assert "deadline" in str(error)
    assert 1.9 < elapsed < 3.5


def test_a_package_dripped_slowly_fails_at_the_deadline(
    server: UpstreamServer, files: Path, tmp_path: Path
) -> None:
    server.drip(PACKAGE, 0.1)
    url = server.url(PACKAGE)
    dest = tmp_path / "out" / "pkg.rpm"
    dest.parent.mkdir()
    elapsed, error = _fails_within(
        6.0, _client(deadline=2.0), lambda up: up.download(url, dest, _expected(files, PACKAGE))
    )
    assert isinstance(error, UpstreamError), repr(error)
    assert str(error).startswith(f"{url}: ") and "deadline" in str(error)
    assert elapsed < 3.5
    assert list(dest.parent.iterdir()) == []


def test_headers_dripped_a_byte_at_a_time_fail_at_the_deadline() -> None:
    server = _DripHeaders()
    url = f"http://127.0.0.1:{server.port}/repodata/repomd.xml"
    try:
        elapsed, error = _fails_within(6.0, _client(deadline=2.0), lambda up: up.get(url))
    finally:
        server.close()
    assert isinstance(error, UpstreamError), repr(error)
    assert str(error).startswith(f"{url}: ") and "deadline" in str(error)
    assert elapsed < 3.5


def test_the_deadline_covers_the_retries_and_their_waits(server: UpstreamServer) -> None:
    server.fail(REPOMD, 503)
    url = server.url(REPOMD)
    elapsed, error = _fails_within(
        6.0, _client(deadline=1.5, retries=10, backoff=1.0), lambda up: up.get(url)
    )
    assert isinstance(error, UpstreamError), repr(error)
    assert str(error).startswith(f"{url}: ") and "HTTP 503" in str(error)
    assert "deadline" in str(error)
    assert elapsed < 2.5


def test_a_normal_file_is_untouched_by_the_deadline(server: UpstreamServer, files: Path) -> None:
    with _client(deadline=5.0) as up:
        for _ in range(3):
            assert up.get(server.url(REPOMD)) == (files / REPOMD.lstrip("/")).read_bytes()


def test_the_defaults_are_bounded() -> None:
    config = DownloadConfig()
    assert config.deadline == 600.0
    assert config.max_metadata_bytes == 256 << 20


# -- 1. the size cap (in a child process whose address space is limited) --------------

_CHILD = r"""
import json, resource, sys, time
from reconciler.errors import ReconcilerError
from reconciler.hostconfig import DownloadConfig
from reconciler.upstream import Upstream

def vm_size():
    with open("/proc/self/status") as fh:
        return next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("VmSize:"))

url, method, settings, headroom_mib = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
limit = vm_size() + (headroom_mib << 20)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
outcome = {"error": None, "type": None}
try:
    with Upstream(DownloadConfig(**settings)) as up:
        if method == "get":
            up.get(url)
        else:
            up.get_if_changed(url, '"an-old-etag"', None)
except (ReconcilerError, MemoryError) as exc:
    outcome = {"error": str(exc), "type": type(exc).__name__}
outcome["seconds"] = time.monotonic() - started
outcome["rss_growth_mib"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
print(json.dumps(outcome))
"""


def _get_in_a_small_child(
    url: str, method: str, headroom_mib: int = 384, **settings: Any
) -> dict[str, Any]:
    settings = {"retries": 1, "backoff": 0.01, "timeout": 10.0, "deadline": 60.0, **settings}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, url, method, json.dumps(settings), str(headroom_mib)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.mark.parametrize("method", ["get", "get_if_changed"])
def test_a_content_length_of_10_gib_is_refused_before_reading(
    server: UpstreamServer, method: str
) -> None:
    server.huge(REPOMD, 10 * GIB)
    url = server.url(REPOMD)
    outcome = _get_in_a_small_child(url, method)  # the default cap: 256 MiB
    assert outcome["type"] == "UpstreamError", outcome
    assert outcome["error"].startswith(f"{url}: "), outcome
    assert str(10 * GIB) in outcome["error"] and "max_metadata_bytes" in outcome["error"]
    assert "gave up" not in outcome["error"]  # final: asking again gets the same answer
    assert outcome["seconds"] < 2, outcome
    assert outcome["rss_growth_mib"] < 32, outcome
    assert server.count(REPOMD) == 1


@pytest.mark.parametrize("method", ["get", "get_if_changed"])
def test_an_endless_body_without_a_length_is_refused_at_the_cap(
    server: UpstreamServer, method: str
) -> None:
    server.huge(REPOMD, 0)
    url = server.url(REPOMD)
    outcome = _get_in_a_small_child(url, method, max_metadata_bytes=8 << 20)
    assert outcome["type"] == "UpstreamError", outcome
    assert outcome["error"].startswith(f"{url}: "), outcome
    assert "max_metadata_bytes" in outcome["error"] and str(8 << 20) in outcome["error"]
    assert outcome["seconds"] < 5, outcome
    assert outcome["rss_growth_mib"] < 3 * 8 + 16, outcome


def test_a_package_longer_than_its_metadata_says_is_refused_before_reading(
    server: UpstreamServer, files: Path, tmp_path: Path
) -> None:
    server.huge(PACKAGE, 10 * GIB)
    url = server.url(PACKAGE)
    expected = _expected(files, PACKAGE)
    out = tmp_path / "out"
    out.mkdir()
    elapsed, error = _fails_within(
        5.0, _client(retries=1), lambda up: up.download(url, out / "pkg.rpm", expected)
    )
    assert isinstance(error, IntegrityError), repr(error)
    assert str(error).startswith(f"{url}: ") and str(10 * GIB) in str(error)
    assert elapsed < 2
    assert list(out.iterdir()) == []


def test_an_endless_package_is_cut_off_past_its_size(
    server: UpstreamServer, files: Path, tmp_path: Path
) -> None:
    server.huge(PACKAGE, 0)
    url = server.url(PACKAGE)
    expected = _expected(files, PACKAGE)
    client = _client(retries=0)
    _, error = _fails_within(
        5.0, client, lambda up: up.download(url, tmp_path / "pkg.rpm", expected)
    )
    assert client.stats.bytes < (files / PACKAGE.lstrip("/")).stat().st_size + (2 << 20)
    assert isinstance(error, IntegrityError), repr(error)
    assert "more than the expected" in str(error)


def test_a_file_of_unstated_size_is_capped_like_metadata(
    server: UpstreamServer, tmp_path: Path
) -> None:
    server.huge(PACKAGE, 0)
    url = server.url(PACKAGE)
    unsized = Expected("sha256", "0" * 64, None)
    out = tmp_path / "out"
    out.mkdir()
    client = _client(retries=0, max_metadata_bytes=4 << 20)
    _, error = _fails_within(5.0, client, lambda up: up.download(url, out / "x", unsized))
    assert client.stats.bytes < (4 << 20) + (2 << 20)
    assert isinstance(error, UpstreamError), repr(error)
    assert str(error).startswith(f"{url}: ") and "max_metadata_bytes" in str(error)
    assert list(out.iterdir()) == []


# -- 3. redirects: no downgrade --------------------------------------------------------


@pytest.mark.usefixtures("trusted")
def test_a_redirect_from_https_to_http_is_refused(
    tls_server: UpstreamServer, server: UpstreamServer
) -> None:
    tls_server.redirect("/moved/repomd.xml", server.url(REPOMD))
    url = tls_server.url("/moved/repomd.xml")
    with _client() as up, pytest.raises(UpstreamError) as err:
        up.get(url)
    assert str(err.value).startswith(f"{url}: ")
    assert "https to http" in str(err.value) and server.url(REPOMD) in str(err.value)
    assert "gave up" not in str(err.value)  # final, not retried
    assert server.requests == []


@pytest.mark.usefixtures("trusted")
def test_redirects_within_https_and_up_from_http_are_followed(
    tls_server: UpstreamServer, server: UpstreamServer, files: Path
) -> None:
    server.redirect("/up/repomd.xml", tls_server.url("/hop/repomd.xml"))
    tls_server.redirect("/hop/repomd.xml", REPOMD)
    with _client() as up:
        body = up.get(server.url("/up/repomd.xml"))
    assert body == (files / REPOMD.lstrip("/")).read_bytes()


# -- 3. the proxy variables ------------------------------------------------------------


@pytest.mark.parametrize("variable", ["http_proxy", "HTTP_PROXY"])
def test_http_goes_through_the_proxy_in_absolute_form(
    server: UpstreamServer,
    proxy: _Proxy,
    files: Path,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
) -> None:
    monkeypatch.setenv(variable, proxy.url)
    with _client() as up:
        for _ in range(2):
            assert up.get(server.url(REPOMD)) == (files / REPOMD.lstrip("/")).read_bytes()
    assert proxy.lines() == [f"GET {server.url(REPOMD)} HTTP/1.1"] * 2
    assert server.count(REPOMD) == 2


@pytest.mark.usefixtures("trusted")
@pytest.mark.parametrize("variable", ["https_proxy", "HTTPS_PROXY"])
def test_https_is_tunnelled_through_the_proxy_with_connect(
    tls_server: UpstreamServer,
    proxy: _Proxy,
    files: Path,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
) -> None:
    monkeypatch.setenv(variable, proxy.url)
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # not for https
    with _client() as up:
        for _ in range(3):
            assert up.get(tls_server.url(REPOMD)) == (files / REPOMD.lstrip("/")).read_bytes()
    assert proxy.lines() == [f"CONNECT 127.0.0.1:{tls_server.port} HTTP/1.0"]  # kept alive
    assert tls_server.count(REPOMD) == 3


def test_the_certificate_is_checked_through_the_tunnel(
    tls_server: UpstreamServer, proxy: _Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("https_proxy", proxy.url)  # the test CA is not trusted here
    url = tls_server.url(REPOMD)
    with _client() as up, pytest.raises(UpstreamError, match="TLS verification failed"):
        up.get(url)
    assert proxy.lines() == [f"CONNECT 127.0.0.1:{tls_server.port} HTTP/1.0"]


@pytest.mark.usefixtures("trusted")
def test_proxy_credentials_are_sent_to_the_proxy_only(
    server: UpstreamServer,
    tls_server: UpstreamServer,
    proxy: _Proxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("http_proxy", f"http://sig%2Fuser:p%40ss@127.0.0.1:{proxy.port}")
    monkeypatch.setenv("https_proxy", f"http://sig%2Fuser:p%40ss@127.0.0.1:{proxy.port}/")
    with _client() as up:
        up.get(server.url(REPOMD))
        up.get(tls_server.url(REPOMD))
    token = "Basic " + base64.b64encode(b"sig/user:p@ss").decode()
    assert [headers.get("proxy-authorization") for _, headers in proxy.seen] == [token, token]


@pytest.mark.parametrize(
    "no_proxy", ["127.0.0.1", "*", "example.com, 127.0.0.1", "127.0.0.0/8", ".0.0.1,127.0.0.1"]
)
@pytest.mark.parametrize("variable", ["no_proxy", "NO_PROXY"])
def test_no_proxy_sends_the_request_direct(
    server: UpstreamServer,
    proxy: _Proxy,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    no_proxy: str,
) -> None:
    monkeypatch.setenv("http_proxy", proxy.url)
    monkeypatch.setenv(variable, no_proxy)
    with _client() as up:
        up.get(server.url(REPOMD))
    assert proxy.lines() == []
    assert server.count(REPOMD) == 1


@pytest.mark.parametrize(
    ("host", "no_proxy", "bypass"),
    [
        ("example.com", "example.com", True),
        ("www.example.com", "example.com", True),
        ("www.example.com", ".example.com", True),
        ("example.com", ".example.com", True),
        ("WWW.Example.COM", "example.com.", True),
        ("www.example.com.", "example.com", True),
        ("notexample.com", "example.com", False),
        ("example.com.evil.net", "example.com", False),
        ("a.com", "b.com , a.com", True),
        ("a.com", "b.com a.com", True),
        ("a.com", "*", True),
        ("a.com", "", False),
        ("a.com", "b.com,*", False),  # curl: the wildcard is the whole value or nothing
        ("localhost", "", False),  # loopback is not special unless listed
        ("127.0.0.1", "", False),
        ("127.0.0.1", "localhost", False),
        ("10.1.2.3", "10.0.0.0/8", True),
        ("11.1.2.3", "10.0.0.0/8", False),
        ("10.1.2.3", "10.1.2.3", True),
        ("10.1.2.3", "1.2.3", False),  # no suffix matching for addresses
        ("::1", "::1", True),
        ("::1", "[::1]", True),
        ("fd00::5", "fd00::/8", True),
        ("fd00::5", "10.0.0.0/8", False),
    ],
)
def test_no_proxy_matches_as_curl_does(host: str, no_proxy: str, bypass: bool) -> None:
    assert upstream_module.bypasses_proxy(host, no_proxy) is bypass


def test_the_lower_case_variable_wins(
    server: UpstreamServer, proxy: _Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", proxy.url)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("no_proxy", "example.com")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with _client() as up:
        up.get(server.url(REPOMD))
    assert len(proxy.lines()) == 1


@pytest.mark.parametrize("value", ["socks5://127.0.0.1:1080", "https://127.0.0.1:3128"])
def test_a_proxy_the_client_cannot_use_is_a_clear_error(
    server: UpstreamServer, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("http_proxy", value)
    url = server.url(REPOMD)
    with _client() as up, pytest.raises(UpstreamError) as err:
        up.get(url)
    assert str(err.value).startswith(f"{url}: ")
    assert "http_proxy" in str(err.value) and value.partition(":")[0] in str(err.value)
    assert server.requests == []


def test_an_unreachable_proxy_is_named(
    server: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = socket.create_server(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{port}")
    url = server.url(REPOMD)
    with _client() as up, pytest.raises(UpstreamError) as err:
        up.get(url)
    assert str(err.value).startswith(f"{url}: ")
    assert f"proxy http://127.0.0.1:{port}" in str(err.value)


# -- 3. Retry-After --------------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 429])
def test_retry_after_in_seconds_is_waited_for(
    server: UpstreamServer, files: Path, status: int
) -> None:
    server.fail(REPOMD, status, times=1, retry_after="1")
    with _client() as up:  # its own backoff is 0.01 s
        assert up.get(server.url(REPOMD)) == (files / REPOMD.lstrip("/")).read_bytes()
    first, second = server.request_times
    assert 0.95 <= second - first < 3


def test_retry_after_as_an_http_date_is_waited_for(server: UpstreamServer, files: Path) -> None:
    server.fail(
        REPOMD, 503, times=1, retry_after=email.utils.formatdate(time.time() + 2, usegmt=True)
    )
    with _client() as up:
        assert up.get(server.url(REPOMD)) == (files / REPOMD.lstrip("/")).read_bytes()
    first, second = server.request_times
    assert 0.95 <= second - first < 3.5  # the date has whole seconds: 1 to 2 s from now


def test_retry_after_past_the_deadline_gives_up_at_once(server: UpstreamServer) -> None:
    server.fail(REPOMD, 503, retry_after="30")
    url = server.url(REPOMD)
    elapsed, error = _fails_within(4.0, _client(deadline=5.0), lambda up: up.get(url))
    assert isinstance(error, UpstreamError), repr(error)
    assert str(error).startswith(f"{url}: ") and "Retry-After" in str(error)
    assert elapsed < 1
    assert server.count(REPOMD) == 1


def test_retry_after_is_bounded(
    server: UpstreamServer, files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upstream_module, "MAX_RETRY_AFTER", 0.5)
    server.fail(REPOMD, 503, times=1, retry_after="3600")
    with _client(deadline=30.0) as up:
        assert up.get(server.url(REPOMD)) == (files / REPOMD.lstrip("/")).read_bytes()
    first, second = server.request_times
    assert 0.45 <= second - first < 2


@pytest.mark.parametrize("value", ["soon", "-5", ""])
def test_a_retry_after_that_means_nothing_falls_back_to_the_backoff(
    server: UpstreamServer, files: Path, value: str
) -> None:
    server.fail(REPOMD, 503, times=1, retry_after=value)
    with _client() as up:
        assert up.get(server.url(REPOMD)) == (files / REPOMD.lstrip("/")).read_bytes()
    first, second = server.request_times
    assert second - first < 0.5
