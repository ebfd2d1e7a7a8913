"""desired-state/ is valid and says what the toolkit's SIG configuration says.

The toolkit's files are copied verbatim in tests/data/toolkit-sig/ (its README names the
commit). Each SIG file of desired-state/ must keep, per release: the project ID, the repo
names and their arches in the same order, the key file named by each ``gpg_key`` URL,
every package version (the toolkit's reposync has no ``--newest-only``), and altarch's
``additional_dirs`` as unmanaged paths; defaults.yaml must give published files the
owner and group the toolkit's sync scripts give them.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.facts import ComposeFact, Observed, ReleaseFacts, TargetFact, UpstreamFact
from reconciler.planning import plan
from reconciler.spec import Spec
from reconciler.specfile import load_spec
from reconciler.vocabulary import ComposeStatus, Stage, TargetState

from .planning_support import parse_time

ROOT = Path(__file__).resolve().parents[1]
DESIRED = ROOT / "desired-state"
TOOLKIT = Path(__file__).parent / "data" / "toolkit-sig"
SIGS = sorted(p.stem for p in TOOLKIT.glob("*.yaml"))


def toolkit(sig: str) -> dict[str, dict[str, Any]]:
    """The toolkit's config of ``sig``: release -> its settings."""
    doc = yaml.safe_load((TOOLKIT / f"{sig}.yaml").read_text())
    assert list(doc) == [sig], f"{sig}.yaml holds {list(doc)}"
    return {str(rel): settings for rel, settings in doc[sig].items()}


@pytest.fixture(scope="module")
def spec() -> Spec:
    return load_spec(DESIRED)


def toolkit_commit() -> str:
    found = re.search(r"commit\s+`([0-9a-f]{40})`", (TOOLKIT / "README.md").read_text())
    assert found, "tests/data/toolkit-sig/README.md names no commit"
    return found[1]


def test_the_desired_state_validates_and_has_the_toolkits_sigs(cli: Any, spec: Spec) -> None:
    result = cli("validate", DESIRED)
    assert result.code == 0, result.out
    assert len(SIGS) == 9
    assert sorted(spec.sigs) == SIGS
    assert sorted(p.stem for p in (DESIRED / "sigs").glob("*.yaml")) == SIGS


@pytest.mark.parametrize("sig", SIGS)
def test_each_release_is_the_toolkits(spec: Spec, sig: str) -> None:
    theirs = toolkit(sig)
    ours = spec.sigs[sig].releases
    assert list(ours) == list(theirs), f"{sig}: releases"
    for name, t in theirs.items():
        rel, where = ours[name], f"sigs/{sig}.yaml release {name}"
        assert rel.project_id == t["project_id"], where
        assert list(rel.repos) == list(t["repo"]), f"{where}: repo names and order"
        for repo, repo_spec in rel.repos.items():
            assert list(repo_spec.arches) == t["repo"][repo]["allowed_arches"], (where, repo)
        keys = [url.rstrip("/").rsplit("/", 1)[-1] for url in t["gpg_key"]]
        assert list(rel.gpg_keys) == keys, f"{where}: gpg_keys names the gpg_key files"
        assert all(k.startswith("RPM-GPG-KEY-Rocky-SIG-") for k in keys), keys
        # the toolkit's `dnf reposync --gpgcheck`, without --newest-only, of every repo,
        # its -debug and its -source
        assert rel.compose.keep_versions == 0, f"{where}: the toolkit kept every version"
        assert (rel.compose.debug, rel.compose.source) == (True, True), where
        assert rel.signatures.check, f"{where}: the toolkit always checked signatures"
        assert rel.compose.check_signatures is None, f"{where}: follows signatures.check"


@pytest.mark.parametrize("sig", SIGS)
def test_additional_dirs_are_unmanaged(spec: Spec, sig: str) -> None:
    dirs = {tuple(t.get("additional_dirs", ())) for t in toolkit(sig).values()}
    assert len(dirs) == 1, f"{sig}: additional_dirs differ between releases: {dirs}"
    assert spec.sigs[sig].publish.unmanaged == dirs.pop()
    assert spec.defaults.publish.unmanaged == ()


def test_altarch_keeps_its_images(spec: Spec) -> None:
    assert spec.unmanaged("altarch") == ("images",)
    assert not spec.prune("altarch")


def test_published_files_get_the_toolkits_owner_and_group(spec: Spec) -> None:
    sync = TOOLKIT / "sync"
    found = {
        m.groups()
        for name in ("sync-to-staging-sig.sh", "sync-to-prod-sig.sh", "sync-sig-file-list.sh")
        for m in re.finditer(r"chown[ =](\d+):(\d+)", (sync / name).read_text())
    }
    assert found == {("10004", "10005")}
    publish = spec.defaults.publish
    assert (str(publish.owner), str(publish.group)) == found.pop()
    assert publish.prune is False


@pytest.mark.parametrize("sig", SIGS)
def test_each_sig_file_says_where_it_came_from(sig: str) -> None:
    text = (DESIRED / "sigs" / f"{sig}.yaml").read_text()
    header = text[: text.index(f"sig: {sig}\n")]
    assert f"commit {toolkit_commit()[:7]}" in header
    for cited in (f"iso/empanadas/empanadas/sig/{sig}.yaml", "dnf_utils.py", "--newest-only"):
        assert cited in header, f"sigs/{sig}.yaml's header does not cite {cited}"
    assert "check_signatures: false" not in text


def test_production_waits_for_each_missing_key(spec: Spec) -> None:
    """The real desired state with every release staged and pinned in production: each
    release whose key file is missing composes and stages, its production Blocked."""
    now = parse_time("2026-11-25T12:00:00Z")
    sigs, facts = {}, {}
    for name, sig in spec.sigs.items():
        releases = {}
        for rel_name, rel in sig.releases.items():
            cid = f"SIG-{name}-{rel_name}-20261101.0"
            releases[rel_name] = replace(rel, production=cid)
            done = ComposeFact(
                "20261101", 0, cid, ComposeStatus.FINISHED, upstream_revision="up", refresh=0
            )
            facts[(name, rel_name)] = ReleaseFacts(
                name,
                rel_name,
                composes=(done,),
                staging=TargetFact(cid, now),
                staged_at={cid: now - timedelta(days=2)},
                upstream=UpstreamFact("up"),
            )
        sigs[name] = replace(sig, releases=releases)
    pinned = replace(spec, sigs=sigs)
    result = plan(pinned, Observed(now=now, releases=facts), "rev")
    assert result.actions == ()
    blocked = 0
    for v in result.verdicts:
        missing = spec.missing_keys(spec.release(v.sig, v.release))
        if v.stage is Stage.PRODUCTION and missing:
            blocked += 1
            assert v.state is TargetState.BLOCKED, v
        else:
            assert v.state is TargetState.SYNCED, v
        for key in missing:
            assert f"keys/{key} is missing" in v.reason, v
    # (while no SIG's key is in keys/, that is every release)
    unverified = [
        r for s in spec.sigs.values() for r in s.releases.values() if spec.missing_keys(r)
    ]
    assert blocked == len(unverified)
