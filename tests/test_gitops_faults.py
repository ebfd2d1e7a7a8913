"""GitOps bad input and faults: each is reported clearly and never applies something wrong."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from reconciler import testing as su
from reconciler.facts import TargetKey
from reconciler.state import StateDB
from reconciler.vocabulary import Stage

from .conftest import Upstream, reconciler_process, wait_until, write_host_config
from .gitrepo import DesiredRepo
from .test_gitops import compose_repomd, published_repomd, status


@pytest.fixture
def repo(tmp_path: Path, desired_state: Any) -> DesiredRepo:
    desired_state.write(production=None, staging="latest")
    r = DesiredRepo(tmp_path / "git", desired_state.path)
    r.commit("Add SIG core")
    return r


def host_config(tmp_path: Path, repo: DesiredRepo, upstream: Upstream, **git: Any) -> Path:
    root = tmp_path / "host"
    root.mkdir(exist_ok=True)
    return write_host_config(
        root, upstream.server.base_url, git={"url": str(repo.server), "branch": "main", **git}
    )


@pytest.fixture
def config(tmp_path: Path, repo: DesiredRepo, upstream: Upstream) -> Path:
    return host_config(tmp_path, repo, upstream)


def problems(cli: Any, config: Path) -> list[str]:
    rows = json.loads(cli("status", "--format", "json", "--config", config).out)
    return list(rows[0]["source"]["problems"]) if rows else []


def test_invalid_spec_keeps_the_last_good_revision(
    cli: Any, config: Path, repo: DesiredRepo
) -> None:
    good = repo.git("rev-parse", "HEAD")
    assert cli("apply", "--config", config).code == 0
    repos = repo.release()["repos"]
    repos["core-infra"]["arches"].append("mips")
    repo.set_release(repos=repos)
    text = repo.sig_file.read_text()
    bad = repo.commit("Break it")
    result = cli("apply", "--config", config)
    assert result.code == 1
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "mips" in t)
    assert f"InvalidSpec at {bad[:12]}" in result.out
    assert f"sigs/core.yaml:{line}: " in result.out and "unknown arch 'mips'" in result.out
    found = problems(cli, config)
    assert any(f"sigs/core.yaml:{line}" in p for p in found), found
    rows = json.loads(cli("status", "--format", "json", "--config", config).out)
    assert rows[0]["source"]["revision"] == good
    history = json.loads(cli("history", "--format", "json", "--config", config).out)
    assert all(h["revision"] == good for h in history), "nothing applied from the bad revision"


def test_production_pin_that_does_not_exist_is_blocked(
    cli: Any, config: Path, repo: DesiredRepo
) -> None:
    assert cli("apply", "--config", config).code == 0
    repo.set_release(production="SIG-core-9-20200101.0")
    repo.commit("Pin a compose that never existed")
    result = cli("apply", "--config", config)
    assert result.code == 1
    assert "Blocked: core 9 production: compose SIG-core-9-20200101.0 does not exist" in result.out
    row = status(cli, config)["production"]
    assert row["state"] == "Blocked" and row["actual"] is None
    assert not (config.parent / "production").exists() or not any(
        (config.parent / "production").rglob("*.rpm")
    )


def test_production_pin_to_a_doomed_compose_is_blocked(
    cli: Any, config: Path, repo: DesiredRepo, upstream: Upstream
) -> None:
    assert cli("apply", "--config", config).code == 0
    su.add_packages(
        upstream.repo_dir("core-common", "x86_64"), [su.sample_rpm("sig-hello-1.1-1.x86_64.rpm")]
    )
    upstream.server.fail(
        upstream.path("core-common", "x86_64", "Packages/sig-hello-1.1-1.x86_64.rpm"), 404
    )
    result = cli("apply", "--config", config)
    assert result.code == 1 and "DOOMED" in result.out
    doomed = sorted(p.name for p in (config.parent / "compose/9").glob("SIG-*"))[-1]
    assert (config.parent / "compose/9" / doomed / "STATUS").read_text() == "DOOMED\n"
    repo.set_release(production=doomed)
    repo.commit("Pin the doomed compose")
    assert cli("apply", "--config", config).code == 1
    row = status(cli, config)["production"]
    assert row["state"] == "Blocked" and "is DOOMED" in row["reason"]
    assert status(cli, config)["compose"]["state"] == "Failed"


def test_promotion_that_skips_staging_is_blocked(cli: Any, config: Path, repo: DesiredRepo) -> None:
    repo.set_release(staging=None)
    repo.commit("No staging")
    assert cli("apply", "--config", config).code == 0
    compose = sorted(p.name for p in (config.parent / "compose/9").glob("SIG-*"))[-1]
    repo.set_release(production=compose)
    repo.commit("Straight to production")
    assert cli("apply", "--config", config).code == 1
    row = status(cli, config)["production"]
    assert row["state"] == "Blocked" and "has not been staged" in row["reason"]


def test_unreachable_remote_keeps_working_from_the_last_good_revision(
    cli: Any, config: Path, repo: DesiredRepo
) -> None:
    assert cli("apply", "--config", config).code == 0
    repo.server.rename(repo.server.with_name("moved.git"))
    result = cli("plan", "--config", config)
    assert result.code == 1, "the newest desired state is unknown: an error"
    assert "SourceUnavailable" in result.out and str(repo.server) in result.out
    assert not problems(cli, config), "plan records nothing in the state"
    result = cli("apply", "--config", config)
    assert result.code == 1, "a source problem fails the apply"
    assert any("SourceUnavailable" in p for p in problems(cli, config))
    assert status(cli, config)["staging"]["state"] == "Synced"


def test_force_pushed_branch_is_refused(cli: Any, config: Path, repo: DesiredRepo) -> None:
    repo.set_release(staging=None)
    repo.commit("Second commit")
    assert cli("apply", "--config", config).code == 0
    applied = repo.git("rev-parse", "HEAD")
    rewritten = repo.force_push_rewrite(author="Mallory")
    result = cli("apply", "--config", config)
    assert result.code == 1
    assert "SourceRejected" in result.out and "rewritten" in result.out
    assert rewritten[:12] in result.out
    rows = json.loads(cli("status", "--format", "json", "--config", config).out)
    assert rows[0]["source"]["revision"] == applied


def ssh_key(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(path)], check=True
    )
    return path


def test_verify_head_refuses_unsigned_and_wrongly_signed_heads(
    cli: Any, tmp_path: Path, repo: DesiredRepo, upstream: Upstream
) -> None:
    good_key, other_key = ssh_key(tmp_path / "good"), ssh_key(tmp_path / "other")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"release@example.org {good_key.with_suffix('.pub').read_text()}")
    config = host_config(tmp_path, repo, upstream, verify="head", allowed_signers=str(allowed))
    result = cli("apply", "--config", config)  # the first commit is unsigned
    assert result.code == 1 and "SourceRejected" in result.err + result.out
    repo.set_release(suspend=False)
    signed = repo.commit("Signed", sign_key=good_key)
    assert cli("apply", "--config", config).code == 0
    repo.set_release(staging=None)
    unsigned = repo.commit("Unsigned change")
    result = cli("apply", "--config", config)
    assert result.code == 1 and "no signature" in result.out and unsigned[:12] in result.out
    repo.set_release(staging="latest")
    wrong = repo.commit("Signed by someone else", sign_key=other_key)
    result = cli("apply", "--config", config)
    assert result.code == 1 and wrong[:12] in result.out
    rows = json.loads(cli("status", "--format", "json", "--config", config).out)
    assert rows[0]["source"]["revision"] == signed


HOLD_LOCK = """
import sys, time
from pathlib import Path
from reconciler.locking import exclusive_lock
from reconciler.vocabulary import Stage
with exclusive_lock(Path(sys.argv[1]), "test"):
    print("locked", flush=True)
    time.sleep(30)
