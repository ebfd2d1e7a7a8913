"""The sample upstream is real: real RPMs, createrepo_c metadata, HTTP, dnf."""

from __future__ import annotations

import hashlib
import http.client
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import createrepo_c as cr
import httpx
import pytest

from reconciler import testing as su

from .clients import dnf_install

PROJECT = "proj-0001"
REPOS = {"core-common": list(su.ARCHES), "core-infra": ["x86_64", "riscv64"]}
ARCH_REPO = f"/{PROJECT}/repo/core-common/x86_64"
REPOMD = f"{ARCH_REPO}/repodata/repomd.xml"
HELLO = f"{ARCH_REPO}/Packages/sig-hello-1.0-1.x86_64.rpm"

# The sample sets: 3 arch-specific builds x 4 arches x (binary + debuginfo),
# one noarch package, and 4 source RPMs.
EXPECTED_FILES = 3 * 4 * 2 + 1 + 4


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("upstream")
    su.build_upstream(root, PROJECT, REPOS, extras_for=["core-common"])
    return root


@pytest.fixture
def server(upstream: Path) -> Iterator[su.UpstreamServer]:
    with su.UpstreamServer(upstream) as srv:
        yield srv


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=5) as c:
        yield c


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def packages_in(repo_dir: Path) -> dict[str, cr.Package]:
    """Packages of a local repository's metadata, by location_href."""
    md = cr.Metadata()
    md.locate_and_load_xml(str(repo_dir))
    keys: list[str] = md.keys()
    return {md.get(key).location_href: md.get(key) for key in keys}


# --- the bundled RPMs --------------------------------------------------------


def test_sample_sets_hold_the_same_files() -> None:
    names = {s: [p.name for p in su.sample_rpms(s)] for s in ("unsigned", "signed", "otherkey")}
    assert len(names["signed"]) == EXPECTED_FILES
    assert names["unsigned"] == names["signed"] == names["otherkey"]
    assert "sig-hello-debuginfo-1.1-1.s390x.rpm" in names["signed"]
    assert "sig-data-1.0-1.noarch.rpm" in names["signed"]
    assert su.SAMPLE_KEY.read_text().startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert su.OTHER_KEY.is_file()
    total = sum(p.stat().st_size for p in (su.SAMPLES_DIR / "rpms").rglob("*.rpm"))
    assert total < 2_000_000
    with pytest.raises(ValueError, match="unknown sample RPM set"):
        su.sample_rpms("nope")  # type: ignore[arg-type]


def test_sample_rpm_names_parse() -> None:
    rpm = su.SampleRpm.parse(su.sample_rpm("sig-hello-debuginfo-1.1-1.aarch64.rpm"))
    assert (rpm.name, rpm.version, rpm.release, rpm.arch) == (
        "sig-hello-debuginfo",
        "1.1",
        "1",
        "aarch64",
    )
    assert rpm.is_debug and not rpm.is_source
    assert su.SampleRpm.parse(su.sample_rpm("sig-tools-2.0-1.src.rpm")).is_source
    with pytest.raises(ValueError, match="not an RPM"):
        su.SampleRpm.parse(Path("README.md"))


@pytest.mark.skipif(shutil.which("rpmkeys") is None, reason="rpmkeys not installed")
@pytest.mark.parametrize(
    ("rpm_set", "expected_ok"),
    [("signed", True), ("otherkey", False), ("unsigned", None)],
)
def test_signatures_checked_by_rpmkeys(
    tmp_path: Path, rpm_set: su.RpmSet, expected_ok: bool | None
) -> None:
    subprocess.run(
        ["rpmkeys", "--dbpath", str(tmp_path), "--import", str(su.SAMPLE_KEY)], check=True
    )
    rpm = su.sample_rpm("sig-hello-1.0-1.x86_64.rpm", rpm_set)
    result = subprocess.run(
        ["rpmkeys", "--dbpath", str(tmp_path), "--checksig", str(rpm)],
        capture_output=True,
        text=True,
        check=False,
    )
    if expected_ok is None:
        assert result.stdout.strip().endswith(": digests OK")
    elif expected_ok:
        assert result.returncode == 0
        assert result.stdout.strip().endswith(": digests signatures OK")
    else:
        assert result.returncode != 0
        assert "SIGNATURES NOT OK" in result.stdout


# --- the layout and the metadata ---------------------------------------------


