"""End of life (issue 17): ``eol: true`` stops composing and staging and keeps production;
a release or a whole SIG file removed from the desired state is retired in the plan, pended
for deletion after the grace, and its composes pruned. Real git repositories, the HTTP
sample upstream, real trees; the pure decisions as golden tables (tests/golden/endoflife/).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler import testing as su
from reconciler.endoflife import LeftTarget, RemovedRelease, plan_with_endoflife
from reconciler.planning import Plan
from reconciler.vocabulary import Stage, TargetState

from .conftest import Upstream, sample_release
from .planning_support import compose_fact, make_observed, make_spec, parse_time
from .site_support import GitSite, files

CATEGORY = "mirror/pub/sig"
GRACE_S = 3
GOLDEN = sorted((Path(__file__).parent / "golden" / "endoflife").glob("*.yaml"))


class Site(GitSite):
    """A desired-state git repository (SIG core: releases 9 and 10; SIG extras: 9) and the
    host that follows it."""

    def __init__(self, tmp: Path, upstream: Upstream, cli: Any) -> None:
        defaults = {
            "upstream": {"base_url": "https://build.invalid/v1/projects"},
            "publish": {"category": CATEGORY, "delete_grace": f"{GRACE_S}s"},
            "compose": {"keep_composes": 5},
            "promotion": {"require_staged": True, "min_soak": "0h"},
            "releases": {r: {"arches": ["x86_64", "aarch64"]} for r in ("9", "10")},
        }
        docs: dict[str, dict[str, Any]] = {
            "core": {"sig": "core", "releases": {"9": sample_release(), "10": sample_release()}},
            "extras": {"sig": "extras", "releases": {"9": sample_release()}},
        }
        super().__init__(tmp, upstream, cli, defaults, docs, "Add SIGs core and extras")

    def tree(self, stage: str, release: str, sig: str) -> Path:
        return self.root / stage / CATEGORY / release / sig

    def published(self) -> None:
        """Everything composed and staged, then each staged compose promoted."""
        self.apply()
        st = self.status()
        pins = {f"{s}_{r}": {"production": st[(s, r, "staging")]["actual"]}
                for s, r in (("core", "9"), ("core", "10"), ("extras", "9"))}  # fmt: skip
        self.change("Promote everything", **pins)
        self.apply()

    def listed(self) -> set[str]:
        text = (self.root / "production" / CATEGORY / "fullfilelist").read_text()
        return {line.removeprefix("./") for line in text.splitlines()}


@pytest.fixture
def site(tmp_path: Path, upstream: Upstream, cli: Any) -> Site:
    return Site(tmp_path, upstream, cli)


# --- eol: true -----------------------------------------------------------------------


def test_an_eol_release_stops_composing_and_staging_and_keeps_production(
    site: Site, upstream: Upstream
) -> None:
    site.published()
    held = site.status()[("core", "9", "production")]["actual"]
    staged_before = files(site.tree("staging", "9", "core"))
    site.change("core 9 reaches its end of life", core_9={"eol": True})
    # the upstream moves on: an eol release neither composes nor stages it
    su.add_packages(
        upstream.repo_dir("core-common", "x86_64"), [su.sample_rpm("sig-hello-1.1-1.x86_64.rpm")]
    )
    composes = sorted(p.name for p in (site.root / "compose/9").iterdir())
    result = site.run("plan")
    assert "compose core 9" not in result.out and "(core 9)" not in result.out, result.out
    assert "compose core 10" in result.out, "a release without eol still follows the upstream"
    site.apply()
    new = {p.name for p in (site.root / "compose/9").iterdir()} - set(composes)
    assert [c for c in new if c.startswith("SIG-extras-9-")], "extras 9 follows the upstream"
    assert not [c for c in new if c.startswith("SIG-core-9-")], "core 9 composes nothing"
    assert files(site.tree("staging", "9", "core")) == staged_before
    st = site.status()
    for stage in ("compose", "staging", "production"):
        row = st[("core", "9", stage)]
        assert row["eol"] is True and row["state"] == "Synced", row
        assert row["reason"].startswith("end of life (eol: true)"), row
    assert st[("core", "9", "production")]["actual"] == held
    assert "nothing new is staged" in st[("core", "9", "staging")]["reason"]
    assert st[("core", "10", "production")]["eol"] is False
    assert site.run("verify", site.root / "production").code == 0
    assert site.run("verify", "--drift").code == 0
    text = site.run("status").out
    assert "9 (eol)" in text and "10 (eol)" not in text
    page = site.run("status", "--format", "html").out
    assert page.count(">end of life</span>") == 1, "one release is labelled"


# --- removing a release and a SIG ------------------------------------------------------


def test_removing_a_release_and_a_sig_is_planned_pended_and_then_gone(
    site: Site, capsys: Any
) -> None:
    site.published()
    st = site.status()
    gone = {("core", "10"), ("extras", "9")}
    held = {k: st[(*k, "production")]["actual"] for k in gone}
    unmanaged = site.tree("production", "10", "core") / "x86_64" / "NOTES.txt"
    unmanaged.write_text("a person's notes: not the reconciler's\n")
    time.sleep(1.05)  # drift_interval: the next pass walks the trees again
    site.apply()  # the walk finds the unmanaged file: listed, never deleted
    assert "10/core/x86_64/NOTES.txt" in site.listed()
    kept_9 = files(site.tree("production", "9", "core"))
    before = {k: files(site.tree("production", k[1], k[0])) for k in gone}

    # the pull request: release 10 leaves sigs/core.yaml, sigs/extras.yaml goes
    site.repo.git("checkout", "-q", "-b", "retire")
    del site.docs["core"]["releases"]["10"]
    del site.docs["extras"]
    (site.work_sigs / "extras.yaml").unlink()
    site.write()
    site.repo.git("add", "-A")
    site.repo.git("commit", "-q", "-m", "Retire core 10 and SIG extras")
    site.repo.git("push", "-q", "origin", "retire")
    result = site.run("plan", "--against", "retire", "--format", "markdown")
    assert result.code == 2, result.out + result.err
    md = result.out
    with capsys.disabled():
        print("\n" + md)
    assert "**What goes (releases removed from the desired state)**" in md
    for sig, release in sorted(gone):
        for stage in ("staging", "production"):
            assert f"retire {stage} of {held[(sig, release)]} ({sig} {release})" in md
        assert f"- `{held[(sig, release)]}` ({sig} {release})" in md  # its composes pruned
    n = len(before[("core", "10")]) - 1  # the notes are not counted
    assert f"production of core 10**: {n} files" in md, md
    assert "- kept: `x86_64/NOTES.txt` (unmanaged)" in md
    assert f"- `{CATEGORY}/10/core/x86_64/core-common/: " in md and "1 unmanaged kept" in md
    assert f"- `{CATEGORY}/9/extras/source/core-infra/: " in md
    assert "release 10 was removed from sigs/core.yaml" in md
    assert "SIG extras was removed from the desired state" in md
    # the plan changed nothing
    assert all(files(site.tree("production", r, s)) == before[(s, r)] for s, r in gone)
    text = site.run("plan", "--against", "retire", "--format", "text").out
    assert (
        "retire production of" in text and f"goes: {CATEGORY}/10/core/x86_64/core-common/: " in text
    )
    shown = json.loads(site.run("plan", "--against", "retire", "--format", "json").out)
    retired = [p for p in shown["previews"] if p["sig"] == "extras"]
    assert {p["stage"] for p in retired} == {"staging", "production"}
    assert all(p["pend"] > 0 and p["bytes"] > 0 and p["directories"] for p in retired)

    # merged: the apply pends everything; nothing is deleted before the grace
    site.repo.git("checkout", "-q", "main")
    site.repo.git("merge", "-q", "--ff-only", "retire")
    site.repo.git("push", "-q", "origin", "main")
    site.apply()
    st = site.status()
    for sig, release in gone:
        for stage in ("staging", "production"):
            assert st[(sig, release, stage)]["state"] == "Progressing", st[(sig, release, stage)]
        assert files(site.tree("production", release, sig)) == before[(sig, release)]
    assert not list((site.root / "compose/10").glob("SIG-core-10-*")), "composes pruned"
    assert not list((site.root / "compose/9").glob("SIG-extras-9-*"))
    assert list((site.root / "compose/9").glob("SIG-core-9-*")), "core 9 keeps its composes"
    assert "10/core/x86_64/core-common/repodata/repomd.xml" in site.listed()
    assert site.run("verify", site.root / "production").code == 0  # still whole for mirrors
    assert site.run("plan").code == 0, "waiting for the grace is not a change"

    # after the grace: gone, the unmanaged file kept, the lists follow, verify clean
    time.sleep(GRACE_S + 0.2)
    site.apply()
    assert files(site.tree("production", "10", "core")) == {"x86_64/NOTES.txt"}
    assert not site.tree("production", "9", "extras").exists()
    assert not site.tree("staging", "10", "core").exists()
    assert files(site.tree("production", "9", "core")) == kept_9
    listed = site.listed()
    assert not [p for p in listed if p.startswith(("10/core/x86_64/core", "9/extras"))]
    assert "10/core/x86_64/NOTES.txt" in listed
    timelist = (site.root / "production" / CATEGORY / "fullfiletimelist-sig").read_text()
    assert "9/extras" not in timelist and "10/core/x86_64/NOTES.txt" in timelist
    assert site.run("verify", site.root / "production").code == 0
    assert site.run("verify", "--drift").code == 0
    assert not [k for k in site.status() if (k[0], k[1]) in gone], "nothing of them is left"
    assert site.run("plan").code == 0
    # a compose another tool left in the compose root is not the reconciler's to prune
    foreign = site.root / "compose" / "8" / "SIG-old-8-20200101.0"
    (foreign / "compose").mkdir(parents=True)
    (foreign / "STATUS").write_text("FINISHED\n")
    assert site.run("plan").code == 0
    site.apply()
    assert (foreign / "STATUS").is_file()


# --- the pure decisions: golden tables ---------------------------------------------------


def _removed(raw: dict[str, Any]) -> RemovedRelease:
    targets = tuple(
        LeftTarget(Stage(stage), t.get("holds"), t.get("files", 0), t.get("pending", 0),
                   parse_time(t["due"]) if t.get("due") else None)
        for stage, t in raw.get("targets", {}).items()
    )  # fmt: skip
    composes = tuple(sorted(compose_fact(c) for c in raw.get("composes", [])))
    return RemovedRelease(raw["sig"], raw["release"], raw.get("sig_removed", False), targets,
                          composes)  # fmt: skip


@pytest.mark.parametrize("case_file", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden(case_file: Path) -> None:
    case: dict[str, Any] = yaml.safe_load(case_file.read_text())
    spec = make_spec(case.get("spec"), case.get("defaults"))
    removed = [_removed(r) for r in case.get("removed", [])]
    vaulted = frozenset(case.get("vaulted", ()))
    p = plan_with_endoflife(spec, make_observed(case["observed"]), removed, "rev1",
                            vaulted=vaulted)  # fmt: skip
    expect = case["expect"]
    assert [a.describe() for a in p.actions] == expect["actions"], case["description"]
    verdicts = {(v.sig, v.release, v.stage.value): v for v in p.verdicts}
    for key, state in expect.get("verdicts", {}).items():
        sig, release, stage = key.split()
        v = verdicts[(sig, release, stage)]
        assert v.state == TargetState(state), (key, v)
    for key, fragment in expect.get("reasons", {}).items():
        sig, release, stage = key.split()
        assert fragment in verdicts[(sig, release, stage)].reason, key
    assert len(verdicts) == len(p.verdicts), "one verdict per target"
    assert Plan.from_json(p.to_json()) == p, "a saved plan keeps its retirements"


def test_what_was_removed_is_part_of_the_plans_digest() -> None:
    spec = make_spec()
    observed = make_observed({})
    gone = RemovedRelease("core", "10", False, (LeftTarget(Stage.PRODUCTION, None, 0, 3),))
    assert plan_with_endoflife(spec, observed).observed_digest == (
        plan_with_endoflife(spec, observed, [RemovedRelease("core", "10", False)]).observed_digest
    ), "a release with nothing left does not count"
    assert plan_with_endoflife(spec, observed, [gone]).observed_digest != (
        plan_with_endoflife(spec, observed).observed_digest
    )


def test_a_removed_release_is_never_one_the_spec_has() -> None:
    spec = make_spec()  # core 9
    left = LeftTarget(Stage.PRODUCTION, "SIG-core-9-20261101.0", 9, 0)
    held = RemovedRelease("core", "9", False, (left,))
    p = plan_with_endoflife(spec, make_observed({}), [held])
    assert not [a for a in p.actions if a.describe().startswith("retire")]
