"""The signature gate end to end: a release whose named key file is missing from keys/
composes and stages, but production is Blocked until the SIG says
``signatures: {check: false, reason: ...}`` (real git, the sample build system, real trees)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import DesiredState, Upstream, write_host_config
from .gitrepo import DesiredRepo

KEY = "RPM-GPG-KEY-Rocky-SIG-Core"
NOTE = f"packages not verified: keys/{KEY} is missing"
WHY_OFF = "the SIG's key is not published yet (ticket 42)"
SIG_DIR = "mirror/pub/sig/9/core"


@pytest.fixture
def repo(tmp_path: Path, desired_state: DesiredState) -> DesiredRepo:
    # the toolkit's way: the SIG's real key named, every version kept, signatures.check
    # at its default (on) and compose.check_signatures following it
    desired_state.write(gpg_keys=[KEY], compose={"hashed": True, "keep_versions": 0})
    assert not (desired_state.path / "keys" / KEY).exists()
    r = DesiredRepo(tmp_path / "git", desired_state.path)
    r.commit("Add SIG core, naming its key")
    return r


@pytest.fixture
def config(tmp_path: Path, repo: DesiredRepo, upstream: Upstream) -> Path:
    root = tmp_path / "host"
    root.mkdir()
    git = {"url": str(repo.server), "branch": "main", "path": "desired-state"}
    return write_host_config(root, upstream.server.base_url, git=git)


def status(cli: Any, config: Path) -> dict[str, dict[str, Any]]:
    result = cli("status", "--format", "json", "--config", config)
    assert result.code == 0, result.err
    return {row["stage"]: row for row in json.loads(result.out)}


def test_a_missing_key_blocks_production_until_the_check_is_turned_off(
    cli: Any, config: Path, repo: DesiredRepo
) -> None:
    # a named key missing from keys/ is not a validation error
    assert cli("validate", repo.work / "desired-state").code == 0

    # compose and stage as before; the plan says the packages go unverified
    planned = cli("plan", "--config", config)
    assert planned.code == 2, planned.out + planned.err
    assert "compose core 9" in planned.out and NOTE in planned.out
    applied = cli("apply", "--config", config)
    assert applied.code == 0, applied.out + applied.err
    st = status(cli, config)
    compose_id = st["compose"]["actual"]
    assert compose_id and compose_id.startswith("SIG-core-9-")
    compose_dir = config.parent / "compose" / "9" / compose_id
    assert (compose_dir / "STATUS").read_text() == "FINISHED\n"
    assert st["staging"]["state"] == "Synced" and st["staging"]["actual"] == compose_id
    for stage in ("compose", "staging"):
        assert NOTE in st[stage]["reason"], st[stage]
    staged = config.parent / "staging" / SIG_DIR / "x86_64/core-common/repodata/repomd.xml"
    assert staged.is_file()

    # pin production: Blocked, naming the missing key and the way out; plan and apply exit 1
    repo.set_release(production=compose_id)
    repo.commit(f"Promote {compose_id}")
    planned = cli("plan", "--config", config)
    assert planned.code == 1, planned.out + planned.err
    assert f"core 9 production: Blocked - {NOTE}" in planned.out
    assert cli("apply", "--config", config).code == 1
    st = status(cli, config)
    production = st["production"]
    assert (production["state"], production["actual"]) == ("Blocked", None)
    assert production["desired"] == compose_id
    assert NOTE in production["reason"]
    assert "add the key file to desired-state/keys/" in production["reason"]
    assert 'signatures: {check: false, reason: "..."}' in production["reason"]
    assert st["staging"]["state"] == "Synced" and NOTE in st["staging"]["reason"]
    assert not (config.parent / "production" / SIG_DIR).exists()
    text = cli("status", "--config", config)
    assert text.code == 0 and "Blocked" in text.out and f"keys/{KEY}" in text.out

    # the SIG turns the check off, saying why: production takes the same compose
    repo.set_release(signatures={"check": False, "reason": WHY_OFF})
    repo.commit("core 9: promote unverified until the SIG publishes its key")
    planned = cli("plan", "--config", config)
    assert planned.code == 2, planned.out + planned.err
    assert f"promote {compose_id} to production" in planned.out
    assert "compose core 9" not in planned.out  # nothing to compose again
    applied = cli("apply", "--config", config)
    assert applied.code == 0, applied.out + applied.err
    st = status(cli, config)
    production = st["production"]
    assert (production["state"], production["actual"]) == ("Synced", compose_id)
    for stage in ("compose", "staging", "production"):
        assert f"signatures not checked: {WHY_OFF}" in st[stage]["reason"], st[stage]
        assert NOTE not in st[stage]["reason"]
    published = config.parent / "production" / SIG_DIR
    assert (published / "x86_64/core-common/repodata/repomd.xml").is_file()
    assert cli("verify", published).code == 0
    assert cli("plan", "--config", config).code == 0


def test_a_key_added_later_makes_a_verified_compose_and_the_unverified_one_stays_out(
    cli: Any, config: Path, repo: DesiredRepo
) -> None:
    """Composed while the key was missing (unverified); then the key is committed: the
    next pass composes again, verifying every package, and production takes only that."""
    from reconciler import testing as su

    assert cli("apply", "--config", config).code == 0
    unverified = status(cli, config)["compose"]["actual"]
    # the sample packages are signed by the sample key: it stands for the SIG's real one
    (repo.work / "desired-state" / "keys" / KEY).write_bytes(su.SAMPLE_KEY.read_bytes())
    repo.set_release(production=unverified)
    repo.commit("Add the SIG's key; promote what was staged")
    planned = cli("plan", "--config", config)
    assert planned.code == 1, planned.out + planned.err  # production is blocked
    assert "compose core 9" in planned.out
    assert f"{unverified} was composed without verifying" in planned.out
    assert "pin a compose made since" in planned.out
    assert cli("apply", "--config", config).code == 1
    st = status(cli, config)
    verified = st["compose"]["actual"]
    assert verified != unverified and st["staging"]["actual"] == verified
    assert st["production"]["state"] == "Blocked" and st["production"]["actual"] is None
    record = json.loads(
        (config.parent / "compose/9" / verified / "compose/metadata/reconciler.json").read_text()
    )
    assert record["signature_keys"], "the new compose verified the packages"
    repo.set_release(production=verified)
    repo.commit(f"Promote {verified}")
    assert cli("apply", "--config", config).code == 0
    assert status(cli, config)["production"]["actual"] == verified
