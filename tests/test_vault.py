"""The vault (issue 17): a SIG release's vaulted point releases, each published once to
``<production>/mirror/vault/sig/<point>/<sig>/`` without deletes, with the vault's own
file lists at ``mirror/vault/`` (the toolkit's ``vault-sig.sh`` and
``sync-file-list-vault.sh``). Real git desired state, the HTTP sample upstream, real
composes and trees, a real rsync daemon and client.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler import testing as su
from reconciler.errors import SpecError
from reconciler.facts import TargetFact
from reconciler.filelists import FILELIST, TIMELIST_VAULT, UNLISTED, parse_timelist, scan
from reconciler.pagerender import render_release
from reconciler.planning import Action, Plan, Verdict, plan
from reconciler.specfile import load_host_config, load_spec
from reconciler.state import StateDB
from reconciler.statuspage import release_page
from reconciler.vaulting import plan_vaults
from reconciler.vocabulary import ActionKind, Stage, TargetState

from .conftest import Upstream, make_desired_state, sample_release
from .planning_support import make_observed, make_spec
from .site_support import GitSite, files, mirror_reader, slowed_apply
from .test_mirror_contract import RSYNC, pull, rsync_daemon

CATEGORY = "mirror/pub/sig"
VAULT = "mirror/vault"


class Site(GitSite):
    """SIG core (releases 9 and 10) in a git desired state, and the host following it;
    ``keep_composes: 1``, so that a compose no stage uses is pruned at once."""

    def __init__(self, tmp: Path, upstream: Upstream, cli: Any) -> None:
        defaults = {
            "upstream": {"base_url": "https://build.invalid/v1/projects"},
            # the toolkit's --chown=10004:10005, given to the vault and its lists too
            "publish": {"category": CATEGORY, "delete_grace": "1h", "owner": 10004, "group": 10005},
            "compose": {"keep_composes": 1},
            "promotion": {"require_staged": True, "min_soak": "0h"},
            "releases": {r: {"arches": ["x86_64", "aarch64"]} for r in ("9", "10")},
        }
        doc = {"sig": "core", "releases": {"9": sample_release(), "10": sample_release()}}
        super().__init__(tmp, upstream, cli, defaults, {"core": doc}, "Add SIG core")

    @property
    def doc(self) -> dict[str, Any]:
        return self.docs["core"]

    def change(self, message: str, **changes: Any) -> str:
        """Change core 9 and commit."""
        return super().change(message, core_9=changes)

    @property
    def vault(self) -> Path:
        return self.root / "production" / VAULT

    def compose_dir(self, cid: str) -> Path:
        return self.root / "compose" / "9" / cid

    def compose_files(self, cid: str) -> set[str]:
        return files(self.compose_dir(cid) / "compose" / "9" / "core")


def _snapshot(top: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under ``top``: inode, size, mtime (what any change would change)."""
    out = {}
    for p in [top, *top.rglob("*")]:
        st = p.lstat()
        out[str(p.relative_to(top))] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def _walk(top: Path) -> set[str]:
    """Every path under ``top`` but the lists at its top, as the lists spell them."""
    return {e.path for e in scan(top)}


def _check_lists(vault: Path) -> None:
    """The vault's lists name exactly what is under ``mirror/vault/``."""
    listed = {line.removeprefix("./") for line in (vault / FILELIST).read_text().splitlines()}
    assert listed - {"."} == _walk(vault)
    entries, _sums = parse_timelist((vault / TIMELIST_VAULT).read_text())
    assert {e.path for e in entries} == _walk(vault)
    assert {(e.path, e.size) for e in entries if e.kind == "f"} == {
        (e.path, e.size) for e in scan(vault) if e.kind == "f"
    }


def _apply_under_a_reader(site: Site, tree: Path, tmp_path: Path) -> None:
    """Apply (slowed down by strace, when there is one, so that the reader overlaps it)
    while a mirror-like reader (tests/mirror_reader.py) snapshots ``tree`` as a client
    that follows the metadata would; every snapshot must be a consistent repository."""
    if shutil.which("strace") is None:
        site.apply()
        return
    stop = tmp_path / "stop"
    reader = mirror_reader(tree, tmp_path / "snaps", stop)
    try:
        time.sleep(0.5)
        slowed_apply(site.config, "link,linkat,rename,renameat,renameat2", 40000)
        time.sleep(0.3)
    finally:
        stop.touch()
        out, err = reader.communicate(timeout=120)
    result = json.loads(out or "{}")
    assert result.get("inconsistent") == 0, (result, err)
    assert result["states"] >= 2, result  # it saw the vault before and after the replace