"""


def test_concurrent_apply_fails_fast(cli: Any, config: Path, repo: DesiredRepo) -> None:
    lock = config.parent / "state" / "apply.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        result = cli("apply", "--config", config)
        assert time.monotonic() - started < 5
        assert result.code == 1 and f"pid {holder.pid}" in result.err
    finally:
        holder.kill()
        holder.communicate()
    assert cli("apply", "--config", config).code == 0


def test_corrupt_state_database_is_a_clear_error_and_can_be_rebuilt(
    cli: Any, config: Path, repo: DesiredRepo
) -> None:
    assert cli("apply", "--config", config).code == 0
    staged = status(cli, config)["staging"]["actual"]
    db = config.parent / "state" / "state.db"
    for extra in ("state.db-wal", "state.db-shm"):
        (config.parent / "state" / extra).unlink(missing_ok=True)
    db.write_bytes(os.urandom(8192))
    # a file nobody published: the rebuilt state must not take it for the reconciler's
    stray = config.parent / "staging/mirror/pub/sig/9/core/x86_64/core-common/ops-note.txt"
    stray.write_text("left by a person\n")
    result = cli("status", "--config", config)
    assert result.code == 1 and str(db) in result.err and "reconciler state rebuild" in result.err
    result = cli("state", "rebuild", "--config", config)
    assert result.code == 0, result.err
    assert f"core 9 staging: holds {staged}" in result.out
    assert list((config.parent / "state").glob("state.db.damaged-*")), "the damaged file is kept"
    with StateDB.open(config.parent / "state") as state:
        # the rebuilt inventory is the tree as found (pending deletions were lost with the
        # database): the next publish there compares everything, not a compose's changes
        assert state.targets.is_publishing(TargetKey(Stage.STAGING, "core", "9"))
        rel = "mirror/pub/sig/9/core/x86_64/core-common/ops-note.txt"
        assert rel not in state.inventory.entries(Stage.STAGING)
        assert rel in state.unmanaged.entries(Stage.STAGING)
    assert cli("plan", "--config", config).code == 0
    assert cli("apply", "--config", config).code == 0
    with StateDB.open(config.parent / "state") as state:
        assert rel not in {p.relpath for p in state.pending.all(Stage.STAGING)}
    assert stray.read_text() == "left by a person\n"


def test_missing_state_database_is_a_clear_error(cli: Any, config: Path, repo: DesiredRepo) -> None:
    assert cli("apply", "--config", config).code == 0
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (config.parent / "state" / name).unlink(missing_ok=True)
    result = cli("apply", "--config", config)
    assert result.code == 1 and "missing" in result.err and "state rebuild" in result.err


def test_kill_9_mid_apply_then_the_next_pass_completes(
    cli: Any, config: Path, repo: DesiredRepo, upstream: Upstream
) -> None:
    assert cli("apply", "--config", config).code == 0
    first = status(cli, config)["staging"]["actual"]
    before = published_repomd(config, "staging")
    su.add_packages(
        upstream.repo_dir("core-common", "x86_64"), [su.sample_rpm("sig-hello-1.1-1.x86_64.rpm")]
    )
    path = upstream.path("core-common", "x86_64", "Packages/sig-hello-1.1-1.x86_64.rpm")
    upstream.server.delay(path, 10.0, times=1)
    proc = reconciler_process("apply", "--config", config, stderr=subprocess.DEVNULL)
    wait_until(lambda: path in upstream.server.requests, proc, "the compose's download")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert published_repomd(config, "staging") == before, "nothing published was lost"
    result = cli("apply", "--config", config)
    assert result.code == 0, result.out + result.err
    row = status(cli, config)["staging"]
    assert row["state"] == "Synced" and row["actual"] != first
    assert published_repomd(config, "staging") == compose_repomd(config, row["actual"])
    history = json.loads(cli("history", "--format", "json", "--config", config).out)
    assert any(h["result"] == "failed" and h["error"] == "interrupted" for h in history)
    assert cli("plan", "--config", config).code == 0


def test_plan_exits_1_when_an_observation_failed(
    cli: Any, config: Path, repo: DesiredRepo, upstream: Upstream
) -> None:
    """With the upstream unreachable, ``plan`` printed "nothing to do" and a Failed
    target, and exited 0: a CI gate on the plan passed. plan, apply and the markdown
    plan agree now: an error."""
    assert cli("apply", "--config", config).code == 0
    upstream.server.stop()
    result = cli("plan", "--config", config)
    assert result.code == 1, result.out
    assert "Failed - cannot read the upstream" in result.out
    assert result.out.rstrip().endswith("(exit 1)")
    markdown = cli("plan", "--format", "markdown", "--config", config)
    assert markdown.code == 1
    assert "**Blocked or failed**" in markdown.out and "cannot read the upstream" in markdown.out
    assert "(exit 1)" in markdown.out
    assert cli("apply", "--config", config).code == 1
