"""Planning is pure: table-driven golden cases (tests/golden/*.yaml) and properties."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.planning import Plan, plan
from reconciler.vocabulary import ActionKind, Stage, TargetState

from .planning_support import make_observed, make_spec, simulate

GOLDEN = sorted((Path(__file__).parent / "golden").glob("*.yaml"))


@pytest.mark.parametrize("case_file", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden(case_file: Path) -> None:
    case: dict[str, Any] = yaml.safe_load(case_file.read_text())
    spec = make_spec(case.get("spec"), case.get("defaults"), keys=tuple(case.get("keys", ())))
    result = plan(spec, make_observed(case["observed"]), "rev1")
    expect = case["expect"]
    assert [a.describe() for a in result.actions] == expect["actions"], case["description"]
    verdicts = {v.stage.value: v for v in result.verdicts}
    for stage, state in expect.get("verdicts", {}).items():
        assert verdicts[stage].state == TargetState(state), (stage, verdicts[stage])
    for stage, fragments in expect.get("reasons", {}).items():
        for fragment in [fragments] if isinstance(fragments, str) else fragments:
            assert fragment in verdicts[stage].reason, (stage, verdicts[stage].reason)
    for stage, fragment in expect.get("reasons_not", {}).items():
        assert fragment not in verdicts[stage].reason, (stage, verdicts[stage].reason)
    actions = {a.describe(): a for a in result.actions}
    for described, fragment in expect.get("action_reasons", {}).items():
        assert fragment in actions[described].reason, (described, actions[described].reason)
    assert all(a.reason for a in result.actions), "every action has a reason"


def test_every_golden_case_converges_after_a_simulated_apply() -> None:
    for case_file in GOLDEN:
        case = yaml.safe_load(case_file.read_text())
        spec = make_spec(case.get("spec"), case.get("defaults"), keys=tuple(case.get("keys", ())))
        observed = make_observed(case["observed"])
        first = plan(spec, observed, "rev1")
        second = plan(spec, simulate(spec, observed, first), "rev1")
        assert second.actions == (), (case_file.name, [a.describe() for a in second.actions])


def test_plan_round_trips_through_json() -> None:
    spec = make_spec({"production": "SIG-core-9-20261101.0"})
    observed = make_observed({"composes": [{"id": "SIG-core-9-20261101.0", "upstream": "u"}]})
    p = plan(spec, observed, "abc")
    assert Plan.from_json(p.to_json()) == p


# --- properties -----------------------------------------------------------------

IDS = [f"SIG-core-9-202611{d:02d}.{r}" for d in range(1, 6) for r in range(2)]
statuses = st.sampled_from(["FINISHED", "FINISHED", "DOOMED", "STARTED"])
compose_st = st.fixed_dictionaries(
    {
        "id": st.sampled_from(IDS),
        "status": statuses,
        "upstream": st.sampled_from(["u1", "u2", "u3"]),
        "refresh": st.integers(0, 2),
    }
)
world_st = st.fixed_dictionaries(
    {
        "upstream": st.one_of(
            st.fixed_dictionaries({"revision": st.sampled_from(["u1", "u2", "u3"])}),
            st.just({"error": "HTTP 503"}),
        ),
        "composes": st.lists(compose_st, max_size=8, unique_by=lambda c: c["id"]),
        "staging": st.one_of(st.none(), st.sampled_from(IDS)),
        "production": st.one_of(st.none(), st.sampled_from(IDS)),
        "previous_production": st.one_of(st.none(), st.sampled_from(IDS)),
        "staged_at": st.dictionaries(
            st.sampled_from(IDS), st.just("2026-11-20T00:00:00Z"), max_size=4
        ),
    }
)
spec_st = st.fixed_dictionaries(
    {
        "staging": st.one_of(st.none(), st.just("latest"), st.sampled_from(IDS)),
        "production": st.one_of(st.none(), st.sampled_from(IDS)),
        "suspend": st.booleans(),
        "compose": st.fixed_dictionaries(
            {"trigger": st.sampled_from(["upstream", "manual"]), "refresh": st.integers(0, 3)}
        ),
    }
)
defaults_st = st.fixed_dictionaries(
    {
        "keep_composes": st.integers(1, 4),
        "require_staged": st.booleans(),
        "min_soak": st.sampled_from(["0h", "1h", "30d"]),
    }
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=world_st, rel=spec_st, defaults=defaults_st)
def test_same_inputs_same_plan(
    world: dict[str, Any], rel: dict[str, Any], defaults: dict[str, Any]
) -> None:
    spec = make_spec(rel, defaults)
    assert plan(spec, make_observed(world), "r") == plan(spec, make_observed(world), "r")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=world_st, rel=spec_st, defaults=defaults_st)
def test_planning_again_after_applying_plans_nothing(
    world: dict[str, Any], rel: dict[str, Any], defaults: dict[str, Any]
) -> None:
    spec = make_spec(rel, defaults)
    observed = make_observed(world)
    first = plan(spec, observed, "r")
    after = simulate(spec, observed, first)
    second = plan(spec, after, "r")
    assert second.actions == (), (
        [a.describe() for a in first.actions],
        [a.describe() for a in second.actions],
    )


@settings(max_examples=200, deadline=None)
@given(world=world_st, rel=spec_st, defaults=defaults_st)
def test_plans_never_prune_what_a_stage_uses(
    world: dict[str, Any], rel: dict[str, Any], defaults: dict[str, Any]
) -> None:
    spec = make_spec(rel, defaults)
    observed = make_observed(world)
    p = plan(spec, observed, "r")
    pruned = {a.compose_id for a in p.actions if a.kind.value == "prune"}
    facts = observed.facts("core", "9")
    published = {a.compose_id for a in p.actions if a.kind.value == "publish"}
    assert not pruned & published
    if facts.production.compose_id and not any(
        a.kind.value == "publish" and a.stage and a.stage.value == "production" for a in p.actions
    ):
        assert facts.production.compose_id not in pruned


@settings(max_examples=100, deadline=None)
@given(world=world_st, rel=spec_st, defaults=defaults_st)
def test_a_missing_key_blocks_promotions_only(
    world: dict[str, Any], rel: dict[str, Any], defaults: dict[str, Any]
) -> None:
    """The same world planned with the named key file present and missing: compose and
    staging decide alike; production never takes a new compose while the key is missing."""
    named = {**rel, "gpg_keys": ["RPM-GPG-KEY-K"]}
    observed = make_observed(world)
    # with the key there, the composes were verified when made (else they are made again)
    verified = make_observed(
        {**world, "composes": [{**c, "verified": True} for c in world["composes"]]}
    )
    present = plan(make_spec(named, defaults, keys=("RPM-GPG-KEY-K",)), verified, "r")
    missing = plan(make_spec(named, defaults), observed, "r")

    def decisions(p: Plan, stage: Stage) -> list[str]:
        """The stage's actions and verdict (prunes differ: production keeps what it holds)."""
        acts = [a for a in p.actions if a.kind is not ActionKind.PRUNE]
        mine = [a.describe() for a in acts if (a.stage or Stage.COMPOSE) is stage]
        return [*mine, *(v.state.value for v in p.verdicts if v.stage is stage)]

    for stage in (Stage.COMPOSE, Stage.STAGING):
        assert decisions(missing, stage) == decisions(present, stage)
    holds = observed.facts("core", "9").production.compose_id
    for a in missing.actions:
        if a.stage is Stage.PRODUCTION:
            assert a.compose_id == holds, "a missing key let production take a new compose"
    prod = next(v for v in missing.verdicts if v.stage is Stage.PRODUCTION)
    if not rel["suspend"]:
        assert "keys/RPM-GPG-KEY-K is missing" in prod.reason