@pytest.fixture
def site(tmp_path: Path, upstream: Upstream, cli: Any) -> Site:
    return Site(tmp_path, upstream, cli)


def test_a_vault_entry_is_published_once_listed_mirrored_kept_and_never_pruned(
    site: Site, tmp_path: Path, upstream: Upstream
) -> None:
    site.apply()  # composes 9 and 10, stages them
    first = site.status()[("core", "9", "staging")]["actual"]
    site.change("Promote core 9", production=first, compose={
        **site.doc["releases"]["9"]["compose"], "refresh": 1})  # fmt: skip
    site.apply()  # a second compose of 9 is staged; production holds the first
    vaulted = site.status()[("core", "9", "staging")]["actual"]
    assert vaulted != first
    # the distribution's own vault: not ours, listed as it is, never touched
    foreign = site.vault / "rocky" / "9.4" / "BaseOS" / "x86_64" / "os" / "README"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("the distribution's own vault\n")
    foreign_before = _snapshot(site.vault / "rocky")

    site.change("Vault 9.5", vault={"9.5": vaulted})
    plan = site.run("plan")
    assert plan.code == 2, plan.out + plan.err
    assert f"vault 9.5 of core: publish {vaulted} to {VAULT}/sig/9.5/core/" in plan.out
    saved = Plan.from_json(site.run("plan", "--format", "json").out)
    (action,) = [a for a in saved.actions if a.stage is Stage.VAULT]
    assert (action.sig, action.release, action.compose_id) == ("core", "9.5", vaulted)
    (preview,) = [p for p in saved.previews if p.stage is Stage.VAULT]
    assert (preview.add, preview.pend) == (len(site.compose_files(vaulted)), 0)
    markdown = site.run("plan", "--format", "markdown")
    assert f"vault 9.5 of core: publish {vaulted}" in markdown.out
    site.apply()

    tree = site.vault / "sig" / "9.5" / "core"
    assert files(tree) == site.compose_files(vaulted)
    assert site.run("verify", tree).code == 0
    row = site.status()[("core", "9.5", "vault")]
    assert (row["state"], row["desired"], row["actual"]) == ("Synced", vaulted, vaulted)
    assert _snapshot(site.vault / "rocky") == foreign_before
    table = site.run("status").out
    assert any("9.5" in line and "vault" in line and vaulted in line for line in table.splitlines())
    page = site.run("status", "--format", "html").out
    assert 'data-target="core/9.5/vault"' in page and "<th>vault</th>" in page
    host = load_host_config(site.config)
    with StateDB.open(host.state_dir) as state:
        release = release_page(host, state, "core", "9.5")
    assert release is not None
    (vault_stage,) = release.stages  # a point release's page: its vault
    assert vault_stage.stage is Stage.VAULT and vault_stage.cell is not None
    assert vault_stage.compose_id == vaulted and vault_stage.repos  # the compose's counts
    assert '<section class="stage" data-stage="vault">' in render_release(release)
    _check_lists(site.vault)
    assert "rocky/9.4/BaseOS/x86_64/os/README" in _walk(site.vault)
    owners = {(p.lstat().st_uid, p.lstat().st_gid) for p in [tree, *tree.rglob("*")]}
    lists = [site.vault / FILELIST, site.vault / TIMELIST_VAULT]
    assert owners | {(p.stat().st_uid, p.stat().st_gid) for p in lists} == {(10004, 10005)}

    # a quick-fedora-mirror-like client mirrors the vault from its lists
    if RSYNC is not None:
        mirror = tmp_path / "mirror"
        with rsync_daemon(site.vault, tmp_path / "rsyncd") as url:
            got = pull(url, mirror, [FILELIST, TIMELIST_VAULT], "--no-dirs", "--relative")
            assert got.returncode == 0, got.stderr
            entries, _ = parse_timelist((mirror / TIMELIST_VAULT).read_text())
            got = pull(url, mirror, [e.path for e in entries])
            assert got.returncode == 0, got.stderr
        assert _walk(mirror) == _walk(site.vault)
        assert {p: (mirror / p).read_bytes() for p in files(mirror) if p not in UNLISTED} == {
            p: (site.vault / p).read_bytes() for p in files(site.vault) if p not in UNLISTED
        }

    deep = site.run("verify", "--drift", "--deep")
    assert deep.code == 0 and "core 9.5 vault: no drift" in deep.out, deep.out + deep.err

    # the distribution's vault grows: a later pass's walk of mirror/vault/ lists it
    (foreign.parent / "NEWS").write_text("more of the distribution's own vault\n")
    time.sleep(1.1)  # drift_interval: 1 (the walk goes with the drift check)
    site.apply()
    assert "rocky/9.4/BaseOS/x86_64/os/NEWS" in _walk(site.vault)
    _check_lists(site.vault)

    # a third compose: the vaulted one is used by no stage, beyond keep_composes: kept
    # (the build system updates a package: the new compose differs from the vaulted one)
    new = su.sample_rpm("sig-hello-1.1-1.x86_64.rpm")
    su.add_packages(upstream.repo_dir("core-common", "x86_64"), [new])
    site.apply()
    newest = site.status()[("core", "9", "staging")]["actual"]
    assert newest not in {first, vaulted}
    assert site.compose_files(newest) - site.compose_files(vaulted)
    assert site.compose_files(vaulted) - site.compose_files(newest)
    assert site.compose_dir(vaulted).is_dir()

    # changing the entry is refused, the tree untouched
    before = _snapshot(site.vault)
    site.change("Change vault 9.5", vault={"9.5": newest})
    site.apply(code=1)
    row = site.status()[("core", "9.5", "vault")]
    assert row["state"] == "Blocked", row
    assert "sigs/core.yaml" in row["reason"] and "vault 9.5" in row["reason"], row
    assert "vault_replace" in row["reason"], row
    assert _snapshot(site.vault) == before

    # with vault_replace it is replaced; what the old compose had stays (no deletes)
    site.change("Replace vault 9.5", vault_replace=True)
    saved = Plan.from_json(site.run("plan", "--format", "json").out)
    (preview,) = [p for p in saved.previews if p.stage is Stage.VAULT]
    assert preview.pend == 0 and preview.add + preview.replace > 0, preview
    _apply_under_a_reader(site, tree, tmp_path)  # the mirror-safe order, as a client sees it
    row = site.status()[("core", "9.5", "vault")]
    assert (row["state"], row["actual"]) == ("Synced", newest)
    assert files(tree) >= site.compose_files(newest) | site.compose_files(vaulted)
    assert site.run("verify", tree).code == 0
    _check_lists(site.vault)

    # an entry removed from the desired state: the vault tree stays as it is
    before = _snapshot(site.vault)
    site.change("Drop the vault entry", vault={})
    site.apply()
    row = site.status()[("core", "9.5", "vault")]
    assert row["state"] == "Synced" and "vaults are forever" in row["reason"], row
    assert _snapshot(site.vault) == before
    assert site.compose_dir(newest).is_dir()  # the vault holds it: kept

    # end of life of release 9: its composes go but the vaulted one; the vault stays
    del site.doc["releases"]["9"]
    site.commit("Remove core 9")
    site.apply()
    assert site.compose_dir(newest).is_dir()
    assert not site.compose_dir(vaulted).exists() and not site.compose_dir(first).exists()
    assert _snapshot(site.vault) == before
    site.apply()  # the next pass: only the vaulted compose is left, nothing to do
    left = site.status()[("core", "9", "compose")]
    assert left["state"] == "Synced" and "named by a vault entry" in left["reason"], left
    row = site.status()[("core", "9.5", "vault")]  # still shown, as it is
    assert (row["state"], row["actual"]) == ("Synced", newest) and "forever" in row["reason"]

    # verify --drift checks the vault tree against what was published there
    gone = next(p for p in sorted(files(tree)) if p.endswith(".rpm"))
    (tree / gone).unlink()
    found = site.run("verify", "--drift")
    assert found.code == 1 and f"missing: {VAULT}/sig/9.5/core/{gone}" in found.out, found.out


