"""The GitOps core end to end: a real git repository, the HTTP fixture upstream, real trees."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from reconciler import testing as su

from .conftest import DesiredState, Upstream, tree_digest, write_host_config
from .gitrepo import DesiredRepo

SIG_DIR = "mirror/pub/sig/9/core"


@pytest.fixture
def repo(tmp_path: Path, desired_state: DesiredState) -> DesiredRepo:
    desired_state.write(production=None, staging="latest")
    r = DesiredRepo(tmp_path / "git", desired_state.path)
    r.commit("Add SIG core", author="Alice Admin")
    return r


@pytest.fixture
def gitops(tmp_path: Path, repo: DesiredRepo, upstream: Upstream) -> Path:
    root = tmp_path / "host"
    root.mkdir()
    return write_host_config(
        root,
        upstream.server.base_url,
        git={"url": str(repo.server), "branch": "main", "path": "desired-state"},
    )


def status(cli: Any, config: Path) -> dict[str, dict[str, Any]]:
    result = cli("status", "--format", "json", "--config", config)
    assert result.code == 0, result.err
    rows = json.loads(result.out)
    for row in rows:
        assert {"sig", "release", "stage", "desired", "actual", "state", "reason"} <= set(row)
    return {row["stage"]: row for row in rows if (row["sig"], row["release"]) == ("core", "9")}


def published_repomd(config: Path, stage: str) -> bytes:
    root = config.parent / stage
    return (root / SIG_DIR / "x86_64/core-common/repodata/repomd.xml").read_bytes()


def compose_repomd(config: Path, compose_id: str) -> bytes:
    return (
        config.parent
        / "compose/9"
        / compose_id
        / "compose/9/core"
        / "x86_64/core-common/repodata/repomd.xml"
    ).read_bytes()


def test_end_to_end(cli: Any, gitops: Path, repo: DesiredRepo, upstream: Upstream) -> None:
    # a new SIG: plan lists a compose and a staging sync
    result = cli("plan", "--config", gitops)
    assert result.code == 2, result.out + result.err
    assert "compose core 9" in result.out and "stage (new compose) to staging" in result.out
    assert cli("apply", "--config", gitops).code == 0
    assert cli("plan", "--config", gitops).code == 0
    st = status(cli, gitops)
    first = st["staging"]["actual"]
    assert st["staging"]["state"] == "Synced" and first.startswith("SIG-core-9-")
    assert st["compose"]["actual"] == first
    assert published_repomd(gitops, "staging") == compose_repomd(gitops, first)

    # pin production to the first compose (Bob)
    repo.set_release(production=first)
    pin1 = repo.commit(f"Promote {first}", author="Bob Builder")
    assert cli("apply", "--config", gitops).code == 0
    assert status(cli, gitops)["production"]["actual"] == first
    assert published_repomd(gitops, "production") == compose_repomd(gitops, first)

    # the upstream changes: a new compose, and staging follows latest
    su.add_packages(
        upstream.repo_dir("core-common", "x86_64"), [su.sample_rpm("sig-hello-1.1-1.x86_64.rpm")]
    )
    result = cli("plan", "--config", gitops)
    assert result.code == 2 and "upstream changed" in result.out
    assert cli("apply", "--config", gitops).code == 0
    st = status(cli, gitops)
    second = st["staging"]["actual"]
    assert second != first and st["production"]["actual"] == first
    assert published_repomd(gitops, "staging") == compose_repomd(gitops, second)

    # Carol promotes the second compose
    repo.set_release(production=second)
    pin2 = repo.commit(f"Promote {second}", author="Carol Checker")
    assert cli("apply", "--config", gitops).code == 0
    production = status(cli, gitops)["production"]
    assert production["actual"] == second
    # the reason says what is true now, not what the plan saw before the promotion
    assert production["reason"] == f"production pinned to {second}; {second} is published"
    assert published_repomd(gitops, "production") == compose_repomd(gitops, second)

    history = json.loads(cli("history", "--format", "json", "--config", gitops).out)
    promotions = [h for h in history if h["action"] == "publish" and h["stage"] == "production"]
    assert [(h["compose_id"], h["revision"], h["author"]) for h in reversed(promotions)] == [
        (first, pin1, "Bob Builder <bob@example.org>"),
        (second, pin2, "Carol Checker <carol@example.org>"),
    ]
    assert all(h["result"] == "ok" for h in history)
    assert any(h["author"] == "Alice Admin <alice@example.org>" for h in history)
    # who and what started each action: the promotions are commits of their authors; the
    # second compose (and staging it) was the upstream's doing, not Bob's (HEAD's author)
    assert [(h["trigger"], h["actor"]) for h in promotions] == [
        ("commit", "Carol Checker <carol@example.org>"),
        ("commit", "Bob Builder <bob@example.org>"),
    ]
    by_upstream = [h for h in history if h["compose_id"] == second and h["stage"] != "production"]
    assert {(h["action"], h["trigger"], h["actor"]) for h in by_upstream} == {
        ("compose", "upstream", "upstream build system"),
        ("publish", "upstream", "upstream build system"),
    }

    # revert Carol's pin: the first compose is promoted back (rollback)
    revert = repo.revert(pin2, author="Dave Ops")
    result = cli("plan", "--config", gitops)
    assert result.code == 2 and f"promote {first} to production" in result.out
    assert cli("apply", "--config", gitops).code == 0
    st = status(cli, gitops)
    assert st["production"]["actual"] == first and st["production"]["state"] == "Synced"
    assert published_repomd(gitops, "production") == compose_repomd(gitops, first)
    last = json.loads(cli("history", "--format", "json", "--config", gitops).out)[0]
    assert (last["compose_id"], last["revision"], last["author"]) == (
        first,
        revert,
        "Dave Ops <dave@example.org>",
    )
    assert cli("plan", "--config", gitops).code == 0
    # both composes are kept: one in production, one staged and previous production
    assert {first, second} <= {p.name for p in (gitops.parent / "compose/9").iterdir()}


def test_pull_request_plan_against_a_branch(
    cli: Any, gitops: Path, repo: DesiredRepo, capsys: Any
) -> None:
    assert cli("apply", "--config", gitops).code == 0
    staged = status(cli, gitops)["staging"]["actual"]
    main_sha = repo.git("rev-parse", "HEAD")
    repo.git("checkout", "-q", "-b", "promote")
    repo.set_release(production=staged)
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", f"Promote {staged}", author="Bob Builder")
    repo.git("push", "-q", "origin", "promote", author="Bob Builder")
    before = sorted(p.name for p in (gitops.parent / "compose/9").iterdir())
    result = cli("plan", "--against", "promote", "--format", "markdown", "--config", gitops)
    assert result.code == 2, result.out + result.err
    assert result.out.startswith("### Reconciler plan at `")
    assert f"| 1 | promote {staged} to production (core 9) | production pinned to {staged}" in (
        result.out
    )
    print(result.out)
    # nothing was touched: no tree, and the branch is not what the reconciler follows
    assert not (gitops.parent / "production").exists()
    assert sorted(p.name for p in (gitops.parent / "compose/9").iterdir()) == before
    rows = json.loads(cli("status", "--format", "json", "--config", gitops).out)
    assert rows[0]["source"]["revision"] == main_sha
    assert cli("plan", "--config", gitops).code == 0
    # a branch that skips staging shows the gate in the comment
    repo.set_release(production="SIG-core-9-20200101.0")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "Pin a missing compose", author="Bob Builder")
    repo.git("push", "-q", "origin", "promote", author="Bob Builder")
    result = cli("plan", "--against", "origin/promote", "--format", "markdown", "--config", gitops)
    assert result.code == 1, "a blocked promotion fails the gate"
    assert "**Blocked or failed**" in result.out and "does not exist" in result.out


def test_saved_plans_are_applied_or_refused_when_stale(
    cli: Any, gitops: Path, repo: DesiredRepo, upstream: Upstream, tmp_path: Path
) -> None:
    first = tmp_path / "first.plan"
    assert cli("plan", "--out", first, "--config", gitops).code == 2
    assert json.loads(first.read_text())["revision"] == repo.git("rev-parse", "HEAD")
    assert cli("apply", first, "--config", gitops).code == 0
    assert status(cli, gitops)["staging"]["state"] == "Synced"

    # the upstream changes after the plan was saved: the observed digest differs
    stale = tmp_path / "stale.plan"
    su.add_packages(
        upstream.repo_dir("core-common", "x86_64"), [su.sample_rpm("sig-hello-1.1-1.x86_64.rpm")]
    )
    assert cli("plan", "--out", stale, "--config", gitops).code == 2
    su.remove_packages(upstream.repo_dir("core-common", "x86_64"), ["sig-hello-1.1-1.x86_64.rpm"])
    result = cli("apply", stale, "--config", gitops)
    assert result.code == 1 and "stale plan" in result.err

    # a new commit after the plan was saved: the revision differs
    repo.set_release(staging=None)
    new = repo.commit("Stop managing staging")
    result = cli("apply", stale, "--config", gitops)
    assert result.code == 1 and "stale plan" in result.err and new in result.err
    (tmp_path / "garbage.plan").write_text("{not json")
    result = cli("apply", tmp_path / "garbage.plan", "--config", gitops)
    assert result.code == 1 and "not a readable plan" in result.err


def test_an_unchanged_upstream_costs_one_conditional_request_per_repo(
    cli: Any, gitops: Path, repo: DesiredRepo, upstream: Upstream
) -> None:
    from reconciler.state import StateDB

    assert cli("apply", "--config", gitops).code == 0
    with StateDB.open(gitops.parent / "state") as state:
        urls = [
            f"{upstream.server.base_url}{upstream.path(r, a, 'repodata/repomd.xml')}"
            for r, a in [("core-common", "x86_64"), ("core-infra", "src")]
        ]
        before = [state.sources.upstream_cache(u) for u in urls]
    assert all(before)
    upstream.server.reset_counts()
    assert cli("plan", "--config", gitops).code == 0
    requests = upstream.server.requests
    assert len(requests) == 8 and all(p.endswith("/repodata/repomd.xml") for p in requests)
    with StateDB.open(gitops.parent / "state") as state:
        assert [state.sources.upstream_cache(u) for u in urls] == before, (
            "answered 304: cache untouched"
        )


def _state_bytes(config: Path) -> dict[str, str]:
    state_dir = config.parent / "state"
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(state_dir.glob("state.db*"))
    }


def test_plan_changes_nothing_even_when_drift_is_due_and_the_upstream_changed(
    cli: Any, tmp_path: Path, repo: DesiredRepo, upstream: Upstream
) -> None:
    """Observing is read-only: ``plan`` leaves the state database and every root as they
    were, byte for byte, while what it saw (a new upstream revision, drift) is real and
    recorded by the next ``apply``."""
    from reconciler.state import StateDB

    root = tmp_path / "host"
    root.mkdir()
    config = write_host_config(
        root,
        upstream.server.base_url,
        git={"url": str(repo.server), "branch": "main", "path": "desired-state"},
        drift_interval=1,
        drift="report",
    )
    assert cli("apply", "--config", config).code == 0
    url = upstream.server.base_url + upstream.path("core-common", "x86_64", "repodata/repomd.xml")
    with StateDB.open(root / "state") as state:
        checked = state.sources.drift_checked_at()
        validators = state.sources.upstream_cache(url)
    assert checked is not None and validators is not None
    # the world changes: a new package upstream, a stray file in the staging tree
    su.add_packages(
        upstream.repo_dir("core-common", "x86_64"), [su.sample_rpm("sig-hello-1.1-1.x86_64.rpm")]
    )
    (root / "staging" / SIG_DIR / "stray.txt").write_text("not published by the reconciler\n")
    time.sleep(1.1)  # the drift interval has passed
    before_state = _state_bytes(config)
    before_roots = {name: tree_digest(root / name) for name in ("compose", "staging", "production")}

    result = cli("plan", "--config", config)
    assert result.code == 2, result.out + result.err
    assert "compose core 9" in result.out, "it saw the upstream change"

    assert _state_bytes(config) == before_state, "plan wrote to the state database"
    for name, digest in before_roots.items():
        assert tree_digest(root / name) == digest, f"plan changed the {name} tree"
    # what plan saw, the next apply records: a drift check, the upstream's new validators
    assert cli("apply", "--config", config).code in (0, 1)
    with StateDB.open(root / "state") as state:
        assert (state.sources.drift_checked_at() or checked) > checked
        renewed = state.sources.upstream_cache(url)
        assert renewed is not None and renewed.sha256 != validators.sha256


def test_compose_by_hand_on_a_host_where_no_pass_has_run(cli: Any, gitops: Path) -> None:
    """``reconciler compose`` fetched nothing itself and failed with "state/checkout: not
    a directory" before the first pass; it checks out the desired state on its own now,
    and the history says a person did it."""
    import getpass

    result = cli("compose", "core", "9", "--config", gitops)
    assert result.code == 0, result.out + result.err
    assert result.out.startswith("FINISHED SIG-core-9-")
    (entry,) = json.loads(cli("history", "--format", "json", "--config", gitops).out)
    assert (entry["action"], entry["result"], entry["trigger"]) == ("compose", "ok", "manual")
    assert entry["actor"] == getpass.getuser()
    assert entry["compose_id"] == result.out.split()[1]
