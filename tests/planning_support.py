"""Build specs and observed worlds from plain data, and simulate applying a plan.

Pure helpers for the table-driven and property tests of planning.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter

from reconciler.facts import ComposeFact, Observed, ReleaseFacts, TargetFact, UpstreamFact
from reconciler.names import COMPOSE_ID_RE
from reconciler.planning import Plan
from reconciler.spec import Defaults, SigSpec, Spec
from reconciler.vocabulary import ActionKind, ComposeStatus, Stage

PROJECT = "47e0b4a8-84ba-43a9-bb94-eb99dde4cf14"


def make_spec(
    release: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
    releases: tuple[str, ...] = ("9",),
    keys: tuple[str, ...] = (),
) -> Spec:
    """SIG core with ``release`` for each of ``releases``; ``keys``: the files in ``keys/``."""
    d = defaults or {}
    base_defaults = {
        "upstream": {"base_url": "https://build.invalid/v1/projects"},
        "publish": {"delete_grace": d.get("delete_grace", "24h")},
        "compose": {"keep_composes": d.get("keep_composes", 5)},
        "promotion": {
            "require_staged": d.get("require_staged", True),
            "min_soak": d.get("min_soak", "0h"),
        },
        "releases": {r: {"arches": ["x86_64", "aarch64"]} for r in releases},
    }
    rel: dict[str, Any] = {"project_id": PROJECT, "repos": {"core-common": {"arches": ["x86_64"]}}}
    rel.update(release or {})
    sig = TypeAdapter(SigSpec).validate_python(
        {"sig": "core", "releases": dict.fromkeys(releases, rel)}
    )
    return Spec(
        defaults=TypeAdapter(Defaults).validate_python(base_defaults),
        sigs={"core": sig},
        key_files=frozenset(keys),
    )


def parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def compose_fact(raw: dict[str, Any]) -> ComposeFact:
    m = COMPOSE_ID_RE.fullmatch(raw["id"])
    assert m, raw["id"]
    status = raw.get("status", "FINISHED")
    return ComposeFact(
        date=m["date"],
        respin=int(m["respin"]),
        compose_id=raw["id"],
        status=ComposeStatus(status) if status else None,
        running=bool(raw.get("running", False)),
        upstream_revision=raw.get("upstream"),
        refresh=raw.get("refresh", 0),
        verified=bool(raw.get("verified", False)),
    )


def make_observed(raw: dict[str, Any], releases: tuple[str, ...] = ("9",)) -> Observed:
    now = parse_time(raw.get("now", "2026-11-25T12:00:00Z"))
    facts = {}
    for rel in releases:
        up = raw.get("upstream", {"revision": "up1"})
        facts[("core", rel)] = ReleaseFacts(
            sig="core",
            release=rel,
            composes=tuple(sorted(compose_fact(c) for c in raw.get("composes", []))),
            staging=TargetFact(
                raw.get("staging"),
                now if raw.get("staging") else None,
                tuple(raw.get("staging_drift", [])),
            ),
            production=TargetFact(raw.get("production"), now if raw.get("production") else None),
            staged_at={k: parse_time(v) for k, v in (raw.get("staged_at") or {}).items()},
            previous_production=raw.get("previous_production"),
            upstream=UpstreamFact(up.get("revision"), up.get("error")),
        )
    return Observed(now=now, releases=facts)


def simulate(spec: Spec, observed: Observed, plan: Plan) -> Observed:
    """The world after ``plan`` is applied successfully (a fake of applying, for tests)."""
    releases = dict(observed.releases)
    new: dict[tuple[str, str], str] = {}
    for action in plan.actions:
        key = (action.sig, action.release)
        f = releases[key]
        if action.kind is ActionKind.COMPOSE:
            last = f.composes[-1] if f.composes else None
            date = observed.now.strftime("%Y%m%d")
            respin = (last.respin + 1) if last and last.date == date else 0
            cid = f"SIG-{action.sig}-{action.release}-{date}.{respin}"
            new[key] = cid
            rel = spec.release(action.sig, action.release)
            fact = ComposeFact(
                date,
                respin,
                cid,
                ComposeStatus.FINISHED,
                False,
                observed.now,
                f.upstream.revision,
                rel.compose.refresh,
                spec.verifies_signatures(rel),  # the compose verifies what it can
            )
            f = replace(f, composes=(*f.composes, fact))
        elif action.kind is ActionKind.PUBLISH:
            cid = action.compose_id or new[key]
            target = TargetFact(cid, observed.now)
            if action.stage is Stage.STAGING:
                staged = dict(f.staged_at)
                staged.setdefault(cid, observed.now)
                f = replace(f, staging=target, staged_at=staged)
            else:
                prev = f.production.compose_id
                f = replace(
                    f,
                    production=target,
                    previous_production=prev if prev != cid else f.previous_production,
                )
        else:
            f = replace(
                f, composes=tuple(c for c in f.composes if c.compose_id != action.compose_id)
            )
        releases[key] = f
    return replace(observed, now=observed.now + timedelta(seconds=1), releases=releases)
