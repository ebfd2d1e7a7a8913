"""What a merge ships, end to end: ``plan --against BRANCH`` for a promotion lists the
packages it upgrades (both versions) and the advisories that arrive, computed from the
composes' ``rpms.json`` and updateinfo (real composes of the sample build system, a
real git repository), never from the published trees."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from reconciler import testing as su
from reconciler.diffing import COMPOSED_LATER, package_diffs
from reconciler.planning import Action, Plan, Verdict
from reconciler.specfile import load_host_config
from reconciler.vocabulary import ActionKind, Stage, TargetState

from .conftest import DesiredState, Upstream, git_host
from .gitrepo import DesiredRepo

UPGRADE = "upgraded sig-hello 1.0-1 -> 1.1-1 (aarch64, x86_64, src)"
DEBUG_UPGRADE = "upgraded sig-hello-debuginfo 1.0-1 -> 1.1-1 (aarch64, x86_64)"
ADVISORY = "advisory SAMPLE-sig-hello-1.1-1 (enhancement)"


@pytest.fixture
def world(
    tmp_path: Path, desired_state: DesiredState, upstream: Upstream
) -> tuple[Path, DesiredRepo]:
    config, repo = git_host(tmp_path, desired_state, upstream)
    return config, repo


@pytest.fixture
def repo(world: tuple[Path, DesiredRepo]) -> DesiredRepo:
    return world[1]


@pytest.fixture
def gitops(world: tuple[Path, DesiredRepo]) -> Path:
    return world[0]


def _staged(cli: Any, config: Path) -> str:
    rows = json.loads(cli("status", "--format", "json", "--config", config).out)
    return next(str(r["actual"]) for r in rows if r["stage"] == "staging")


def _update_upstream(upstream: Upstream) -> None:
    """sig-hello 1.0 -> 1.1 in core-common (binaries, debuginfo, source); the repo's
    updateinfo gains the advisory SAMPLE-sig-hello-1.1-1."""
    for arch in ("x86_64", "aarch64"):
        su.add_packages(
            upstream.repo_dir("core-common", arch), [su.sample_rpm(f"sig-hello-1.1-1.{arch}.rpm")]
        )
        su.add_packages(
            upstream.repo_dir("core-common", f"{arch}-debug"),
            [su.sample_rpm(f"sig-hello-debuginfo-1.1-1.{arch}.rpm")],
        )
    su.add_packages(
        upstream.repo_dir("core-common", "src"), [su.sample_rpm("sig-hello-1.1-1.src.rpm")]
    )


@pytest.fixture
def promoted(cli: Any, gitops: Path, repo: DesiredRepo, upstream: Upstream) -> tuple[str, str]:
    """Production holds the first compose; the second (sig-hello 1.1) is staged."""
    assert cli("apply", "--config", gitops).code == 0
    first = _staged(cli, gitops)
    repo.set_release(production=first)
    repo.commit(f"Promote {first}", author="Bob Builder")
    assert cli("apply", "--config", gitops).code == 0
    _update_upstream(upstream)
    assert cli("apply", "--config", gitops).code == 0
    second = _staged(cli, gitops)
    assert second != first
    return first, second


def test_a_first_plan_diffs_the_new_compose_against_nothing(cli: Any, gitops: Path) -> None:
    result = cli("plan", "--config", gitops)
    assert result.code == 2, result.err
    assert COMPOSED_LATER not in result.out
    # the compose and the staging publish of it: everything the upstream offers is added
    counts = "packages: from nothing: 10 added; 3 advisories arriving"
    assert result.out.count(counts) == 2, result.out
    assert result.out.count("added sig-hello 1.0-1 (aarch64, x86_64, src)") == 2, result.out


def test_plan_after_an_upstream_update_lists_the_upgrade_for_compose_and_staging(
    cli: Any, gitops: Path, upstream: Upstream, tmp_path: Path
) -> None:
    assert cli("apply", "--config", gitops).code == 0
    first = _staged(cli, gitops)
    _update_upstream(upstream)

    text = cli("plan", "--config", gitops)
    assert text.code == 2, text.out + text.err
    print(text.out)  # shown when the test fails
    counts = f"packages: from {first}: 2 upgraded; 1 advisory arriving"
    compose, stage = text.out.split("compose core 9")[1].split("stage (new compose) to staging")
    for part in (compose, stage):  # the compose against the newest; staging against itself
        assert counts in part and UPGRADE in part and DEBUG_UPGRADE in part and ADVISORY in part

    md = cli("plan", "--format", "markdown", "--config", gitops).out
    assert md.count(f"from {first}: 2 upgraded; 1 advisory arriving") == 4, md  # row + list
    assert md.count(f"- `{UPGRADE}`") == 2 and md.count(f"- `{ADVISORY}`") == 2, md

    saved = tmp_path / "new.plan"
    assert cli("plan", "--out", saved, "--config", gitops).code == 2
    diffs = Plan.from_json(saved.read_text()).diffs
    assert [(d.stage, d.compose_id, d.held) for d in diffs] == [
        (Stage.COMPOSE, None, first),
        (Stage.STAGING, None, first),
    ]
    assert diffs[0].repos == diffs[1].repos


def test_an_unreadable_upstream_leaves_the_new_compose_unknown_not_the_plan_failed(
    cli: Any, gitops: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging.getLogger("reconciler"), "handlers", [])
    (primary,) = (upstream.repo_dir("core-common", "x86_64") / "repodata").glob("*primary*")
    primary.write_bytes(b"not the bytes repomd.xml names")
    result = cli("plan", "--config", gitops)
    assert result.code == 2, result.out + result.err
    note = "packages: the packages of the new compose are unknown: "
    assert result.out.count(note) == 2, result.out
    assert "added sig-hello" not in result.out


def test_pull_request_plan_lists_the_upgrade_and_the_advisory(
    cli: Any, gitops: Path, repo: DesiredRepo, promoted: tuple[str, str], tmp_path: Path
) -> None:
    first, second = promoted
    repo.git("checkout", "-q", "-b", "promote")
    repo.set_release(production=second)
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", f"Promote {second}", author="Carol Checker")
    repo.git("push", "-q", "origin", "promote", author="Carol Checker")

    result = cli("plan", "--against", "promote", "--format", "markdown", "--config", gitops)
    assert result.code == 2, result.out + result.err
    md = result.out
    print(md)  # shown when the test fails
    counts = f"from {first}: 2 upgraded; 1 advisory arriving"
    assert f"| 1 | promote {second} to production (core 9) |" in md
    assert md.count(counts) == 2, "in the table row and above the list"
    assert f"- `{UPGRADE}`" in md and f"- `{DEBUG_UPGRADE}`" in md and f"- `{ADVISORY}`" in md
    assert "- core-common: 2 upgraded; 1 advisory arriving" in md
    assert "core-infra" not in md.split("**Packages**")[1], "an unchanged repo is not listed"

    text = cli("plan", "--against", "promote", "--config", gitops).out
    assert f"packages: {counts}" in text and UPGRADE in text and ADVISORY in text

    saved = tmp_path / "pr.plan"
    assert cli("plan", "--against", "promote", "--out", saved, "--config", gitops).code == 2
    (diff,) = Plan.from_json(saved.read_text()).diffs
    assert (diff.stage, diff.compose_id, diff.held) == (Stage.PRODUCTION, second, first)
    assert [c.describe() for c in diff.repos[0].changes] == [UPGRADE, DEBUG_UPGRADE]


def _promotion_plan(held: str | None, to: str) -> Plan:
    action = Action(ActionKind.PUBLISH, "core", "9", "pinned", Stage.PRODUCTION, to)
    verdict = Verdict("core", "9", Stage.PRODUCTION, TargetState.OUT_OF_SYNC, to, held, "")
    return Plan(None, "", (action,), (verdict,))


def test_the_diff_reads_the_composes_only(gitops: Path, promoted: tuple[str, str]) -> None:
    """With the published trees gone, the diff is the same: what a target holds is the
    compose the state names, and that compose's metadata."""
    first, second = promoted
    host = load_host_config(gitops)
    before = package_diffs(host, _promotion_plan(first, second))
    for root in (host.roots.staging, host.roots.production):
        shutil.rmtree(root)
    assert package_diffs(host, _promotion_plan(first, second)) == before
    assert before[0].repos and not before[0].note

    (missing,) = package_diffs(host, _promotion_plan("SIG-core-9-20200101.0", second))
    assert missing.note == "compose SIG-core-9-20200101.0 is not on disk" and not missing.repos
    (same,) = package_diffs(host, _promotion_plan(second, second))
    assert same.note.startswith("no package changes")


def test_unreadable_metadata_leaves_the_diff_unknown_not_the_plan_failed(
    gitops: Path,
    promoted: tuple[str, str],
    warnings_log: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the CLI runs before left its handler on a captured stderr that is closed by now
    monkeypatch.setattr(logging.getLogger("reconciler"), "handlers", [])
    first, second = promoted
    host = load_host_config(gitops)
    rpms = host.compose_tree("core", "9").metadata_dir(second) / "rpms.json"
    rpms.chmod(0o644)
    rpms.write_text('{"payload": {"rpms": {"CoreCommon": {"x86_64": {"x": {"not-a-nevra": {}}}}}}}')
    (diff,) = package_diffs(host, _promotion_plan(first, second))
    assert diff.note.startswith(f"the packages of {second} are unknown: rpms.json")
    assert diff.summary() == diff.note
    assert "not-a-nevra" in warnings_log.text
