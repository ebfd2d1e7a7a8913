"""``keep_versions`` in a repository with module metadata (issue 14, item 3's last part).

The choice itself (:func:`reconciler.modularity.choose_modular`, pure) by tables; the
``modules.yaml`` reader and writer (:mod:`reconciler.modulemd`) on real compressed
files; then real composes of a modular upstream made by the sample build system, read
back with real ``dnf`` (``module info``, ``install`` into an empty installroot with
signatures checked).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import createrepo_c as cr
import pytest

from reconciler import testing as su
from reconciler.errors import UpstreamError
from reconciler.layout import Variant
from reconciler.modularity import ModuleStream, choose_modular, nevra_key
from reconciler.modulemd import read_modules, write_modules
from reconciler.placement import VariantSource, choose
from reconciler.selection import PackageFact
from reconciler.vocabulary import PlacementKind, VariantKind

from .clients import dnf_install
from .conftest import DesiredState, Host, Upstream

VARIANT = Variant("core-common", "x86_64", VariantKind.BINARY)
URL = "https://build.invalid/v1/projects/p/repo/core-common/x86_64"


# -- the choice, pure -------------------------------------------------------------------------


def pkg(nevra: str) -> PackageFact:
    rest, arch = nevra.rsplit(".", 1)
    name, version, release = rest.rsplit("-", 2)
    return PackageFact(
        pkgid=f"id-{nevra}",
        checksum_type="sha256",
        name=name,
        epoch="0",
        version=version,
        release=release,
        arch=arch,
        size=100,
        href=f"Packages/{nevra}.rpm",
        sourcerpm=f"{name}-{version}-{release}.src.rpm",
    )


def stream(index: int, ns: str, version: int, *artifacts: str) -> ModuleStream:
    name, stream_name = ns.split(":")
    keys = frozenset(nevra_key(a) for a in artifacts)
    return ModuleStream(index, name, stream_name, version, "c0ffee", keys)


def chosen(packages: list[str], streams: list[ModuleStream], keep: int) -> tuple[list[str], ...]:
    source = VariantSource(VARIANT, URL, tuple(pkg(n) for n in packages))
    got = choose_modular(source, streams, keep, hashed=True)
    sel = got.selection
    assert sel.problem is None
    assert all(s.kind is PlacementKind.DROP for s in sel.dropped)
    assert {f.pkgid for f in sel.chosen} | {s.fact.pkgid for s in sel.dropped} == {
        f"id-{n}" for n in packages
    }, "every package is either taken or dropped"
    return (
        sorted(f.filename.removesuffix(".rpm") for f in sel.chosen),
        sorted(s.fact.filename.removesuffix(".rpm") for s in sel.dropped),
        [s.nsvc for s in got.dropped_streams],
    )


def test_an_older_version_of_a_stream_leaves_with_its_packages() -> None:
    streams = [
        stream(0, "hello:1", 1, "hello-1.0-1.x86_64"),
        stream(1, "hello:1", 2, "hello-1.1-1.x86_64"),
    ]
    kept, dropped, gone = chosen(["hello-1.0-1.x86_64", "hello-1.1-1.x86_64", "data-1-1.noarch"],
                                 streams, 1)  # fmt: skip
    assert kept == ["data-1-1.noarch", "hello-1.1-1.x86_64"]
    assert dropped == ["hello-1.0-1.x86_64"]
    assert gone == ["hello:1:1:c0ffee"]
    source = VariantSource(VARIANT, URL, (pkg("hello-1.0-1.x86_64"), pkg("hello-1.1-1.x86_64")))
    reason = choose_modular(source, streams, 1, True).selection.dropped[0].reason
    assert "module hello:1:1:c0ffee" in reason


def test_non_modular_builds_are_their_own_line_of_versions() -> None:
    """A plain filter drops non-modular foo-1.0 for a modular foo-2.0 that dnf hides from
    every client without the stream; here both stay, and no module document leaves."""
    packages = ["foo-1.0-1.x86_64", "foo-2.0-1.x86_64"]
    streams = [stream(0, "foo:2", 1, "foo-2.0-1.x86_64")]
    assert chosen(packages, streams, 1) == (packages, [], [])
    plain = choose(VariantSource(VARIANT, URL, tuple(pkg(n) for n in packages)), 1, True)
    assert [f.filename for f in plain.chosen] == ["foo-2.0-1.x86_64.rpm"]  # the trap


def test_an_older_stream_never_vanishes() -> None:
    packages = ["foo-1.0-1.x86_64", "foo-2.0-1.x86_64"]
    streams = [stream(0, "foo:1", 5, "foo-1.0-1.x86_64"), stream(1, "foo:2", 1, "foo-2.0-1.x86_64")]
    assert chosen(packages, streams, 1) == (packages, [], [])


def test_a_version_holding_the_newest_build_of_a_package_is_kept_whole() -> None:
    """dnf reposync's rule: the newest NEVRA of a package may be in an older version."""
    packages = ["a-1.0-1.x86_64", "a-1.1-1.x86_64", "b-2.0-1.x86_64", "b-1.0-1.x86_64"]
    streams = [
        stream(0, "m:s", 1, "a-1.0-1.x86_64", "b-2.0-1.x86_64"),
        stream(1, "m:s", 2, "a-1.1-1.x86_64", "b-1.0-1.x86_64"),
    ]
    assert chosen(packages, streams, 1) == (sorted(packages), [], [])


