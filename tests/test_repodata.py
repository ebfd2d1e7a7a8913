"""Repository metadata through createrepo_c, on real repositories of the sample RPMs:
reading what a build system serves, and writing a compose's repo from it with the
placement's hrefs (no RPM is read again)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import createrepo_c as cr
import pytest

from reconciler import repodata
from reconciler import testing as su
from reconciler.errors import UpstreamError
from reconciler.layout import Variant
from reconciler.placement import VariantSource, choose
from reconciler.vocabulary import VariantKind

NAMES = ["sig-data-1.0-1.noarch.rpm", "sig-hello-1.0-1.x86_64.rpm", "sig-hello-1.1-1.x86_64.rpm"]


@pytest.fixture(scope="module")
def upstream_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repodata") / "core-common" / "x86_64"
    su.write_repo(repo, [su.sample_rpm(n) for n in NAMES], extras=True)
    return repo


def _records(repo: Path) -> dict[str, repodata.MetaFile]:
    repomd = repo / "repodata" / "repomd.xml"
    return {r.type: r for r in repodata.parse_repomd(repomd, str(repomd))}


def test_repomd_records_name_the_metadata_with_checksums(upstream_repo: Path) -> None:
    records = _records(upstream_repo)
    assert {"primary", "filelists", "other", "updateinfo", "modules"} <= set(records)
    assert {"group", "group_gz"} & set(records)
    primary = records["primary"]
    data = (upstream_repo / primary.href).read_bytes()
    assert primary.checksum == hashlib.new(primary.checksum_type, data).hexdigest()
    assert primary.size == len(data)
    assert primary.plain_name == "primary.xml.gz"  # the checksum prefix removed
    assert set(repodata.CARRIED_TYPES) & set(records) >= {"updateinfo", "modules"}


def test_primary_gives_one_fact_per_package(upstream_repo: Path) -> None:
    primary = upstream_repo / _records(upstream_repo)["primary"].href
    facts = {f.filename: f for f in repodata.scan_primary(primary, "primary")}
    assert sorted(facts) == NAMES
    for name, fact in facts.items():
        rpm = su.sample_rpm(name).read_bytes()
        assert fact.pkgid == hashlib.sha256(rpm).hexdigest()
        assert (fact.checksum_type, fact.size, fact.href) == (
            "sha256",
            len(rpm),
            f"Packages/{name}",
        )
    hello = facts["sig-hello-1.1-1.x86_64.rpm"]
    assert (hello.name, hello.epoch, hello.version, hello.release, hello.arch) == (
        "sig-hello", "0", "1.1", "1", "x86_64",
    )  # fmt: skip
    assert hello.sourcerpm == "sig-hello-1.1-1.src.rpm"
    assert repodata.repo_index(upstream_repo) == {f.pkgid: f for f in facts.values()}


def test_facts_share_the_strings_packages_have_in_common(upstream_repo: Path) -> None:
    """Memory at 100,000 packages: each fact had its own copy of its name, arch, epoch,
    checksum type and source RPM, where a repository repeats a few of each."""
    primary = upstream_repo / _records(upstream_repo)["primary"].href
    facts = {f.filename: f for f in repodata.scan_primary(primary, "primary")}
    old, new = facts["sig-hello-1.0-1.x86_64.rpm"], facts["sig-hello-1.1-1.x86_64.rpm"]
    for field in ("name", "arch", "epoch", "checksum_type", "release"):
        assert getattr(old, field) is getattr(new, field), field
    assert facts["sig-data-1.0-1.noarch.rpm"].checksum_type is old.checksum_type


def test_a_composed_repo_lists_the_chosen_packages_at_their_new_hrefs(
    upstream_repo: Path, tmp_path: Path
) -> None:
    records = _records(upstream_repo)
    primary = upstream_repo / records["primary"].href
    facts = repodata.scan_primary(primary, "primary")
    variant = Variant("core-common", "x86_64", VariantKind.BINARY)
    selection = choose(VariantSource(variant, "u", tuple(facts)), 1, hashed=True)
    assert len(selection.hrefs) == 2  # sig-hello 1.0 dropped
    extras = [
        (t, upstream_repo / records[t].href) for t in ("updateinfo", "modules") if t in records
    ]
    out = tmp_path / "composed"
    out.mkdir()
    packages = repodata.iter_packages(
        primary,
        upstream_repo / records["filelists"].href,
        upstream_repo / records["other"].href,
    )
    written = repodata.write_repo(out, packages, selection.hrefs, extras, "1700000000")
    assert written == 2
    index = repodata.repo_index(out)
    assert {f.pkgid: f.href for f in index.values()} == selection.hrefs
    assert {f.href for f in index.values()} == {
        "Packages/s/sig-data-1.0-1.noarch.rpm",
        "Packages/s/sig-hello-1.1-1.x86_64.rpm",
    }
    repomd = cr.Repomd(str(out / "repodata" / "repomd.xml"))
    assert repomd.revision == "1700000000"
    assert {"primary", "filelists", "other", "updateinfo", "modules"} <= {
        r.type for r in repomd.records
    }


def test_a_missing_repo_has_no_index_and_a_bad_repomd_is_an_upstream_error(
    tmp_path: Path,
) -> None:
    assert repodata.repo_index(tmp_path) == {}
    bad = tmp_path / "repomd.xml"
    bad.write_text("<not repomd")
    with pytest.raises(UpstreamError, match=r"not a valid repomd\.xml"):
        repodata.parse_repomd(bad, "https://build.invalid/repomd.xml")
    empty = tmp_path / "empty-repomd.xml"
    empty.write_text(
        '<?xml version="1.0"?>\n<repomd xmlns="http://linux.duke.edu/metadata/repo">'
        "<revision>1</revision></repomd>\n"
    )
    with pytest.raises(UpstreamError, match="no primary record"):
        repodata.parse_repomd(empty, "https://build.invalid/repomd.xml")
