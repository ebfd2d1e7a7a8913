"""Rendering plans, status and history for people (text, markdown) and tools (JSON)."""

from __future__ import annotations

import html
import json
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from .endoflife import is_eol
from .facts import TargetKey
from .freshness import MirrorSummary, MirrorTarget, human_duration
from .packagediff import PackageDiff
from .planning import Action, Plan
from .preview import KEEP_UNMANAGED, PublishPreview
from .state import HistoryEntry, LeaderRecord, TargetStatus, UnmanagedSummary
from .vocabulary import ActionKind, PlanOutcome, Stage

#: What a target's unmanaged files are, by target (``observing.unmanaged_summaries``).
UnmanagedByTarget = Mapping[TargetKey, UnmanagedSummary]
_NOT_WALKED: UnmanagedByTarget = MappingProxyType({})
#: How each production target's mirrors stand (``propagation.summaries``).
MirrorsByTarget = Mapping[TargetKey, MirrorSummary]
_NO_MIRRORS: MirrorsByTarget = MappingProxyType({})


def plan_text(plan: Plan) -> str:
    lines = [f"Plan at revision {plan.revision or '(local folder)'}:"]
    if not plan.actions:
        lines.append("  nothing to do")
    for i, action in enumerate(plan.actions, 1):
        lines.append(f"  {i}. {action.describe()}")
        lines.append(f"       because {action.reason}")
        preview = _preview_of(plan, action)
        if preview is not None:
            lines.append(f"       files: {preview.summary()}")
            lines.extend(f"         {e}" for e in preview.examples)
            lines.extend(f"         goes: {d}" for d in preview.directories)
        diff = _diff_of(plan, action)
        if diff is not None:  # what it ships: counts, then per repo (folded)
            lines.extend(f"       {'  ' * d}{'packages: ' if not d else ''}{text}"
                         for d, text in diff.lines())  # fmt: skip
    if plan.troubled:
        lines.append("Blocked or failed:")
        lines.extend(
            f"  {v.sig} {v.release} {v.stage}: {v.state} - {v.reason}" for v in plan.troubled
        )
    lines.extend(f"Source problem: {e}" for e in plan.errors)
    lines.append(OUTCOME_LINES[plan.outcome])
    return "\n".join(lines)


#: The last line of a plan: what it means, and so how ``plan`` exits.
OUTCOME_LINES = {
    PlanOutcome.IN_SYNC: "Result: in sync (exit 0)",
    PlanOutcome.CHANGES: "Result: changes pending (exit 2)",
    PlanOutcome.TROUBLE: "Result: a target failed or is blocked, or the source has a problem "
    "(exit 1)",
}


def _preview_of(plan: Plan, action: Action) -> PublishPreview | None:
    for p in plan.previews:
        if (p.sig, p.release, p.stage, p.compose_id) == (
            action.sig, action.release, action.stage, action.compose_id,
        ):  # fmt: skip
            return p
    return None


def _diff_of(plan: Plan, action: Action) -> PackageDiff | None:
    key = (action.sig, action.release, action.stage or Stage.COMPOSE, action.compose_id)
    return next((d for d in plan.diffs if (d.sig, d.release, d.stage, d.compose_id) == key), None)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#~])")