def test_an_artifact_a_kept_version_shares_stays() -> None:
    packages = ["a-1.0-1.x86_64", "a-1.1-1.x86_64", "b-1.0-1.x86_64"]
    streams = [
        stream(0, "m:s", 1, "a-1.0-1.x86_64", "b-1.0-1.x86_64"),
        stream(1, "m:s", 2, "a-1.1-1.x86_64", "b-1.0-1.x86_64"),
    ]
    assert chosen(packages, streams, 1) == (
        ["a-1.1-1.x86_64", "b-1.0-1.x86_64"],
        ["a-1.0-1.x86_64"],
        ["m:s:1:c0ffee"],
    )


def test_keep_versions_counts_versions_of_a_stream() -> None:
    packages = ["a-1-1.x86_64", "a-2-1.x86_64", "a-3-1.x86_64", "z-1-1.noarch", "z-2-1.noarch"]
    streams = [stream(i, "m:s", i + 1, f"a-{i + 1}-1.x86_64") for i in range(3)]
    assert chosen(packages, streams, 2) == (
        ["a-2-1.x86_64", "a-3-1.x86_64", "z-1-1.noarch", "z-2-1.noarch"],
        ["a-1-1.x86_64"],
        ["m:s:1:c0ffee"],
    )
    assert chosen(packages, streams, 0) == (sorted(packages), [], [])


def test_a_module_of_packages_elsewhere_is_left_alone() -> None:
    packages = ["z-1-1.noarch", "z-2-1.noarch"]
    streams = [stream(0, "m:s", 1, "other-1-1.x86_64"), stream(1, "m:s", 2, "other-2-1.x86_64")]
    assert chosen(packages, streams, 1) == (["z-2-1.noarch"], ["z-1-1.noarch"], [])


def test_an_unsafe_location_is_still_refused() -> None:
    bad = PackageFact("x", "sha256", "a", "0", "1", "1", "x86_64", 1, "../a-1-1.x86_64.rpm", "")
    source = VariantSource(VARIANT, URL, (bad, pkg("a-2-1.x86_64")))
    got = choose_modular(source, [stream(0, "m:s", 1, "a-2-1.x86_64")], 1, True)
    assert got.selection.problem is not None and "../a-1-1.x86_64.rpm" in got.selection.problem


def test_nevra_key_spells_out_the_epoch() -> None:
    assert nevra_key("foo-1.0-1.el9.x86_64") == "foo-0:1.0-1.el9.x86_64"
    assert nevra_key("foo-bar-2:1.0-1.noarch") == "foo-bar-2:1.0-1.noarch"
    assert nevra_key("nonsense") == "nonsense"
    assert pkg("foo-1.0-1.el9.x86_64").nevra == nevra_key("foo-1.0-1.el9.x86_64")


