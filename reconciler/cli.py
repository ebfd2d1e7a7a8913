"""The command line (DESIGN.md section 8). Thin: parse, call a step, print, exit.

Exit codes: 0 success, 1 failure or invalid input; ``plan`` uses 2 for
"changes pending". Every expected failure is a :class:`ReconcilerError`
printed as one clear message.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .errors import ConfigError, ReconcilerError, SpecError

if TYPE_CHECKING:
    from .composing import ComposeResult

EPILOG = """\
The host config (--config, $RECONCILER_CONFIG, /etc/reconciler/config.yaml) says
where the compose, staging and production roots and the state directory are.
See DESIGN.md and the README for the desired-state schema."""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="host config file (default: $RECONCILER_CONFIG "
                   "or /etc/reconciler/config.yaml)")  # fmt: skip
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")


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
    p.add_argument("directory", nargs="?", type=Path, default=Path("desired-state"),
                   help="the desired-state folder (default: ./desired-state)")  # fmt: skip
    _add_common(p)

    p = sub.add_parser(
        "compose",
        help="compose one SIG release now",
        description="Make a new dated compose of SIG RELEASE from the build system: the "
        "manual path. With --repo/--arch only those variants are fetched; the others are "
        "carried over (hardlinked) from the previous finished compose. Exit 0 when the "
        "compose is FINISHED, 1 otherwise (DOOMED or FINISHED_INCOMPLETE).",
    )
    p.add_argument("sig", help="SIG name, e.g. core")
    p.add_argument("release", help="release, e.g. 9")
    p.add_argument("--repo", action="append", dest="repos", metavar="REPO",
                   help="only this repo (repeatable)")  # fmt: skip
    p.add_argument("--arch", action="append", dest="arches", metavar="ARCH",
                   help="only this arch (repeatable)")  # fmt: skip
    p.add_argument("--desired-state", type=Path, metavar="DIR",
                   help="desired-state folder (default: the git checkout)")  # fmt: skip
    sig = p.add_mutually_exclusive_group()
    sig.add_argument("--check-signatures", dest="check_signatures", action="store_true",
                     default=None, help="verify RPM signatures against the SIG's keys")  # fmt: skip
    sig.add_argument("--no-check-signatures", dest="check_signatures", action="store_false",
                     help="do not verify RPM signatures")  # fmt: skip
    _add_common(p)

    p = sub.add_parser(
        "demo",
        help="a self-contained run on bundled sample packages",
        description="Build a sample upstream from the bundled RPMs, serve it on 127.0.0.1, "
        "compose it, update it, compose again, and show what happened. Leaves nothing running.",
    )
    p.add_argument("--dir", type=Path, help="work directory (default: a new temporary one)")
    _add_common(p)
    return parser


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    root = logging.getLogger("reconciler")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def _spec_dir(args: argparse.Namespace) -> Path:
    if args.desired_state is not None:
        return Path(args.desired_state)
    from .hostconfig import load_host_config

    host = load_host_config(args.config)
    if host.git is None:
        raise ConfigError("no --desired-state given and the host config has no git section")
    return host.state_dir / "checkout" / host.git.path


def cmd_validate(args: argparse.Namespace) -> int:
    from .specfile import load_spec

    try:
        spec = load_spec(args.directory)
    except SpecError as exc:
        for issue in exc.issues:
            print(f"{args.directory}/{issue}" if not Path(issue.file).is_absolute() else issue)
        print(f"{len(exc.issues)} problem(s) in {args.directory}", file=sys.stderr)
        return 1
    n = sum(len(s.releases) for s in spec.sigs.values())
    print(f"{args.directory}: valid ({len(spec.sigs)} SIGs, {n} SIG releases)")
    return 0


def cmd_compose(args: argparse.Namespace) -> int:
    from .composing import ComposeRequest, compose
    from .hostconfig import load_host_config
    from .progress import reporter_for_terminal
    from .specfile import load_spec

    host = load_host_config(args.config)
    spec_dir = _spec_dir(args)
    spec = load_spec(spec_dir)
    request = ComposeRequest(
        sig=args.sig,
        release=args.release,
        repos=frozenset(args.repos) if args.repos else None,
        arches=frozenset(args.arches) if args.arches else None,
        check_signatures=args.check_signatures,
    )
    result = compose(spec, spec_dir, host, request, reporter_for_terminal())
    print(describe_result(result))
    return 0 if result.ok else 1


def describe_result(result: ComposeResult) -> str:
    line = (
        f"{result.status.value} {result.compose_id} ({result.path}): {result.packages} packages, "
        f"{result.downloaded} downloaded ({result.downloaded_bytes} bytes), "
        f"{result.linked} hardlinked from the previous compose; "
        f"{result.requests} HTTP requests in {result.seconds:.2f}s"
    )
    if result.missing:
        line += f"\n  not composed and not in the previous compose: {', '.join(result.missing)}"
    if result.error:
        line += f"\n  error: {result.error}"
    return line


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.dir)


COMMANDS = {"validate": cmd_validate, "compose": cmd_compose, "demo": cmd_demo}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
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