def _md(text: str) -> str:
    """Text from metadata (an advisory ID, a package name) as inert markdown: no HTML,
    no emphasis, no link, no table cell boundary."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))


def _diff_markdown(plan: Plan) -> list[str]:
    """Per compose or publish with package changes: counts first, then each repo's
    advisories and changes (each list folded after ``packagediff.FOLD``)."""
    out: list[str] = []
    for i, a in enumerate(plan.actions, 1):
        diff = _diff_of(plan, a)
        if diff is None or not diff.repos:
            continue
        out += ["", f"**{i}. {_md(a.describe())}**: {_md(diff.summary())}", ""]
        for d, text in diff.lines():
            if d:  # a repo's counts; under it, each line as code: versions read as they are
                shown = _md(text) if d == 1 else "`" + text.replace("`", "'") + "`"
                out.append(f"{'  ' * (d - 1)}- {shown}")
    return ["", "**Packages**", *out] if out else []


def _removals_markdown(plan: Plan) -> list[str]:
    """Per release removed from the desired state (its RETIRE actions): each published
    tree and directory that goes, with counts and bytes, and the composes pruned."""
    out: list[str] = []
    for i, a in enumerate(plan.actions, 1):
        preview = _preview_of(plan, a)
        if a.kind is not ActionKind.RETIRE or preview is None:
            continue
        where = f"{a.stage} of {preview.sig} {preview.release}"
        out += ["", f"**{i}. {where}**: {preview.pend} files, {preview.bytes} bytes go after "
                "publish.delete_grace; " + f"{preview.unmanaged} unmanaged kept", ""]  # fmt: skip
        out += ["- `" + d.replace("`", "'") + "`" for d in preview.directories]  # code: as is
        keep = f"{KEEP_UNMANAGED} "
        kept = [e.removeprefix(keep) for e in preview.examples if e.startswith(keep)]
        out += ["- kept: `" + e.replace("`", "'") + "` (unmanaged)" for e in kept]
    retired = {(a.sig, a.release) for a in plan.actions if a.kind is ActionKind.RETIRE}
    pruned = [a for a in plan.actions
              if a.kind is ActionKind.PRUNE and (a.sig, a.release) in retired]  # fmt: skip
    if pruned:
        out += ["", "Composes pruned:", ""]
        out += [f"- `{a.compose_id}` ({a.sig} {a.release})" for a in pruned]
    return ["", "**What goes (releases removed from the desired state)**", *out] if out else []


def plan_markdown(plan: Plan) -> str:
    lines = [f"### Reconciler plan at `{(plan.revision or 'local')[:12]}`", ""]
    if plan.actions:
        lines += ["| # | action | why | files | packages |", "|---|---|---|---|---|"]
        for i, a in enumerate(plan.actions, 1):
            preview, diff = _preview_of(plan, a), _diff_of(plan, a)
            files = preview.summary() if preview is not None else ""
            ships = _md(diff.summary()) if diff is not None else ""
            lines.append(f"| {i} | {a.describe()} | {a.reason} | {files} | {ships} |")
        lines += _removals_markdown(plan)
        lines += _diff_markdown(plan)
    else:
        lines.append("No action to take.")
    if plan.outcome is PlanOutcome.IN_SYNC:
        lines[-1] = "Nothing to do: every target is in sync."
    if plan.troubled:
        lines += ["", "**Blocked or failed**", ""]
        lines += [f"- {v.sig} {v.release} {v.stage}: {v.state} - {v.reason}" for v in plan.troubled]
    if plan.errors:
        lines += ["", "**Source problems**", ""]
        lines += [f"- {e}" for e in plan.errors]
    lines += ["", f"_{OUTCOME_LINES[plan.outcome]}_"]
    return "\n".join(lines) + "\n"


def plan_json(plan: Plan) -> str:
    return plan.to_json()


def _unmanaged(summary: UnmanagedSummary | None) -> dict[str, Any] | None:
    """A target's unmanaged files for JSON: kept, not drift (None: never walked)."""
    if summary is None:
        return None
    walked = summary.walked_at.isoformat() if summary.walked_at else None
    return {"files": summary.files, "bytes": summary.bytes,
            "examples": list(summary.examples), "walked_at": walked}  # fmt: skip


def _mirrors(summary: MirrorSummary | None) -> dict[str, Any] | None:
    """A production target's mirrors for JSON (None: no mirror, or not production)."""
    if summary is None:
        return None
    lag = summary.oldest_lag.total_seconds() if summary.oldest_lag is not None else None
    return {"mirrors": summary.mirrors, "current": summary.current, "behind": summary.behind,
            "foreign": summary.foreign, "unreachable": summary.unreachable,
            "unchecked": summary.unchecked, "oldest_lag_seconds": lag,
            "text": summary.describe()}  # fmt: skip