def test_state_rebuild_finds_what_each_vault_holds(site: Site) -> None:
    site.apply()
    staged = site.status()[("core", "9", "staging")]["actual"]
    site.change("Vault 9.5", vault={"9.5": staged})
    site.apply()
    before = _snapshot(site.vault)
    rebuilt = site.run("state", "rebuild")
    assert rebuilt.code == 0, rebuilt.out + rebuilt.err
    assert f"core 9.5 vault: holds {staged}" in rebuilt.out, rebuilt.out
    plan = site.run("plan", "--format", "json")
    (verdict,) = [v for v in json.loads(plan.out)["verdicts"] if v["stage"] == "vault"]
    assert (verdict["state"], verdict["actual"]) == ("Synced", staged)
    assert not [a for a in json.loads(plan.out)["actions"] if a["stage"] == "vault"]
    assert _snapshot(site.vault) == before


@pytest.mark.parametrize(
    ("vault", "message"),
    [
        ({"9.5.1": "SIG-core-9-20260301.0"}, "invalid vault point release '9.5.1'"),
        ({"9.5": "latest"}, "is not a compose ID"),
        ({"10.1": "SIG-core-9-20260301.0"}, "vault point release 10.1 is not one of release 9"),
        ({"9.5": "SIG-core-10-20260301.0"}, "is not a compose of SIG core release 9"),
    ],
)
def test_vault_entries_are_validated_naming_the_file_and_field(
    tmp_path: Path, vault: dict[str, str], message: str
) -> None:
    ds = make_desired_state(tmp_path / "desired-state")
    path = ds.path / "sigs" / "core.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["releases"]["9"]["vault"] = vault
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError) as err:
        load_spec(ds.path)
    assert message in str(err.value)
    assert "core.yaml" in str(err.value) and "vault" in str(err.value)