def test_layout_of_the_build_system(upstream: Path) -> None:
    repo = upstream / PROJECT / "repo"
    assert sorted(p.name for p in (repo / "core-common").iterdir()) == sorted(
        [*su.ARCHES, *(f"{a}-debug" for a in su.ARCHES), "src"]
    )

    def files(path: Path) -> list[str]:
        return sorted(p.name for p in (path / "Packages").iterdir())

    assert files(repo / "core-common" / "s390x") == [
        "sig-data-1.0-1.noarch.rpm",
        "sig-hello-1.0-1.s390x.rpm",
        "sig-tools-2.0-1.s390x.rpm",
    ]
    assert files(repo / "core-common" / "s390x-debug") == [
        "sig-hello-debuginfo-1.0-1.s390x.rpm",
        "sig-tools-debuginfo-2.0-1.s390x.rpm",
    ]
    assert files(repo / "core-common" / "src") == [
        "sig-data-1.0-1.src.rpm",
        "sig-hello-1.0-1.src.rpm",
        "sig-tools-2.0-1.src.rpm",
    ]
    # an arch without sample builds gets the noarch packages only
    assert files(repo / "core-infra" / "riscv64") == ["sig-data-1.0-1.noarch.rpm"]
    assert files(repo / "core-infra" / "riscv64-debug") == []
    assert set(su.iter_repo_dirs(repo / "core-infra")) == {
        repo / "core-infra" / d
        for d in ("x86_64", "x86_64-debug", "riscv64", "riscv64-debug", "src")
    }


def test_metadata_matches_the_packages(upstream: Path) -> None:
    repo_dir = upstream / PROJECT / "repo" / "core-common" / "aarch64"
    pkgs = packages_in(repo_dir)
    assert sorted(pkgs) == [
        "Packages/sig-data-1.0-1.noarch.rpm",
        "Packages/sig-hello-1.0-1.aarch64.rpm",
        "Packages/sig-tools-2.0-1.aarch64.rpm",
    ]
    for href, pkg in pkgs.items():
        data = (repo_dir / href).read_bytes()
        assert pkg.pkgId == sha256(data)
        assert pkg.size_package == len(data)
        assert pkg.requires == [] and pkg.changelogs
    repomd = cr.Repomd(str(repo_dir / "repodata" / "repomd.xml"))
    assert {r.type for r in repomd.records} == {
        "primary",
        "filelists",
        "other",
        "group",
        "group_gz",
        "updateinfo",
        "modules",
    }
    for record in repomd.records:
        assert record.location_href.startswith(f"repodata/{record.checksum}-")
        assert sha256((repo_dir / record.location_href).read_bytes()) == record.checksum
    updateinfo_path = repo_dir / repomd["updateinfo"].location_href
    advisories = cr.UpdateInfo(str(updateinfo_path)).updates
    assert [a.id for a in advisories] == [
        "SAMPLE-sig-data-1.0-1",
        "SAMPLE-sig-hello-1.0-1",
        "SAMPLE-sig-tools-2.0-1",
    ]
    # extras only where asked for
    plain = cr.Repomd(str(upstream / PROJECT / "repo/core-infra/x86_64/repodata/repomd.xml"))
    assert {r.type for r in plain.records} == {"primary", "filelists", "other"}


def test_include_filter_and_sets(tmp_path: Path) -> None:
    su.build_upstream(
        tmp_path,
        "p",
        {"r": ["x86_64"]},
        rpm_set="otherkey",
        include=lambda repo, path: path.name.startswith("sig-hello"),
    )
    repo_dir = tmp_path / "p/repo/r/x86_64"
    assert sorted(packages_in(repo_dir)) == [
        "Packages/sig-hello-1.0-1.x86_64.rpm",
        "Packages/sig-hello-1.1-1.x86_64.rpm",
    ]
    served = repo_dir / "Packages/sig-hello-1.1-1.x86_64.rpm"
    assert served.read_bytes() == su.sample_rpm(served.name, "otherkey").read_bytes()
    assert served.stat().st_ino != su.sample_rpm(served.name, "otherkey").stat().st_ino
    with pytest.raises(ValueError, match="unsafe path component"):
        su.build_upstream(tmp_path, "../escape", {"r": ["x86_64"]})


