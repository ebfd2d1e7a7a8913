"""The commands behind the command line: each parses nothing, calls its step, prints,
and returns the exit code (:mod:`reconciler.cli` holds the parser and ``main``).

Heavy modules are imported inside each command, so a command pays only for what it
uses (``plan`` on unchanged files imports neither PyYAML nor pydantic).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError, SpecError
from .logs import setup_logging
from .vocabulary import TROUBLE_STATES, PlanOutcome, Result, Stage

if TYPE_CHECKING:
    from .composing import ComposeResult
    from .hostconfig import HostConfig
    from .metasign import SignatureChecker
    from .recordcache import RecordCache
    from .state import StateDB

#: How ``plan`` exits for each outcome (``apply`` exits 1 for trouble too).
PLAN_EXIT = {PlanOutcome.IN_SYNC: 0, PlanOutcome.CHANGES: 2, PlanOutcome.TROUBLE: 1}

#: How ``apply`` prints each action's result.
_RESULT_MARKS = {
    Result.OK: "done",
    Result.FAILED: "FAILED",
    Result.BLOCKED: "BLOCKED",
    Result.SKIPPED: "skipped",
    Result.RUNNING: "running",
}


def _record_cache() -> RecordCache:
    """Validated records from earlier runs (see :mod:`reconciler.recordcache`)."""
    from .recordcache import RecordCache

    return RecordCache.from_environment()


def _host(args: argparse.Namespace) -> HostConfig:
    from .specfile import load_host_config

    return load_host_config(args.config, _record_cache())


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate a folder (never from the record cache); files that are not read are named
    on stderr, valid or not, so a parked ``sigs/x.yaml.disabled`` is never silent."""
    from .errors import SpecIssue
    from .specfile import read_folder, validate_folder

    directory: Path = args.directory
    issues: list[SpecIssue] = []
    try:
        files = read_folder(directory, issues)
        for name in files.ignored:
            print(f"warning: {directory}/{name}: ignored: not a <name>.yaml file", file=sys.stderr)
        spec = validate_folder(files, issues)
    except SpecError as exc:
        for issue in exc.issues:
            print(f"{directory}/{issue}" if not Path(issue.file).is_absolute() else issue)
        print(f"{len(exc.issues)} problem(s) in {directory}", file=sys.stderr)
        return 1
    n = sum(len(s.releases) for s in spec.sigs.values())
    print(f"{directory}: valid ({len(spec.sigs)} SIGs, {n} SIG releases)")
    return 0


def cmd_compose(args: argparse.Namespace) -> int:
    """One compose now, by hand: from ``--desired-state``, else from the git source
    (fetched and checked out here, so it works on a host where no pass has run yet).
    The history records it as a manual action of the person who ran it."""
    from .composing import ComposeRequest, compose
    from .nodes import this_process
    from .progress import reporter_for_terminal
    from .reconciling import load_source, open_state
    from .state import ActionStart
    from .vocabulary import ActionKind, Trigger

    host = _host(args)
    request = ComposeRequest(
        sig=args.sig,
        release=args.release,
        repos=frozenset(args.repos) if args.repos else None,
        arches=frozenset(args.arches) if args.arches else None,
        check_signatures=args.check_signatures,
    )
    with open_state(host) as state:
        source = load_source(host, state, args.desired_state, _record_cache())
        action_id = state.history.start(ActionStart(
            ActionKind.COMPOSE.value, args.sig, args.release, None, None,
            "reconciler compose (by hand)", source.revision, source.author, datetime.now(UTC),
            Trigger.MANUAL, _who(), this_process(host),
        ))  # fmt: skip
        result = compose(source.spec, source.spec_dir, host, request, reporter_for_terminal())
        state.history.finish(
            action_id,
            result=Result.OK if result.ok else Result.FAILED,
            error=result.error,
            bytes=result.downloaded_bytes,
            files=result.packages,
            finished_at=datetime.now(UTC),
            compose_id=result.compose_id,
        )
    print(describe_result(result))
    return 0 if result.ok else 1


def _who() -> str:
    """The person running a command (behind sudo, the one who ran sudo)."""
    import getpass

    return os.environ.get("SUDO_USER") or getpass.getuser()


def describe_result(result: ComposeResult) -> str:
    line = (
        f"{result.status.value} {result.compose_id} ({result.path}): {result.packages} packages, "
        f"{result.downloaded} downloaded ({result.downloaded_bytes} bytes), "
        f"{result.linked} reused from the previous compose; "
        f"{result.requests} HTTP requests in {result.seconds:.2f}s"
    )
    if result.missing:
        line += f"\n  not composed and not in the previous compose: {', '.join(result.missing)}"
    if result.error:
        line += f"\n  error: {result.error}"
    return line