def leader_summary(held: LeaderRecord | None, now: float) -> dict[str, Any] | None:
    """Who holds the leader lease (``now``: the state's clock); None: nobody ever did."""
    if held is None:
        return None

    def at(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat()

    return {"holder": held.holder, "term": held.term, "since": at(held.since),
            "renewed_at": at(held.renewed_at), "expires_at": at(held.expires_at),
            "live": held.live(now)}  # fmt: skip


def status_rows(
    statuses: Sequence[TargetStatus],
    source: dict[str, Any],
    unmanaged: UnmanagedByTarget = _NOT_WALKED,
    mirrors: MirrorsByTarget = _NO_MIRRORS,
    leader: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One object per target; ``unmanaged`` (published targets that were walked) is what
    it holds that the reconciler did not publish; ``mirrors`` (production targets, when
    mirrors are configured) how the public mirrors stand; ``leader`` who publishes."""
    return [
        {
            "sig": s.sig,
            "release": s.release,
            "stage": s.stage,
            "desired": s.desired,
            "actual": s.actual,
            "state": s.state,
            "reason": s.reason,
            "eol": is_eol(s.reason),
            "updated_at": s.updated_at.isoformat(),
            "unmanaged": _unmanaged(unmanaged.get(TargetKey(s.stage, s.sig, s.release))),
            "mirrors": _mirrors(mirrors.get(TargetKey(s.stage, s.sig, s.release))),
            "source": source,
            "leader": leader,
        }
        for s in statuses
    ]


def print_status(
    statuses: Sequence[TargetStatus],
    source: dict[str, Any],
    fmt: str,
    unmanaged: UnmanagedByTarget = _NOT_WALKED,
    mirrors: MirrorsByTarget = _NO_MIRRORS,
    leader: dict[str, Any] | None = None,
) -> None:
    if fmt == "json":
        print(json.dumps(status_rows(statuses, source, unmanaged, mirrors, leader), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout, width=160 if not sys.stdout.isatty() else None)
    console.print(f"desired state at revision {source.get('revision') or '(none yet)'}")
    for problem in source.get("problems", []):
        console.print(f"[yellow]source problem:[/yellow] {problem}")
    for name in source.get("ignored", []):
        console.print(f"[yellow]ignored file:[/yellow] {name} (not a <name>.yaml file)")
    if leader is not None and leader["live"]:
        console.print(f"leader {leader['holder']} (term {leader['term']}) since "
                      f"{leader['since']}", markup=False, highlight=False)  # fmt: skip
    elif leader is not None:
        console.print(f"no leader: the lease of {leader['holder']} (term {leader['term']})"
                      f" expired at {leader['expires_at']}", markup=False,
                      highlight=False)  # fmt: skip
    columns = ["SIG", "release", "stage", "desired", "actual", "state", "reason", "unmanaged"]
    table = Table(*columns, *(["mirrors"] if mirrors else []))
    notes: list[str] = []
    for s in statuses:
        extra = unmanaged.get(TargetKey(s.stage, s.sig, s.release))
        count = f"{extra.files} file(s)" if extra is not None and extra.files else "-"
        release = f"{s.release} (eol)" if is_eol(s.reason) else s.release
        cells = [s.sig, release, s.stage, s.desired or "-", s.actual or "-", s.state, s.reason,
                 count]  # fmt: skip
        if mirrors:
            seen = mirrors.get(TargetKey(s.stage, s.sig, s.release))
            cells.append(seen.describe() if seen is not None else "-")
            if seen is not None:  # whole on one line too, however narrow the table
                notes.append(f"{s.sig} {s.release} {s.stage}: mirrors {seen.describe()}")
        table.add_row(*cells)
        if extra is not None and extra.files:
            more = extra.files - len(extra.examples)
            notes.append(
                f"unmanaged in {s.sig} {s.release} {s.stage} (kept, not drift): {extra.files} "
                f"file(s), {extra.bytes} bytes: {', '.join(extra.examples)}"
                + (f" and {more} more" if more > 0 else "")
            )
    if not statuses:
        console.print("no pass has run yet")
        return
    console.print(table)
    for note in notes:
        console.print(note, markup=False, highlight=False, soft_wrap=True)


def history_rows(entries: Sequence[HistoryEntry]) -> list[dict[str, Any]]:
    return [
        {
            "id": e.id,
            "action": e.action,
            "sig": e.sig,
            "release": e.release,
            "stage": e.stage,
            "compose_id": e.compose_id,
            "reason": e.reason,
            "revision": e.revision,
            "author": e.author,
            "trigger": e.trigger,
            "actor": e.actor,
            "node": e.node,
            "started_at": e.started_at.isoformat(),
            "finished_at": e.finished_at.isoformat() if e.finished_at else None,
            "result": e.result,
            "error": e.error,
            "bytes": e.bytes,
            "files": e.files,
        }
        for e in entries
    ]


def print_history(entries: Sequence[HistoryEntry], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(history_rows(entries), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout, width=160 if not sys.stdout.isatty() else None)
    table = Table("when", "action", "target", "compose", "result", "why", "revision", "by")
    for e in entries:
        target = f"{e.sig} {e.release}" + (f" {e.stage}" if e.stage else "")
        result = e.result + (f": {e.error}" if e.error else "")
        table.add_row(
            e.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            e.action,
            target,
            e.compose_id or "-",
            result,
            e.trigger or "-",
            (e.revision or "-")[:12],
            e.actor or e.author or "-",
        )
    console.print(table if entries else "no history yet")


def mirror_rows(targets: Sequence[MirrorTarget]) -> list[dict[str, Any]]:
    """``reconciler mirrors --format json``: one object per mirror and SIG release."""

    def at(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return [
        {
            "mirror": t.mirror,
            "sig": t.sig,
            "release": t.release,
            "state": t.state,
            "behind_since": at(t.behind_since),
            "lag_seconds": t.lag.total_seconds() if t.lag is not None else None,
            "checked_at": at(t.checked_at),
            "error": t.error,
            "repos": {str(k): v for k, v in t.repos.items() if v},
        }
        for t in targets
    ]


def print_mirrors(targets: Sequence[MirrorTarget], fmt: str) -> None:
    """A table per mirror: each SIG release, how it stands, behind since, last checked."""
    if fmt == "json":
        print(json.dumps(mirror_rows(targets), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout, width=160 if not sys.stdout.isatty() else None)
    if not targets:
        console.print("no mirror checked yet (host config mirrors:, and a production publish)")
        return
    for name in dict.fromkeys(t.mirror for t in targets):
        table = Table("SIG", "release", "state", "behind since", "last checked", "error",
                      title=f"mirror {name}", title_justify="left")  # fmt: skip
        for t in (t for t in targets if t.mirror == name):
            since = "-"
            if t.behind_since is not None and t.lag is not None:
                since = f"{t.behind_since:%Y-%m-%d %H:%M:%S} ({human_duration(t.lag)})"
            checked = f"{t.checked_at:%Y-%m-%d %H:%M:%S}" if t.checked_at else "never"
            table.add_row(t.sig, t.release, t.state, since, checked, t.error or "-")
        console.print(table)