def test_upstream_update_regenerates_metadata(tmp_path: Path) -> None:
    su.build_upstream(tmp_path, "p", {"r": ["x86_64"]}, extras_for=["r"])
    repo_dir = tmp_path / "p/repo/r/x86_64"
    before = {p.name for p in (repo_dir / "repodata").iterdir()}

    su.add_packages(repo_dir, [su.sample_rpm("sig-hello-1.1-1.x86_64.rpm")])
    after = {p.name for p in (repo_dir / "repodata").iterdir()}
    assert "Packages/sig-hello-1.1-1.x86_64.rpm" in packages_in(repo_dir)
    repomd = cr.Repomd(str(repo_dir / "repodata" / "repomd.xml"))
    assert "updateinfo" in repomd  # extras kept
    # exactly the files repomd.xml names, nothing stale, no temporary files
    assert after == {"repomd.xml"} | {Path(r.location_href).name for r in repomd.records}
    assert before & after >= {"repomd.xml"}
    assert before != after
    assert not list(repo_dir.glob("*.~tmp~")) and not list(repo_dir.rglob("*.~tmp~"))

    su.remove_packages(repo_dir, ["sig-hello-1.0-1.x86_64.rpm"])
    assert sorted(packages_in(repo_dir)) == [
        "Packages/sig-data-1.0-1.noarch.rpm",
        "Packages/sig-hello-1.1-1.x86_64.rpm",
        "Packages/sig-tools-2.0-1.x86_64.rpm",
    ]
    assert not (repo_dir / "Packages/sig-hello-1.0-1.x86_64.rpm").exists()

    su.write_repo(repo_dir, [su.sample_rpm("sig-data-1.0-1.noarch.rpm")])
    assert sorted(packages_in(repo_dir)) == ["Packages/sig-data-1.0-1.noarch.rpm"]
    assert sorted(p.name for p in (repo_dir / "Packages").iterdir()) == [
        "sig-data-1.0-1.noarch.rpm"
    ]
    assert len(list((repo_dir / "repodata").iterdir())) == 4  # no extras now


# --- the HTTP server -----------------------------------------------------------


def test_repomd_and_packages_over_http(
    server: su.UpstreamServer, client: httpx.Client, tmp_path: Path
) -> None:
    """Mirror one repo over HTTP, verifying every checksum, and read it back."""
    assert server.base_url.startswith("http://127.0.0.1:")
    response = client.get(server.base_url + REPOMD)
    assert response.status_code == 200
    mirror = tmp_path / "mirror"
    (mirror / "repodata").mkdir(parents=True)
    (mirror / "repodata" / "repomd.xml").write_bytes(response.content)
    repomd = cr.Repomd(str(mirror / "repodata" / "repomd.xml"))
    for record in repomd.records:
        data = client.get(f"{server.base_url}{ARCH_REPO}/{record.location_href}").content
        assert sha256(data) == record.checksum and len(data) == record.size
        (mirror / record.location_href).write_bytes(data)
    pkgs = packages_in(mirror)
    assert sorted(p.name for p in pkgs.values()) == ["sig-data", "sig-hello", "sig-tools"]
    for href, pkg in pkgs.items():
        data = client.get(f"{server.base_url}{ARCH_REPO}/{href}").content
        assert sha256(data) == pkg.pkgId
    assert server.count("repomd.xml") == 1
    assert server.count(".rpm") == 3
    assert server.count(lambda p: "/repodata/" in p) == 1 + len(repomd.records)
    server.reset_counts()
    assert server.requests == []


def test_conditional_requests_and_head(server: su.UpstreamServer, client: httpx.Client) -> None:
    first = client.get(server.base_url + REPOMD)
    etag, last_modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert client.get(server.base_url + REPOMD, headers={"If-None-Match": etag}).status_code == 304
    assert (
        client.get(server.base_url + REPOMD, headers={"If-None-Match": '"other"'}).status_code
        == 200
    )
    since = {"If-Modified-Since": last_modified}
    assert client.get(server.base_url + REPOMD, headers=since).status_code == 304
    old = {"If-Modified-Since": "Thu, 01 Jan 2015 00:00:00 GMT"}
    assert client.get(server.base_url + REPOMD, headers=old).status_code == 200
    head = client.head(server.base_url + HELLO)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["Content-Length"]) == (server.root / HELLO.lstrip("/")).stat().st_size
    assert server.methods[-1] == "HEAD"


def test_not_found_and_path_traversal(
    server: su.UpstreamServer, client: httpx.Client, upstream: Path, tmp_path: Path
) -> None:
    assert client.get(server.base_url + "/nope.rpm").status_code == 404
    assert client.get(server.base_url + ARCH_REPO).status_code == 404  # directories
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    link = upstream / "escape.txt"
    link.symlink_to(secret)
    try:
        assert client.get(server.base_url + "/escape.txt").status_code == 404
    finally:
        link.unlink()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        for raw in (
            "/../secret.txt",
            f"/{PROJECT}/%2e%2e/%2e%2e/secret.txt",
            "/..%2fsecret.txt",
            "//etc/passwd",
            f"/{PROJECT}/repo/core-common/x86_64/repodata/..%5c..%5crepomd.xml",
        ):
            conn.request("GET", raw)
            response = conn.getresponse()
            assert (response.status, response.read()) == (404, b"not found\n"), raw
    finally:
        conn.close()


