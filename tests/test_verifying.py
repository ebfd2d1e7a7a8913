"""verifying: real repos (sample RPMs, createrepo_c metadata) checked as a client would."""

from __future__ import annotations

import os
from pathlib import Path

import createrepo_c as cr
import pytest

from reconciler import testing as su
from reconciler.verifying import Problem, VerifyReport, find_repos, verify_repo, verify_tree

X86 = [p for p in su.sample_rpms("signed") if p.name.endswith((".x86_64.rpm", ".noarch.rpm"))]
HELLO = "sig-hello-1.0-1.x86_64.rpm"


def make_repo(repo: Path, rpms: list[Path] = X86, *, extras: bool = False) -> Path:
    su.write_repo(repo, rpms, extras=extras)
    return repo


def records(repo: Path) -> dict[str, Path]:
    """``record type -> file`` of a repo's repomd.xml."""
    repomd = cr.Repomd(str(repo / "repodata" / "repomd.xml"))
    return {r.type: repo / r.location_href for r in repomd.records}


def paths(problems: list[Problem] | tuple[Problem, ...]) -> list[str]:
    return [p.path for p in problems]


def flip_byte(path: Path, offset: int) -> None:
    """Corrupt one byte in place (same size)."""
    with path.open("r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "tree" / "core-common" / "x86_64", extras=True)


# -- consistent repos -----------------------------------------------------------------


def test_consistent_tree_verifies_full_and_quick(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    make_repo(tree / "core-common" / "x86_64", extras=True)
    make_repo(tree / "core-common" / "x86_64-debug", [p for p in X86 if "debuginfo" in p.name])
    make_repo(tree / "core-infra" / "source" / "tree", su.sample_rpms("signed")[:3])

    for quick in (False, True):
        report = verify_tree(tree, quick=quick, workers=2)
        assert report == VerifyReport(repos=3, packages=len(X86) + 3 + 3, problems=())
        assert report.ok


def test_consistent_repo_has_no_problems(repo: Path) -> None:
    assert verify_repo(repo) == []
    assert verify_repo(repo, quick=True) == []


def test_root_itself_is_a_repo(repo: Path) -> None:
    assert find_repos(repo) == [repo]
    assert verify_tree(repo).repos == 1


def test_find_repos_skips_repodata_packages_tmp_and_symlinks(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    a = make_repo(tree / "a", X86[:1])
    b = make_repo(tree / "b" / "nested", X86[:1])
    # Repos hidden where a client never looks for one.
    make_repo(a / "Packages" / "inner", X86[:1])
    make_repo(a / "repodata" / "inner", X86[:1])
    make_repo(tree / "c.~tmp~", X86[:1])
    (tree / "link").symlink_to(a, target_is_directory=True)
    outside = make_repo(tmp_path / "outside", X86[:1])
    (tree / "elsewhere").symlink_to(outside, target_is_directory=True)

    assert find_repos(tree) == [a, b]


def test_missing_root_is_a_problem(tmp_path: Path) -> None:
    report = verify_tree(tmp_path / "nope")
    assert not report.ok
    assert paths(report.problems) == [str(tmp_path / "nope")]


def test_problem_str() -> None:
    assert str(Problem("/a/b.rpm", "missing")) == "/a/b.rpm: missing"


# -- packages -------------------------------------------------------------------------


def test_deleted_package(repo: Path) -> None:
    victim = repo / "Packages" / HELLO
    victim.unlink()
    for quick in (False, True):
        problems = verify_repo(repo, quick=quick)
        assert paths(problems) == [str(victim)]
        assert "missing" in problems[0].message


def test_truncated_package(repo: Path) -> None:
    victim = repo / "Packages" / HELLO
    size = victim.stat().st_size
    os.truncate(victim, size - 10)
    for quick in (False, True):
        problems = verify_repo(repo, quick=quick)
        assert paths(problems) == [str(victim)]
        assert f"size {size - 10}" in problems[0].message
        assert str(size) in problems[0].message


def test_same_size_corruption_caught_by_full_missed_by_quick(repo: Path) -> None:
    victim = repo / "Packages" / HELLO
    flip_byte(victim, victim.stat().st_size // 2)
    problems = verify_repo(repo)
    assert paths(problems) == [str(victim)]
    assert "sha256" in problems[0].message
    assert verify_repo(repo, quick=True) == []


def test_package_that_is_not_a_regular_file(repo: Path) -> None:
    victim = repo / "Packages" / HELLO
    victim.unlink()
    victim.symlink_to(su.sample_rpm(HELLO))  # same bytes, but a mirror copies a link
    problems = verify_repo(repo)
    assert paths(problems) == [str(victim)]
    assert "symlink" in problems[0].message


def test_package_href_escaping_through_symlinked_dir(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", X86[:2])
    real = tmp_path / "real-packages"
    (repo / "Packages").rename(real)
    (repo / "Packages").symlink_to(real, target_is_directory=True)
    problems = verify_repo(repo)
    assert sorted(paths(problems)) == sorted(str(repo / "Packages" / p.name) for p in X86[:2])
    assert all("leaves the repository" in p.message for p in problems)


def test_package_href_with_dotdot(tmp_path: Path) -> None:
    """Metadata naming ``../x.rpm`` (written with createrepo_c) is refused, not followed."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (tmp_path / "x.rpm").write_bytes(su.sample_rpm(HELLO).read_bytes())  # would exist
    good = repo / "Packages" / "sig-data-1.0-1.noarch.rpm"
    good.parent.mkdir()
    good.write_bytes(su.sample_rpm(good.name).read_bytes())

    writer = cr.RepositoryWriter(str(repo), num_packages=2, compression=cr.GZ_COMPRESSION)
    writer.add_pkg(cr.package_from_rpm(str(tmp_path / "x.rpm"), location_href="../x.rpm"))
    writer.add_pkg(cr.package_from_rpm(str(good), location_href="Packages/" + good.name))
    writer.finish()

    primary = records(repo)["primary"]
    for quick in (False, True):
        problems = verify_repo(repo, quick=quick)
        assert paths(problems) == [str(primary)]
        assert "unsafe href '../x.rpm'" in problems[0].message
        assert "sig-hello" in problems[0].message
    assert verify_tree(tmp_path).packages == 2


# -- metadata ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["primary", "filelists", "updateinfo", "group"])
def test_missing_metadata_file(repo: Path, kind: str) -> None:
    victim = records(repo)[kind]
    victim.unlink()
    problems = verify_repo(repo, quick=True)
    assert paths(problems) == [str(victim)]
    assert "missing" in problems[0].message


@pytest.mark.parametrize("kind", ["primary", "other", "modules", "group"])
def test_corrupted_metadata_file(repo: Path, kind: str) -> None:
    victim = records(repo)[kind]
    flip_byte(victim, victim.stat().st_size - 3)  # same size, inside the data
    problems = verify_repo(repo, quick=True)
    assert set(paths(problems)) == {str(victim)}
    assert "repomd.xml says" in problems[0].message


def test_truncated_metadata_file_reports_size(repo: Path) -> None:
    victim = records(repo)["other"]
    os.truncate(victim, 10)
    problems = verify_repo(repo)
    assert paths(problems) == [str(victim)]
    assert problems[0].message.startswith("size 10, repomd.xml says")


@pytest.mark.parametrize("garbage", [b"", b"garbage<<<", b"\x1f\x8b\x08\x00 not xml"])
def test_repomd_garbage(repo: Path, garbage: bytes) -> None:
    repomd = repo / "repodata" / "repomd.xml"
    repomd.write_bytes(garbage)
    report = verify_tree(repo.parent)
    assert paths(report.problems) == [str(repomd)]
    assert "not a valid repomd.xml" in report.problems[0].message
    assert (report.repos, report.packages) == (1, 0)


def test_repomd_without_records(repo: Path) -> None:
    repomd = repo / "repodata" / "repomd.xml"
    repomd.write_text('<?xml version="1.0"?><repomd xmlns="http://linux.duke.edu/metadata/repo"/>')
    assert [str(p) for p in verify_repo(repo)] == [f"{repomd}: no primary record"]


def test_metadata_href_escaping(repo: Path) -> None:
    repomd_path = repo / "repodata" / "repomd.xml"
    text = repomd_path.read_text()
    other = records(repo)["other"].name
    repomd_path.write_text(text.replace(f"repodata/{other}", f"../../{other}"))
    problems = verify_repo(repo)
    assert [str(p) for p in problems] == [f"{repomd_path}: other: unsafe href '../../{other}'"]


def test_unparsable_primary_with_matching_checksum(tmp_path: Path) -> None:
    """A primary that is what repomd.xml says but not XML: reported, not raised."""
    repo = make_repo(tmp_path / "repo", X86[:1])
    bad = repo / "repodata" / "primary.xml"
    bad.write_text("<metadata><package>")
    record = cr.RepomdRecord("primary", str(bad))
    record.fill(cr.SHA256)
    repomd = cr.Repomd()
    repomd.set_record(record)
    (repo / "repodata" / "repomd.xml").write_text(repomd.xml_dump())
    problems = verify_repo(repo)
    assert paths(problems) == [str(bad)]
    assert "cannot parse primary metadata" in problems[0].message


def test_several_problems_all_reported(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    one = make_repo(tree / "one", extras=True)
    two = make_repo(tree / "two", X86[:3])
    fine = make_repo(tree / "three", X86[:2])

    deleted = one / "Packages" / HELLO
    deleted.unlink()
    truncated = one / "Packages" / "sig-tools-2.0-1.x86_64.rpm"
    os.truncate(truncated, 100)
    corrupted = one / "Packages" / "sig-data-1.0-1.noarch.rpm"
    flip_byte(corrupted, 200)
    bad_meta = records(one)["updateinfo"]
    flip_byte(bad_meta, 20)
    gone_meta = records(two)["filelists"]
    gone_meta.unlink()
    garbage = two.parent / "four" / "repodata" / "repomd.xml"
    make_repo(garbage.parent.parent, X86[:1])
    garbage.write_text("<repomd")

    report = verify_tree(tree, workers=3)
    assert report.repos == 4
    assert report.packages == len(X86) + 3 + 2
    assert sorted(paths(report.problems)) == sorted(
        str(p) for p in (deleted, truncated, corrupted, bad_meta, gone_meta, garbage)
    )
    # Problems come in repo order (sorted), whatever the thread timing.
    repo_of = [Path(p).relative_to(tree).parts[0] for p in paths(report.problems)]
    assert repo_of == sorted(repo_of) == ["four"] + ["one"] * 4 + ["two"]
    assert verify_repo(fine) == []

    quick = verify_tree(tree, quick=True)
    assert str(corrupted) not in paths(quick.problems)
    assert len(quick.problems) == len(report.problems) - 1


# -- verify --drift: drift fails it, unmanaged paths are only reported ----------------


def test_the_drift_report_counts_unmanaged_files_apart_and_they_fail_nothing() -> None:
    from datetime import UTC, datetime

    from reconciler.facts import DriftFinding, TargetKey
    from reconciler.state import UnmanagedSummary
    from reconciler.verifying import drift_report
    from reconciler.vocabulary import DriftKind, Stage

    prod, staging = TargetKey(Stage.PRODUCTION, "core", "9"), TargetKey(Stage.STAGING, "core", "9")
    examples = tuple(f"mirror/pub/sig/9/core/x86_64/core-common/f{i}" for i in range(5))
    found = {prod: (), staging: ()}
    unmanaged = {
        prod: UnmanagedSummary(7, 1234, examples, datetime.now(UTC)),
        staging: UnmanagedSummary(0, 0, (), datetime.now(UTC)),
    }
    report = drift_report(found, unmanaged)
    assert report.ok, "unmanaged files are not drift"
    assert report.lines == (
        "core 9 production: no drift",
        "  unmanaged (kept, not drift): 7 file(s), 1234 bytes",
        *(f"    {e}" for e in examples),
        "    ... and 2 more",
        "core 9 staging: no drift",
    )
    gone = DriftFinding("mirror/pub/sig/9/core/x86_64/core-common/repodata/repomd.xml",
                        DriftKind.MISSING)  # fmt: skip
    report = drift_report({prod: (gone,), staging: ()}, {})
    assert not report.ok
    assert report.lines == (
        "core 9 production: 1 path(s) drifted",
        f"  missing: {gone.path}",
        "core 9 staging: no drift",
    )