# -- modules.yaml, read and written -----------------------------------------------------------


def modulemd(version: int, nevra: str, stream_name: str = "1", name: str = "sig-hello") -> str:
    return textwrap.dedent(
        f"""\
        ---
        document: modulemd
        version: 2
        data:
          name: {name}
          stream: "{stream_name}"
          version: {version}
          context: 9edba152
          arch: x86_64
          summary: Sample hello module
          description: >-
            The sample hello package as a module, version {version}.
          license:
            module: [MIT]
          dependencies:
          - buildrequires: {{platform: [el9]}}
            requires: {{platform: [el9]}}
          profiles:
            default:
              rpms: [sig-hello]
          artifacts:
            rpms:
            - {nevra}
        ...
        """
    )


DEFAULTS = textwrap.dedent(
    """\
    ---
    document: modulemd-defaults
    version: 1
    data:
      module: sig-hello
      stream: "1"
      profiles:
        "1": [default]
    ...
    """
)
V1 = 9000020260101000000
V2 = 9000020260201000000
#: Two versions of the stream sig-hello:1 (1.0, then 1.1), and its defaults.
TWO_VERSIONS = (
    modulemd(V1, "sig-hello-0:1.0-1.x86_64") + modulemd(V2, "sig-hello-0:1.1-1.x86_64") + DEFAULTS
)


def compressed(path: Path, text: str, how: str) -> Path:
    data = text.encode()
    if how == "zst":
        out = path.with_name(path.name + ".zst")
        path.write_bytes(data)
        subprocess.run(["zstd", "-q", "-f", str(path), "-o", str(out)], check=True)
        return out
    packed = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress, "": bytes}[how](data)
    out = path.with_name(f"{path.name}.{how}" if how else path.name)
    out.write_bytes(packed)
    return out


@pytest.mark.parametrize("how", ["", "gz", "bz2", "xz", "zst"])
def test_read_modules_in_every_compression(tmp_path: Path, how: str) -> None:
    if how == "zst" and shutil.which("zstd") is None:
        pytest.skip("zstd is not installed")
    path = compressed(tmp_path / "modules.yaml", TWO_VERSIONS, how)
    got = read_modules(path, "https://x/modules.yaml", 1 << 20)
    assert [(s.index, s.name, s.stream, s.version) for s in got.streams] == [
        (0, "sig-hello", "1", V1),
        (1, "sig-hello", "1", V2),
    ]
    assert got.streams[0].artifacts == {"sig-hello-0:1.0-1.x86_64"}
    assert len(got.documents) == 3