def test_fail(server: su.UpstreamServer, client: httpx.Client) -> None:
    server.fail(REPOMD, 503)
    assert [client.get(server.base_url + REPOMD).status_code for _ in range(2)] == [503, 503]
    server.clear_faults()
    assert client.get(server.base_url + REPOMD).status_code == 200


def test_fail_times(server: su.UpstreamServer, client: httpx.Client) -> None:
    server.fail(HELLO.lstrip("/"), 500, times=2)  # a leading slash is optional
    codes = [client.get(server.base_url + HELLO).status_code for _ in range(3)]
    assert codes == [500, 500, 200]
    assert server.count(HELLO) == 3


def test_truncate_drops_the_connection(server: su.UpstreamServer, client: httpx.Client) -> None:
    server.truncate(HELLO, 100)
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(server.base_url + HELLO)
    # a streaming reader sees the full length announced and 100 bytes arrive
    got = bytearray()
    with (
        pytest.raises(httpx.TransportError),
        client.stream("GET", server.base_url + HELLO) as response,
    ):
        assert int(response.headers["Content-Length"]) > 100
        for chunk in response.iter_raw():
            got += chunk
    assert len(got) == 100
    server.clear_faults()
    assert client.get(server.base_url + HELLO).status_code == 200


def test_corrupt(server: su.UpstreamServer, client: httpx.Client) -> None:
    good = client.get(server.base_url + HELLO).content
    server.corrupt(HELLO, times=1)
    assert client.head(server.base_url + HELLO).status_code == 200  # does not use it up
    bad = client.get(server.base_url + HELLO)
    assert bad.status_code == 200
    assert len(bad.content) == len(good) and bad.content != good
    assert client.get(server.base_url + HELLO).content == good


def test_delay(server: su.UpstreamServer) -> None:
    server.delay(REPOMD, 2.0, times=1)
    with httpx.Client(trust_env=False, timeout=0.2) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            impatient.get(server.base_url + REPOMD)
        assert impatient.get(server.base_url + REPOMD).status_code == 200


def test_concurrent_requests_are_all_counted(server: su.UpstreamServer) -> None:
    def fetch() -> None:
        with httpx.Client(trust_env=False, timeout=5) as c:
            for _ in range(10):
                assert c.get(server.base_url + HELLO).status_code == 200

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert server.count(HELLO) == 80


def test_shutdown_leaves_no_threads(upstream: Path) -> None:
    before = set(threading.enumerate())
    srv = su.UpstreamServer(upstream)
    with srv:
        # a keep-alive connection left open must not keep the server alive
        lingering = httpx.Client(trust_env=False, timeout=5)
        assert lingering.get(srv.base_url + REPOMD).status_code == 200
    assert set(threading.enumerate()) == before
    lingering.close()
    with pytest.raises(RuntimeError):
        _ = srv.base_url


# --- real clients ----------------------------------------------------------------


@pytest.mark.skipif(shutil.which("dnf") is None, reason="dnf not installed")
def test_dnf_installs_from_the_server(server: su.UpstreamServer, tmp_path: Path) -> None:
    result = dnf_install(tmp_path, server.base_url + ARCH_REPO, su.SAMPLE_KEY, "sig-hello")
    assert result.returncode == 0, result.stderr
    installed = tmp_path / "root/usr/share/sig-hello/hello.txt"
    assert installed.read_text() == "hello 1.0-1 on x86_64\n"
    assert server.count(HELLO) >= 1


@pytest.mark.skipif(shutil.which("dnf") is None, reason="dnf not installed")
def test_dnf_refuses_packages_signed_by_another_key(tmp_path: Path) -> None:
    repo_dir = tmp_path / "repo"
    su.write_repo(repo_dir, [su.sample_rpm("sig-data-1.0-1.noarch.rpm", "otherkey")])
    result = dnf_install(tmp_path, repo_dir.as_uri(), su.SAMPLE_KEY, "sig-data")
    assert result.returncode != 0
    assert "GPG check FAILED" in result.stdout + result.stderr
    assert not (tmp_path / "root/usr/share/sig-data").exists()
