"""bench/workers.py, the workers benchmark of issue 18: its harness end to end at a tiny
size (one composing process, SQLite), and the model of k hosts it reports."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler.state import StateDB

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import workers  # noqa: E402


def test_spread_gives_each_compose_to_the_next_free_process() -> None:
    assert workers.spread([3.0, 1.0, 1.0, 1.0], 1) == 6.0
    assert workers.spread([3.0, 1.0, 1.0, 1.0], 2) == 3.0
    assert workers.spread([1.0, 1.0, 1.0, 1.0], 3) == 2.0
    assert workers.spread([2.0], 3) == 2.0


def _run(k: int, wall: float, composes: dict[str, list[float]]) -> dict[str, Any]:
    """A run's record as one_run makes it: each process's compose durations, back to back
    from 1 s after the start."""
    jobs: list[dict[str, Any]] = []
    for proc, durations in composes.items():
        t = 1.0
        for d in durations:
            jobs.append({"process": proc, "started": t, "finished": t + d})
            t += d
    span = max(j["finished"] for j in jobs) - 1.0
    return {
        "k": k, "wall": wall, "before_first": 1.0, "span": span, "after_last": wall - 1 - span,
        "idle": 0.0, "iowait": 0.0, "nginx_cpu": 0.5, "pg_cpu": 0.0, "jobs": jobs,
        "procs": {p: {"cpu": sum(d), "busy": sum(d), "composes": len(d)}
                  for p, d in composes.items()},
    }  # fmt: skip


def test_tables_report_medians_ratios_and_the_model() -> None:
    runs = [
        _run(1, 8.0, {"apply": [2.0, 2.0, 2.0]}),
        _run(1, 9.0, {"apply": [2.0, 3.0, 2.0]}),
        _run(2, 6.0, {"apply": [2.0, 2.0], "worker1": [2.5]}),
    ]
    one, two, medians = workers.tables(runs)
    assert medians[1]["wall"] == 8.5
    assert medians[2]["ratio"] == 6.0 / 8.5
    # two hosts: each k = 1 run's composes over two processes (4 s in both runs: 2+2 | 2
    # and 2+2 | 3), plus its 1 s before the first and 1 s after the last
    assert medians[2]["model"] == 6.0
    assert medians[2]["busy"] == {"apply": 4.0, "worker1": 2.5}
    assert "| apply + 1 worker " in one
    assert "2/1" in one  # composes per process of the k = 2 run
    assert "| 0.71 " in one  # wall(2) / wall(1)
    assert "| 6.0 " in two


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_one_process_composes_all_27_sig_releases(
    tmp_path: Path, dialect: str, request: pytest.FixtureRequest
) -> None:
    """The whole harness at N = 10: the upstream of 27 repos, the plan check (27 composes,
    nothing else), one apply, each SIG release composed once by it (read back from the
    state: SQLite, or a database of the session's PostgreSQL cluster), and the report."""
    cluster = None
    if dialect == "postgresql":
        if not hasattr(StateDB, "connect"):
            pytest.skip("the state has no PostgreSQL backend yet (issue 18 part A)")
        cluster = request.getfixturevalue("pg_cluster")
    out = tmp_path / "out.json"
    argv = ["--n", "10", "--scale", "50", "--runs", "1", "--k", "1", "--state", dialect,
            "--upstream", "python", "--workdir", str(tmp_path / "work"), "--json", str(out)]  # fmt: skip
    assert workers.main(argv, cluster) == 0
    got = json.loads(out.read_text())
    (run,) = got["runs"]
    assert run["k"] == 1
    assert run["source"] in ("compose_jobs", "history")
    assert run["procs"]["apply"]["composes"] == 27
    assert run["procs"]["apply"]["rc"] == 0
    assert run["procs"]["apply"]["cpu"] > 0
    made = sorted((j["sig"], j["release"]) for j in run["jobs"])
    assert made == sorted((s, r) for s in workers.SIGS for r in workers.RELEASES)
    assert 0 < run["before_first"] < run["wall"]
    parts = run["before_first"] + run["span"] + run["after_last"]
    assert abs(parts - run["wall"]) < 0.01
    assert got["medians"]["1"]["ratio"] == 1.0
    assert not list((tmp_path / "work").iterdir())  # the work dir is removed
