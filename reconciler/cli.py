"""The command line (docs/architecture.md). Thin: parse, call a step, print, exit.

Exit codes: 0 success, 1 failure or invalid input; ``plan`` uses 2 for
"changes pending". Every expected failure is a :class:`ReconcilerError`
printed as one clear message.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .commands import (
    cmd_adopt,
    cmd_apply,
    cmd_compose,
    cmd_demo,
    cmd_filelist,
    cmd_history,
    cmd_mirrors,
    cmd_plan,
    cmd_run,
    cmd_state,
    cmd_status,
    cmd_validate,
    cmd_verify,
    cmd_worker,
)
from .errors import ReconcilerError, SpecError
from .logs import setup_logging

if TYPE_CHECKING:
    pass

EPILOG = """\
The host config (--config, $RECONCILER_CONFIG, /etc/reconciler/config.yaml) says
where the compose, staging and production roots and the state directory are.
See docs/architecture.md and desired-state/README.md for the schema."""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        help="host config file (default: $RECONCILER_CONFIG or /etc/reconciler/config.yaml)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")


def _add_spec_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--desired-state",
        type=Path,
        metavar="DIR",
        help="use this desired-state folder instead of the git source",
    )


def _add_state_parser(sub: Any) -> None:
    state = sub.add_parser(
        "state",
        help="maintain the state database (rebuild, check, export, import)",
        description="Maintain the state: the SQLite file in the state directory, or the "
        "PostgreSQL database the host config's state.url names.",
    )
    actions = state.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser(
        "rebuild",
        help="recreate the state from the trees",
        description="Recreate the state when it is lost or corrupt: what each staging and "
        "production target holds is found by comparing repomd.xml files with the composes "
        "(history is lost). SQLite: the old file is renamed aside. PostgreSQL: the old state "
        "is first exported into the state directory, then emptied and rebuilt in place "
        "(the leader lease is kept).",
    )
    _add_spec_option(p)
    _add_common(p)
    p = actions.add_parser(
        "check",
        help="check the whole state",
        description="SQLite: read every page (quick_check). PostgreSQL: the schema version, "
        "every table and column, bytewise text order, identity sequences ahead of their "
        "rows, known stages, results and states. Prints what was checked; exits 1 and says "
        "what is wrong otherwise. Never creates nor migrates the state.",
    )
    _add_common(p)
    p = actions.add_parser(
        "export",
        help="write the whole state to a file",
        description="Write every row of every table to FILE (JSON lines: a header with the "
        "schema version, each table's columns and rows in key order, an end line; "
        "docs/architecture.md, 'Moving a state'), from one consistent snapshot: to move a "
        "host's state between SQLite and PostgreSQL, or to keep a copy.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    _add_common(p)
    p = actions.add_parser(
        "import",
        help="make a file written by `state export` the whole state",
        description="Load FILE (written by `state export`, on either backend) as the whole "
        "state, in one transaction. Refuses a state that already holds something unless "
        "--replace, a file of another schema version, and a file cut short.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument(
        "--replace", action="store_true", help="replace what the state holds (all of it)"
    )
    _add_common(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="Compose, stage and promote SIG RPM repositories from a desired state in git.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "validate",
        help="check a desired-state folder",
        description="Check a desired-state folder and print every problem as FILE:LINE: "
        "message. Exit 0 when valid, 1 when not.",
    )
    p.add_argument(
        "directory",
        nargs="?",
        type=Path,
        default=Path("desired-state"),
        help="the desired-state folder (default: ./desired-state)",
    )
    _add_common(p)

    p = sub.add_parser(
        "compose",
        help="compose one SIG release now",
        description="Make a new dated compose of SIG RELEASE from the build system: the "
        "manual path. With --repo/--arch only those variants are fetched; the others are "
        "carried over (cloned or hardlinked) from the previous finished compose. Exit 0 when "
        "the compose is FINISHED, 1 otherwise (DOOMED or FINISHED_INCOMPLETE).",
    )
    p.add_argument("sig", help="SIG name, e.g. core")
    p.add_argument("release", help="release, e.g. 9")
    p.add_argument(
        "--repo", action="append", dest="repos", metavar="REPO", help="only this repo (repeatable)"
    )
    p.add_argument(
        "--arch", action="append", dest="arches", metavar="ARCH", help="only this arch (repeatable)"
    )
    p.add_argument(
        "--desired-state",
        type=Path,
        metavar="DIR",
        help="desired-state folder (default: the git checkout)",
    )
    sig = p.add_mutually_exclusive_group()
    sig.add_argument(
        "--check-signatures",
        dest="check_signatures",
        action="store_true",
        default=None,
        help="verify RPM signatures against the SIG's keys",
    )
    sig.add_argument(
        "--no-check-signatures",
        dest="check_signatures",
        action="store_false",
        help="do not verify RPM signatures",
    )
    _add_common(p)

    _add_gitops_commands(sub)
    _add_tree_commands(sub)
    p = sub.add_parser(
        "demo",
        help="a self-contained run on bundled sample packages",
        description="Build a sample upstream from the bundled RPMs, serve it on 127.0.0.1, "
        "compose it, update it, compose again, and show what happened. Leaves nothing running.",
    )
    p.add_argument("--dir", type=Path, help="work directory (default: a new temporary one)")
    _add_common(p)
    return parser


def _add_gitops_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "plan",
        help="what a pass would do, each action with its reason",
        description="Fetch the desired state, observe the trees and the upstream, and print "
        "the plan; change nothing. Exit 0 when there is nothing to do, 2 when changes are "
        "pending, 1 on an error: also when an observation failed (the upstream or the git "
        "source could not be read), a target is Failed or Blocked, or the newest revision "
        "of the desired state was refused. apply exits 1 in the same cases.",
    )
    p.add_argument("--out", type=Path, help="also save the plan (JSON) for `apply PLANFILE`")
    p.add_argument("--format", choices=["text", "json", "markdown"], default="text")
    p.add_argument(
        "--against",
        metavar="REV",
        help="plan what merging REV (a branch or commit of the desired-state "
        "repository) would do, without touching any tree",
    )
    _add_spec_option(p)
    _add_common(p)

    p = sub.add_parser(
        "apply",
        help="plan and apply (or apply a saved plan)",
        description="Plan and apply under the state lock. With PLANFILE, apply that saved "
        "plan, refusing it when the git revision or the observed trees changed since. Exit 0 "
        "when converged, 1 when an action failed or a target is blocked.",
    )
    p.add_argument("planfile", nargs="?", type=Path, help="a plan saved by `plan --out`")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation on a terminal")
    p.add_argument(
        "--wait", action="store_true", help="wait for a running apply instead of failing"
    )
    _add_spec_option(p)
    _add_common(p)

    p = sub.add_parser(
        "run",
        help="the loop: fetch git, plan, apply, sleep",
        description="Reconcile every `interval` seconds (host config), waking early when the "
        "trigger file or a local desired-state repository changes. SIGTERM finishes the "
        "current action and exits.",
    )
    p.add_argument("--once", action="store_true", help="one pass, then exit (0 ok, 1 not)")
    _add_spec_option(p)
    _add_common(p)

    _add_worker_command(sub)

    p = sub.add_parser(
        "status",
        help="per SIG, release and stage: desired, actual, state",
        description="The state of every target as of the last pass. --format html writes the "
        "status page to stdout, for publishing as a static file.",
    )
    p.add_argument("--format", choices=["table", "json", "html"], default="table")
    _add_common(p)

    p = sub.add_parser(
        "mirrors",
        help="did the public mirrors pick production up",
        description="For each mirror of the host config (mirrors:) and each SIG release "
        "production serves: current, behind (since when production published what it "
        "lacks), foreign (a repomd.xml production never published), unreachable, and "
        "when it was last checked. From the state; --check asks the mirrors first.",
    )
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--check", action="store_true", help="check the mirrors now")
    _add_common(p)

    p = sub.add_parser(
        "history",
        help="what was applied, when, from which commit, by whom",
        description="Every action applied, newest first.",
    )
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--limit", type=int, default=None, help="at most this many entries")
    p.add_argument("--sig", help="only this SIG")
    _add_common(p)

    _add_state_parser(sub)

    p = sub.add_parser(
        "adopt",
        help="take over staging/production trees made by other tools, changing nothing",
        description="Record a baseline of existing staging and production trees that the "
        "state has no record of (made by the old sync scripts), without changing a byte: "
        "the files that are, path for path and byte for byte, the files of the compose the "
        "stage wants (or --compose) become the reconciler's own; everything else is "
        "unmanaged: kept, listed for mirrors, reported, never changed or deleted (unless "
        "publish.prune retires old packages and metadata). A target that already has an "
        "inventory is left as it is. Without adopt, the first publish does the same for "
        "what it replaces; adopt makes `plan` and `status` exact before it.",
    )
    p.add_argument("--sig", help="only this SIG")
    p.add_argument("--release", help="only this release")
    p.add_argument("--stage", choices=["staging", "production"], help="only this stage")
    p.add_argument("--compose", metavar="ID", help="compare the trees with this compose")
    p.add_argument("--dry-run", action="store_true", help="say what would be recorded")
    _add_spec_option(p)
    _add_common(p)


def _poll_seconds(text: str) -> float:
    value = float(text)
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text}: between 0.05 and 3600 seconds")
    return value


def _add_worker_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "worker",
        help="take compose jobs from the state and compose them",
        description="Take the compose jobs that plans submitted (any host sharing the state "
        "may run workers; several on one host share a SQLite state too) and compose each from "
        "the desired state at the revision that wanted it (exported from the git source "
        "into the state directory, or --desired-state DIR). A job whose worker stops "
        "heartbeating for state.job_timeout seconds is taken again; its half-made compose is "
        "marked DOOMED. SIGTERM or SIGINT lets the current compose finish, then exits 0.",
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="work until no job is queued, then exit (0, or 1 if a job it ran failed)",
    )
    p.add_argument(
        "--poll",
        type=_poll_seconds,
        default=1.0,
        metavar="SECONDS",
        help="how often to look at the queue when it is empty (default 1)",
    )
    _add_spec_option(p)
    _add_common(p)


def _add_tree_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "verify",
        help="check every repo under PATH as a client would",
        description="Walk every repo under PATH: repomd.xml -> each metadata file's checksum "
        "-> every package's size and checksum, and report every inconsistency with its path. "
        "With --drift, compare the published staging and production targets with what was "
        "published (by stat) instead, and record the result for the next apply; with --drift "
        "--deep, also read every published file and compare its checksum with the compose's "
        "(finds bytes changed in place). Exit 0 when consistent, 1 when not.",
    )
    p.add_argument("path", nargs="?", type=Path, help="a tree of repos (not needed with --drift)")
    p.add_argument("--quick", action="store_true", help="check package sizes only, not checksums")
    p.add_argument("--drift", action="store_true", help="check published targets for drift")
    p.add_argument(
        "--deep", action="store_true", help="with --drift: hash every published file (slow)"
    )
    p.add_argument("--format", choices=["text", "json"], default="text")
    _add_spec_option(p)
    _add_common(p)

    p = sub.add_parser(
        "filelist",
        help="write the mirror file lists",
        description="Write fullfilelist, fullfiletimelist-sig and fullfiletimelist "
        "(quick-fedora-mirror version 2) at <production>/<category>/ from what was published, "
        "or, with --root DIR, from a scan of DIR. Files are replaced atomically and only "
        "when their content changed.",
    )
    p.add_argument("--root", type=Path, help="scan this directory and write its lists there")
    _add_spec_option(p)
    _add_common(p)


COMMANDS = {
    "validate": cmd_validate,
    "compose": cmd_compose,
    "plan": cmd_plan,
    "apply": cmd_apply,
    "run": cmd_run,
    "status": cmd_status,
    "history": cmd_history,
    "mirrors": cmd_mirrors,
    "state": cmd_state,
    "adopt": cmd_adopt,
    "verify": cmd_verify,
    "filelist": cmd_filelist,
    "worker": cmd_worker,
    "demo": cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    # The first validator pydantic builds (when a file is not in the record cache) makes it
    # read the entry points of every installed distribution, looking for plugins (hundreds
    # of file opens); none are used here.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, os.environ.get("RECONCILER_LOG_FORMAT", "text"))
    try:
        return COMMANDS[args.command](args)
    except SpecError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        return 1
    except ReconcilerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