def _settle_imports() -> None:
    """What the imports made (classes, and pydantic's schemas when a file had to be
    validated) lives until exit: freeze it, so that the collections during the work do
    not walk it again and again (gc.freeze)."""
    gc.freeze()


def cmd_plan(args: argparse.Namespace) -> int:
    import tempfile

    from .reconciling import load_against, open_state, run_pass
    from .reporting import plan_json, plan_markdown, plan_text

    _settle_imports()
    host = _host(args)
    with open_state(host) as state, tempfile.TemporaryDirectory(prefix="reconciler-plan-") as tmp:
        cache = _record_cache()
        against = load_against(host, args.against, Path(tmp), cache) if args.against else None
        result = run_pass(
            host, state, apply=False, spec_dir=args.desired_state, against=against, cache=cache
        )
    p = result.plan
    if result.source.problems:
        from .planning import with_errors

        p = with_errors(p, *result.source.problems)
    if args.out:
        from .fsutil import atomic_write

        atomic_write(args.out, p.to_json())
    render = {"text": plan_text, "json": plan_json, "markdown": plan_markdown}[args.format]
    print(render(p), end="" if args.format != "text" else "\n")
    return PLAN_EXIT[p.outcome]


def _confirm(text: str) -> bool:
    if not sys.stdin.isatty():
        return True
    print(text)
    return input("Apply this plan? [y/N] ").strip().lower() in {"y", "yes"}


def cmd_apply(args: argparse.Namespace) -> int:
    from .errors import PlanError
    from .planning import Plan
    from .progress import reporter_for_terminal
    from .reconciling import apply_lock, open_state, run_pass
    from .reporting import plan_text

    _settle_imports()
    host = _host(args)
    saved = None
    if args.planfile is not None:
        try:
            saved = Plan.from_json(args.planfile.read_text())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PlanError(f"{args.planfile}: not a readable plan ({exc})") from exc
    cache = _record_cache()
    with apply_lock(host, wait=args.wait), open_state(host) as state:
        if not args.yes and sys.stdin.isatty():
            preview = run_pass(
                host, state, apply=False, spec_dir=args.desired_state, saved=saved, cache=cache
            )
            if not _confirm(plan_text(preview.plan)):
                print("not applied")
                return 1
            saved = preview.plan
        result = run_pass(
            host,
            state,
            apply=True,
            spec_dir=args.desired_state,
            saved=saved,
            reporter=reporter_for_terminal(),
            cache=cache,
        )
    assert result.applied is not None
    for r in result.applied.results:
        mark = _RESULT_MARKS[r.result]
        print(f"{mark}: {r.action.describe()}" + (f": {r.error}" if r.error else ""))
    if not result.plan.actions:
        print("nothing to do")
    blocked = [v for v in result.plan.verdicts if v.state in TROUBLE_STATES]
    for v in blocked:
        print(f"{v.state}: {v.sig} {v.release} {v.stage}: {v.reason}")
    for problem in result.source.problems:
        print(f"not applied: {problem}")
    return 0 if result.ok and not blocked and not result.source.problems else 1


def cmd_run(args: argparse.Namespace) -> int:
    from .running import Loop

    _settle_imports()
    host = _host(args)
    setup_logging(True, host.log_format)
    return Loop(host, args.desired_state, _record_cache()).run(once=args.once)


def cmd_worker(args: argparse.Namespace) -> int:
    from .composejobs import work_queue

    host = _host(args)
    setup_logging(True, host.log_format)
    return work_queue(host, args.desired_state, _record_cache(), once=args.once, poll=args.poll)


def _source_summary(state: StateDB) -> dict[str, object]:
    source = state.sources.source()
    return {
        "revision": source.good_revision,
        "problems": list(source.problems),
        "ignored": list(source.ignored),
    }


def cmd_status(args: argparse.Namespace) -> int:
    from .observing import unmanaged_summaries
    from .propagation import summaries
    from .reconciling import open_state
    from .reporting import leader_summary, print_status

    host = _host(args)
    if args.format == "html":  # the status page, for publishing as a static file
        from .pagerender import render_index
        from .statuspage import extras_from, gather

        with open_state(host) as state:
            sys.stdout.write(render_index(gather(host, state, extras=extras_from(host, state))))
        return 0
    with open_state(host) as state:
        unmanaged = unmanaged_summaries(state)
        mirrors = summaries(state, [m.name for m in host.mirrors]) if host.mirrors else {}
        leader = leader_summary(state.leases.current(), state.clock())
        print_status(state.targets.statuses(), _source_summary(state), args.format, unmanaged,
                     mirrors, leader)  # fmt: skip
    return 0