# -- the decisions, pure ------------------------------------------------------------

A, B, C = "SIG-core-9-20260301.0", "SIG-core-9-20260302.0", "SIG-core-9-20260303.0"


def _decide(
    vault: dict[str, str], held: dict[str, str], *, replace: bool = False, keep: int = 5
) -> tuple[list[Action], list[Verdict], Plan]:
    spec = make_spec({"vault": vault, "vault_replace": replace, "staging": C},
                     {"keep_composes": keep})  # fmt: skip
    raw = {"composes": [{"id": cid, "upstream": "up1"} for cid in (A, B, C)], "staging": C}
    observed = make_observed(raw)
    facts = dataclasses.replace(
        observed.facts("core", "9"), vaults={p: TargetFact(cid) for p, cid in held.items()}
    )
    observed = dataclasses.replace(observed, releases={("core", "9"): facts})
    actions, verdicts = plan_vaults(spec, observed)
    return actions, verdicts, plan(spec, observed)


def test_a_new_entry_is_published_to_its_vault_directory() -> None:
    actions, verdicts, _ = _decide({"9.5": A}, {})
    (action,) = actions
    assert (action.kind, action.stage, action.release, action.compose_id) == (
        ActionKind.PUBLISH, Stage.VAULT, "9.5", A)  # fmt: skip
    assert action.reason == f"vault 9.5 of core: publish {A} to mirror/vault/sig/9.5/core/"
    assert action.describe() == f"vault 9.5 of core: publish {A}"
    assert [v.state for v in verdicts] == [TargetState.OUT_OF_SYNC]


@pytest.mark.parametrize(
    ("vault", "held", "replace", "state", "words"),
    [
        ({"9.5": A}, {"9.5": A}, False, TargetState.SYNCED, "never pruned"),
        ({"9.5": B}, {"9.5": A}, False, TargetState.BLOCKED, "sigs/core.yaml: vault 9.5 holds"),
        ({"9.5": "SIG-core-9-20260309.0"}, {}, False, TargetState.BLOCKED, "does not exist"),
        ({}, {"9.5": A}, False, TargetState.SYNCED, "vaults are forever"),
        ({"9.5": B}, {"9.5": A}, True, TargetState.OUT_OF_SYNC, f"replacing {A}"),
    ],
)
def test_each_vault_entry_gets_a_verdict(
    vault: dict[str, str], held: dict[str, str], replace: bool, state: TargetState, words: str
) -> None:
    actions, verdicts, _ = _decide(vault, held, replace=replace)
    (verdict,) = verdicts
    assert (verdict.release, verdict.stage, verdict.state) == ("9.5", Stage.VAULT, state)
    assert words in verdict.reason, verdict.reason
    assert bool(actions) is (state is TargetState.OUT_OF_SYNC)


def test_composes_a_vault_names_or_holds_are_not_pruned() -> None:
    _, _, planned = _decide({"9.5": A}, {"9.4": B}, keep=1)
    assert not [a for a in planned.actions if a.kind is ActionKind.PRUNE]
    _, _, planned = _decide({}, {}, keep=1)
    pruned = {a.compose_id for a in planned.actions if a.kind is ActionKind.PRUNE}
    assert pruned == {A, B}  # the same composes go without a vault
