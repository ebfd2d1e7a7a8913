"""Render time of the status page from the state: 9 SIGs x 3 releases x 3 stages, with
1,000 history rows (issue 15's target: under 50 ms).

    python bench/page.py [--runs 21]

Builds the state in a temporary directory (statuses, what each published target holds,
the history), then times ``gather`` (reading the state) plus ``render_index`` (Jinja2),
as a served request does, and prints the median and the spread. No git source: the
revision's summary is one cached ``git log`` in a real loop, not part of a render.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.hostconfig import HostConfig
from reconciler.pagerender import render_index
from reconciler.state import ActionStart, StateDB, TargetRecord, TargetStatus
from reconciler.statuspage import gather
from reconciler.vocabulary import Result, Stage, TargetState, Trigger

SIGS = [f"sig{i}" for i in range(9)]
RELEASES = ["8", "9", "10"]
HISTORY = 1000


def build(state_dir: Path) -> None:
    now = datetime.now(UTC)
    with StateDB.open(state_dir) as state:
        statuses = []
        for sig in SIGS:
            for release in RELEASES:
                cid = f"SIG-{sig}-{release}-20261204.0"
                for stage in Stage:
                    state_ = (
                        TargetState.BLOCKED
                        if (sig, stage) == ("sig3", Stage.PRODUCTION)
                        else TargetState.SYNCED
                    )
                    statuses.append(
                        TargetStatus(
                            sig,
                            release,
                            stage,
                            state_,
                            cid,
                            cid,
                            f"{stage.value} follows the latest compose",
                            now,
                        )
                    )
                    if stage is not Stage.COMPOSE:
                        state.targets.set(TargetRecord(sig, release, stage, cid, now, "a" * 40))
        state.targets.set_statuses(statuses)
        for i in range(HISTORY):
            sig, release = SIGS[i % 9], RELEASES[i % 3]
            at = now - timedelta(minutes=HISTORY - i)
            aid = state.history.start(
                ActionStart(
                    "publish",
                    sig,
                    release,
                    Stage.STAGING,
                    f"SIG-{sig}-{release}-20261204.{i}",
                    "staging follows the latest compose",
                    f"{i:040x}",
                    "Alice <alice@example.org>",
                    at,
                    Trigger.COMMIT,
                    "Alice <alice@example.org>",
                )
            )
            state.history.finish(aid, result=Result.OK, finished_at=at, bytes=1000, files=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        host = HostConfig(
            state_dir=Path(tmp) / "state", commit_url="https://forge.example/ds/commit/{sha}"
        )
        build(host.state_dir)
        times, size = [], 0
        for _ in range(args.runs):
            started = time.perf_counter()
            with StateDB.open(host.state_dir, create=False) as state:
                page = render_index(
                    gather(host, state, {"finished": time.time(), "ok": True, "seconds": 1.0})
                )
            times.append((time.perf_counter() - started) * 1000)
            size = len(page)
        times = times[1:]  # the first compiles the templates
        print(
            f"status page, {len(SIGS)} SIGs x {len(RELEASES)} releases x 3 stages, "
            f"{HISTORY} history rows: median {statistics.median(times):.1f} ms "
            f"(min {min(times):.1f}, max {max(times):.1f}) over {len(times)} renders; "
            f"{size / 1024:.0f} KiB of HTML"
        )


if __name__ == "__main__":
    main()