def cmd_mirrors(args: argparse.Namespace) -> int:
    """How each public mirror stands against production; ``--check`` asks them first."""
    from .propagation import check_mirrors, standings
    from .reconciling import open_state
    from .reporting import print_mirrors

    host = _host(args)
    with open_state(host) as state:
        if args.check:
            check_mirrors(host, state)
        print_mirrors(standings(state, [m.name for m in host.mirrors]), args.format)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from .reconciling import open_state
    from .reporting import print_history

    host = _host(args)
    with open_state(host) as state:
        print_history(state.history.entries(args.limit, sig=args.sig), args.format)
    return 0


def cmd_state(args: argparse.Namespace) -> int:
    from .rebuilding import check_state, export_to, import_from, rebuild_state

    host = _host(args)
    if args.action == "check":
        print(check_state(host))
        return 0
    if args.action == "export":
        print(export_to(host, args.file))
        return 0
    if args.action == "import":
        print(import_from(host, args.file, replace=args.replace))
        return 0
    for line in rebuild_state(host, args.desired_state):
        print(line)
    return 0


def cmd_adopt(args: argparse.Namespace) -> int:
    from .adopting import AdoptRequest, adopt
    from .reconciling import apply_lock, load_source, open_state

    host = _host(args)
    request = AdoptRequest(
        args.sig,
        args.release,
        Stage(args.stage) if args.stage else None,
        args.compose,
        args.dry_run,
    )
    with apply_lock(host), open_state(host) as state:  # no pass may publish meanwhile
        source = load_source(host, state, args.desired_state, _record_cache())
        for line in adopt(host, source.spec, state, request, datetime.now(UTC)):
            print(line)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    import json

    if args.drift:
        return _verify_drift(args)
    if args.deep:
        raise ConfigError("--deep goes with --drift: verify --drift --deep")
    if args.path is None:
        raise ConfigError("verify needs a PATH (or --drift)")
    from .verifying import verify_tree

    with _signature_checker(args) as checker:
        signatures = checker.check if checker is not None else None
        report = verify_tree(args.path, quick=args.quick, signatures=signatures)
    if args.format == "json":
        print(
            json.dumps(
                {
                    "repos": report.repos,
                    "packages": report.packages,
                    "ok": report.ok,
                    "problems": [{"path": p.path, "message": p.message} for p in report.problems],
                },
                indent=2,
            )
        )
    else:
        for problem in report.problems:
            print(problem)
        verdict = "consistent" if report.ok else f"{len(report.problems)} problem(s)"
        print(f"{args.path}: {report.repos} repos, {report.packages} packages: {verdict}")
    return 0 if report.ok else 1


@contextmanager
def _signature_checker(args: argparse.Namespace) -> Iterator[SignatureChecker | None]:
    """With a desired state (``--desired-state``, else the host config's source when
    ``--config`` names one), repos of SIGs that sign have their signatures checked."""
    from .metasign import SignatureChecker

    if args.desired_state is None and args.config is None and "RECONCILER_CONFIG" not in os.environ:
        yield None
        return
    if args.desired_state is not None:
        from .specfile import load_spec

        spec, spec_dir = load_spec(args.desired_state, _record_cache()), args.desired_state
    else:
        from .errors import ReconcilerError
        from .reconciling import load_source, open_state

        try:  # the repos are checked anyway; that their signatures are not is said
            host = _host(args)
            with open_state(host) as state:
                source = load_source(host, state, None, _record_cache())
        except ReconcilerError as exc:
            print(f"signatures not checked (no desired state): {exc}", file=sys.stderr)
            yield None
            return
        spec, spec_dir = source.spec, source.spec_dir
    with SignatureChecker(spec, spec_dir) as checker:
        yield checker


def _verify_drift(args: argparse.Namespace) -> int:
    from .observing import check_drift, unmanaged_summaries
    from .reconciling import load_source, open_state
    from .recording import record_learned
    from .verifying import drift_report

    host = _host(args)
    with open_state(host) as state:
        source = load_source(host, state, args.desired_state, _record_cache())
        learned = check_drift(source.spec, host, state, deep=args.deep)
        record_learned(state, learned)
        category = source.spec.defaults.publish.category
        report = drift_report(learned.drift or {}, unmanaged_summaries(state, category))
    for line in report.lines:
        print(line)
    return 0 if report.ok else 1


def cmd_filelist(args: argparse.Namespace) -> int:
    from .filelists import render_all, scan, write_if_changed

    if args.root is not None:
        written = write_if_changed(args.root, render_all(scan(args.root)))
    else:
        from .reconciling import apply_lock, load_source, open_state
        from .retiring import write_production_filelists

        host = _host(args)
        # the lists and the state's record of them change together: not during a pass
        with apply_lock(host, wait=True), open_state(host) as state:
            spec = load_source(host, state, args.desired_state, _record_cache()).spec
            publish = spec.defaults.publish
            written = write_production_filelists(
                state, host.roots.production, publish.category,
                owner=publish.owner, group=publish.group,
            )  # fmt: skip
    print("written: " + ", ".join(written) if written else "file lists unchanged")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.dir)