@pytest.mark.parametrize("how", ["", "gz", "zst"])
def test_read_modules_refuses_more_than_the_cap_uncompressed(tmp_path: Path, how: str) -> None:
    if how == "zst" and shutil.which("zstd") is None:
        pytest.skip("zstd is not installed")
    text = TWO_VERSIONS + "# " + "x" * 100_000 + "\n"
    path = compressed(tmp_path / "modules.yaml", text, how)
    assert path.stat().st_size < 50_000 or not how
    with pytest.raises(UpstreamError, match=r"https://x/m\.yaml: .*max_metadata_bytes \(50000\)"):
        read_modules(path, "https://x/m.yaml", 50_000)
    assert read_modules(path, "https://x/m.yaml", len(text)).streams


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("--- [1, 2]\n", "document 1: not a mapping"),
        ("---\ndocument: modulemd\ndata: {stream: a}\n", "document 1: a modulemd document needs"),
        (
            "--- {a: 1}\n---\ndocument: modulemd\ndata: {name: a, stream: b, version: x}\n",
            "document 2: version 'x' is not a number",
        ),
        (
            "---\ndocument: modulemd\ndata: {name: a, stream: b, version: 1,"
            " artifacts: {rpms: x}}\n",
            "data.artifacts.rpms is not a list",
        ),
        ("---\na: [\n", "not valid YAML"),
        ("\udcff", "not UTF-8"),
    ],
)
def test_read_modules_refuses_what_it_cannot_read_naming_the_url(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "modules.yaml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(UpstreamError) as info:
        read_modules(path, "https://x/modules.yaml", 1 << 20)
    assert str(info.value).startswith("https://x/modules.yaml: ") and message in str(info.value)


def test_write_modules_keeps_the_other_documents_as_they_were(tmp_path: Path) -> None:
    source = tmp_path / "modules.yaml"
    source.write_text("# a comment\n" + TWO_VERSIONS)
    modules = read_modules(source, "https://x/m", 1 << 20)
    dest = tmp_path / "out" / "modules.yaml.gz"
    dest.parent.mkdir()
    write_modules(modules, [modules.streams[0]], dest, "https://x/m")
    text = gzip.decompress(dest.read_bytes()).decode()
    assert text == modulemd(V2, "sig-hello-0:1.1-1.x86_64") + DEFAULTS  # as written upstream
    again = tmp_path / "again.gz"
    write_modules(modules, [modules.streams[0]], again, "https://x/m")
    assert again.read_bytes() == dest.read_bytes(), "the same input gives the same bytes"


# -- real composes, read by real dnf ----------------------------------------------------------


def modular_upstream(upstream: Upstream, modules: str, *packages: str) -> None:
    """core-common/x86_64 upstream: ``packages`` (sample file names) and ``modules``."""
    rpms = [su.sample_rpm(name) for name in packages]
    su.write_repo(upstream.repo_dir("core-common", "x86_64"), rpms, extras=True, modules=modules)


def compose(cli: Any, host: Host, ds: DesiredState) -> Path:
    """Compose; the composed core-common/x86_64 repository."""
    result = cli("compose", "core", "9", "--config", host.config_path, "--desired-state", ds.path)
    assert result.code == 0, result.out + result.err
    latest = host.compose_root / "9" / "latest-SIG-core-9"
    return (latest / "compose" / "9" / "core" / "x86_64" / "core-common").resolve()


def composed_modules(repo: Path) -> str:
    (record,) = [r for r in cr.Repomd(str(repo / "repodata" / "repomd.xml")).records
                 if r.type == "modules"]  # fmt: skip
    data = (repo / record.location_href).read_bytes()
    return (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode()


def rpms_in(repo: Path) -> list[str]:
    return sorted(p.name for p in repo.glob("Packages/*/*.rpm"))


def dnf(workdir: Path, repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(
        ["dnf", "-y", f"--installroot={workdir / 'root'}", f"--setopt=cachedir={workdir / 'c'}",
         "--setopt=reposdir=/dev/null", "--setopt=module_platform_id=platform:el9",
         "--releasever=9", f"--repofrompath=t,{repo.as_uri()}", "--repo=t",
         "--setopt=t.gpgcheck=1", f"--setopt=t.gpgkey={(repo / su.SAMPLE_KEY.name).as_uri()}",
         *args],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


def installed(workdir: Path, name: str) -> str:
    out = subprocess.run(
        ["rpm", "--root", str(workdir / "root"), "-q", name],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return out.stdout.strip()


NEEDS_DNF = pytest.mark.skipif(shutil.which("dnf") is None, reason="dnf is not installed")


@NEEDS_DNF
def test_keep_versions_leaves_the_older_stream_version_out_of_modules_yaml(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream, tmp_path: Path
) -> None:
    modular_upstream(upstream, TWO_VERSIONS, "sig-hello-1.0-1.x86_64.rpm",
                     "sig-hello-1.1-1.x86_64.rpm", "sig-data-1.0-1.noarch.rpm")  # fmt: skip
    repo = compose(cli, host, desired_state)  # keep_versions: 1
    assert rpms_in(repo) == ["sig-data-1.0-1.noarch.rpm", "sig-hello-1.1-1.x86_64.rpm"]
    assert composed_modules(repo) == modulemd(V2, "sig-hello-0:1.1-1.x86_64") + DEFAULTS

    info = dnf(tmp_path / "info", repo, "module", "info", "sig-hello")
    assert info.returncode == 0, info.stdout + info.stderr
    assert str(V2) in info.stdout and str(V1) not in info.stdout, info.stdout
    got = dnf_install(tmp_path / "install", repo.as_uri(), repo / su.SAMPLE_KEY.name, "sig-hello")
    assert got.returncode == 0, got.stdout + got.stderr
    assert installed(tmp_path / "install", "sig-hello") == "sig-hello-1.1-1.x86_64"


def test_keep_versions_0_carries_modules_yaml_as_it_is(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream
) -> None:
    modular_upstream(upstream, TWO_VERSIONS, "sig-hello-1.0-1.x86_64.rpm",
                     "sig-hello-1.1-1.x86_64.rpm")  # fmt: skip
    desired_state.write(compose={"keep_versions": 0, "hashed": True})
    repo = compose(cli, host, desired_state)
    assert rpms_in(repo) == ["sig-hello-1.0-1.x86_64.rpm", "sig-hello-1.1-1.x86_64.rpm"]
    assert composed_modules(repo) == TWO_VERSIONS


@NEEDS_DNF
def test_a_non_modular_package_is_not_dropped_for_a_modular_one(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream, tmp_path: Path
) -> None:
    """sig-hello 1.0 is non-modular, 1.1 is in the stream sig-hello:2 (no default): dnf
    hides 1.1 from a client that did not enable the stream, so 1.0 must stay."""
    modular_upstream(upstream, modulemd(V1, "sig-hello-0:1.1-1.x86_64", stream_name="2"),
                     "sig-hello-1.0-1.x86_64.rpm", "sig-hello-1.1-1.x86_64.rpm")  # fmt: skip
    repo = compose(cli, host, desired_state)  # keep_versions: 1
    assert rpms_in(repo) == ["sig-hello-1.0-1.x86_64.rpm", "sig-hello-1.1-1.x86_64.rpm"]
    got = dnf_install(tmp_path / "plain", repo.as_uri(), repo / su.SAMPLE_KEY.name, "sig-hello")
    assert got.returncode == 0, got.stdout + got.stderr
    assert installed(tmp_path / "plain", "sig-hello") == "sig-hello-1.0-1.x86_64"
    got = dnf(tmp_path / "module", repo, "module", "install", "sig-hello:2/default")
    assert got.returncode == 0, got.stdout + got.stderr
    assert installed(tmp_path / "module", "sig-hello") == "sig-hello-1.1-1.x86_64"


def test_an_unchanged_modular_repo_keeps_its_filtered_metadata(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream
) -> None:
    """The filtered modules file is the same bytes each time: the repo keeps its repodata."""
    modular_upstream(upstream, TWO_VERSIONS, "sig-hello-1.0-1.x86_64.rpm",
                     "sig-hello-1.1-1.x86_64.rpm")  # fmt: skip
    first = compose(cli, host, desired_state)
    second = compose(cli, host, desired_state)
    assert first != second
    repomd = Path("repodata/repomd.xml")
    assert (first / repomd).stat().st_ino == (second / repomd).stat().st_ino


def test_a_modules_file_that_cannot_be_read_stops_a_filtering_compose(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Upstream
) -> None:
    modular_upstream(upstream, "--- [not, a, module]\n", "sig-hello-1.0-1.x86_64.rpm",
                     "sig-hello-1.1-1.x86_64.rpm")  # fmt: skip
    result = cli("compose", "core", "9", "--config", host.config_path,
                 "--desired-state", desired_state.path)  # fmt: skip
    assert result.code == 1
    assert "core-common/x86_64/repodata/" in result.err and "modules.yaml.gz" in result.err
    assert "document 1: not a mapping" in result.err
    desired_state.write(compose={"keep_versions": 0, "hashed": True})  # not read: carried
    assert compose(cli, host, desired_state).is_dir()
