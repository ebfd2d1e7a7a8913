"""Issue 18 end to end: several hosts on one world, against a real PostgreSQL (and the
one-host SQLite variants). Each host is a ``reconciler run`` or ``reconciler worker``
process with its own config and state directory; they share the trees and the state.

- composes of several SIGs spread across the processes, each made exactly once, while
  one process at a time leads (the history's nodes, the leader terms and the server's
  lock table say so);
- the leader SIGKILLed in the middle of a promotion: another process leads within the
  lease plus one interval, redoes the promotion in the mirror-safe order, every tree
  verifies, and the history and the file lists show one publication;
- a worker SIGKILLed in the middle of a compose: the job is taken again, the half-made
  compose is DOOMED, never published;
- PostgreSQL restarted while a pass runs: a clear error, a retry, no partial state.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.vocabulary import ComposeStatus

from .cluster_support import Process, World, make_world, wait_for, world_running
from .conftest import Upstream

#: the two tests that SIGKILL a process at an exact system call need strace (.ci/run installs it)
needs_strace = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")

SIGS3 = {sig: {"8": {}, "9": {}} for sig in ("core", "cloud", "kmods")}
LEASE, INTERVAL = 3, 2


def slow_rpms(upstream: Upstream, seconds: float) -> None:
    """Every package of core-common x86_64 answers after ``seconds``: composes last."""
    for rpm in sorted(upstream.repo_dir("core-common", "x86_64").rglob("*.rpm")):
        rel = rpm.relative_to(upstream.repo_dir("core-common", "x86_64"))
        upstream.server.delay(upstream.path("core-common", "x86_64", str(rel)), seconds)


def compose_dirs(world: World, sig: str, release: str) -> dict[str, str]:
    """The composes of a SIG release on disk and their STATUS."""
    tree = world.trees / "compose" / release
    out = {}
    for d in sorted(tree.glob(f"SIG-{sig}-{release}-*")) if tree.is_dir() else ():
        status = d / "STATUS"
        out[d.name] = status.read_text().strip() if status.is_file() else "?"
    return out


def staged(world: World) -> int:
    return int(world.sql("SELECT count(*) FROM targets WHERE stage = 'staging'")[0][0])


class LockWatch(threading.Thread):
    """Samples the server's lock table: how many backends hold the leader's advisory lock."""

    def __init__(self, world: World) -> None:
        super().__init__(daemon=True)
        self.world, self.most, self.samples = world, 0, 0
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.most = max(self.most, len(self.world.advisory_lock_holders()))
                self.samples += 1
            except Exception:  # a sample missed while the server restarts
                pass
            self.done.wait(0.1)


def verify(world: World, host: str) -> subprocess.CompletedProcess[str]:
    """Every tree as a client sees it (``verify PATH``: repomd.xml, metadata, packages),
    then every published target against what was published (``verify --drift``)."""
    config = world.config(host)
    last = None
    for args in (["verify", str(world.trees / "staging")],
                 ["verify", str(world.trees / "production")],
                 ["verify", "--drift"]):  # fmt: skip
        if args[-1].startswith("/") and not Path(args[-1]).is_dir():
            continue
        last = subprocess.run(
            [sys.executable, "-m", "reconciler.cli", *args, "--config", str(config)],
            check=False, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if last.returncode != 0:
            return last
    assert last is not None
    return last


def status_json(world: World, host: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "status", "--format", "json", "--config",
         world.config(host)], check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert rows, "no status rows"
    return rows[0]  # type: ignore[no-any-return]


@pytest.fixture
def pg_world(tmp_path: Path, upstream: Upstream, pg_cluster: Any) -> Iterator[World]:
    with world_running(make_world(tmp_path / "world", upstream, SIGS3, pg_cluster)) as w:
        yield w


def test_composes_spread_across_processes_each_once_under_one_leader(
    pg_world: World, upstream: Upstream
) -> None:
    world = pg_world
    slow_rpms(upstream, 0.4)
    workers = [world.worker(f"worker{i}", "--poll", "0.2") for i in (1, 2)]
    watch = LockWatch(world)
    runs = [world.run(name) for name in ("host-a", "host-b", "host-c")]
    everyone = [*workers, *runs]
    wait_for(lambda: staged(world) == 6, "every SIG release staged", 240, everyone)
    watch.done.set()
    jobs = world.sql("SELECT sig, release, state, attempt, worker, compose_id FROM compose_jobs")
    assert len(jobs) == 6 and {j[2] for j in jobs} == {"done"}, jobs
    assert {(j[0], j[1]) for j in jobs} == {(s, r) for s in SIGS3 for r in ("8", "9")}
    for sig in SIGS3:
        for release in ("8", "9"):
            made = compose_dirs(world, sig, release)
            assert list(made.values()) == [ComposeStatus.FINISHED.value], (sig, release, made)
    composers = {j[4].rsplit(":", 1)[0] for j in jobs}
    assert len(composers) >= 2, f"every compose was made by one process: {jobs}"
    # one leader: one term, its holder did every publish, the lock table never showed two
    terms = world.sql("SELECT term, holder FROM leader_terms")
    assert len(terms) == 1, terms
    nodes = world.sql("SELECT DISTINCT node FROM history WHERE action = 'publish'")
    assert nodes == [(terms[0][1],)], (nodes, terms)
    assert watch.samples > 10 and watch.most == 1
    assert verify(world, "host-a").returncode == 0
    leader = status_json(world, "host-b").get("leader")
    assert leader is not None and leader["holder"] == terms[0][1], leader


def leader_row(world: World) -> tuple[int, str, float] | None:
    rows = world.sql("SELECT term, holder, since FROM leader WHERE id = 1")
    return (int(rows[0][0]), str(rows[0][1]), float(rows[0][2])) if rows else None


def holder_process(world: World, runs: list[Process]) -> Process:
    row = leader_row(world)
    assert row is not None
    (match,) = [p for p in runs if row[1].endswith(f":{p.pid}")]
    return match


@needs_strace
def test_leader_killed_mid_promotion_fails_over_and_publishes_once(
    tmp_path: Path, upstream: Upstream, pg_cluster: Any
) -> None:
    sigs = {"core": {"9": {}}, "cloud": {"9": {}}}
    with world_running(make_world(tmp_path / "world", upstream, sigs, pg_cluster)) as world:
        runs = [world.run(name, lease=LEASE) for name in ("host-a", "host-b")]
        wait_for(lambda: staged(world) == 2, "staging", 180, runs)
        wait_for(lambda: leader_row(world) is not None, "a leader", 30, runs)
        leader = holder_process(world, runs)
        other = next(p for p in runs if p is not leader)
        composes = dict(world.sql("SELECT sig, compose_id FROM targets WHERE stage = 'staging'"))
        # SIGKILL at the leader's third link(2) of the promotion: packages are half placed
        with killed_at_third_link(leader.pid):
            t0 = time.monotonic()
            world.write_sigs(
                {s: {"9": {"production": cid}} for s, cid in composes.items()}, "Promote"
            )
            killed = wait_for(lambda: leader.proc.poll() is not None, "the leader killed", 120)
        first = leader_row(world)
        taken = wait_for(
            lambda: (row := leader_row(world)) is not None and row[1].endswith(f":{other.pid}"),
            "a new leader", 60, [other],
        )  # fmt: skip
        converged = wait_for(
            lambda: len(world.sql("SELECT 1 FROM targets WHERE stage = 'production'")) == 2,
            "production", 120, [other],
        )  # fmt: skip
        result = verify(world, "host-b")
        verified = time.monotonic()
        timeline = {
            "promotion pushed": 0.0,
            "leader killed (SIGKILL at its 3rd link)": killed - t0,
            "new leader": taken - t0,
            "production converged": converged - t0,
            "every tree verified": verified - t0,
        }
        print("failover timeline (s):", json.dumps(timeline, indent=1))
        print("lease before / after:", first, leader_row(world))
        assert result.returncode == 0, result.stdout + result.stderr
        # the promised deadline: the lease expiry plus one interval (and room for a
        # loaded machine); a promotion cannot start before the old lease expired
        assert taken - killed <= LEASE + INTERVAL + 10
        for sig, cid in composes.items():
            done = world.sql(
                "SELECT result, error, node FROM history WHERE action = 'publish'"
                " AND stage = 'production' AND sig = ? AND compose_id = ?", sig, cid,
            )  # fmt: skip
            assert [r[0] for r in done].count("ok") == 1, done
            events = world.sql(
                "SELECT compose_id FROM stage_events WHERE stage = 'production' AND sig = ?", sig
            )
            assert events == [(cid,)], events
        lists = _listed(world)
        assert len(lists) == len(set(lists)), "a path is listed twice"


@contextlib.contextmanager
def killed_at_third_link(pid: int) -> Iterator[None]:
    """strace attached to the running process ``pid`` (every thread): its third link(2)
    from now on gets SIGKILL, the real kill of a promotion half placed."""
    strace = subprocess.Popen(
        ["strace", "-f", "-qq", "-o", "/dev/null", "-p", str(pid),
         "-e", "trace=linkat", "-e", "inject=linkat:signal=SIGKILL:when=3"],
    )  # fmt: skip
    try:
        wait_for(lambda: _traced(pid), "strace attached", 30)
        yield
    finally:
        strace.wait(timeout=30)


def _traced(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    return any(
        line.split()[1] != "0" for line in status.splitlines() if line.startswith("TracerPid")
    )


def _listed(world: World) -> list[str]:
    """The paths ``fullfiletimelist-sig`` names (quick-fedora-mirror's list)."""
    found = sorted((world.trees / "production").rglob("fullfiletimelist*"))
    assert found, "no file lists in production"
    paths = []
    for line in found[0].read_text().splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and parts[1] in {"f", "d", "l"}:
            paths.append(parts[3])
    return paths


def test_worker_killed_mid_compose_is_retaken_and_its_half_compose_doomed(
    tmp_path: Path, upstream: Upstream, pg_cluster: Any
) -> None:
    sigs = {"core": {"9": {}}, "cloud": {"9": {}}, "kmods": {"9": {}}}
    slow_rpms(upstream, 1.5)
    with world_running(make_world(tmp_path / "world", upstream, sigs, pg_cluster)) as world:
        workers = [world.worker(f"worker{i}", "--poll", "0.2", job_timeout=4) for i in (1, 2)]
        run = world.run("host-a", job_timeout=4)

        def a_worker_composes() -> bool:
            rows = world.sql("SELECT worker FROM compose_jobs WHERE state = 'running'"
                             " AND compose_id IS NOT NULL")  # fmt: skip
            return any(r[0].startswith("worker1:") for r in rows)

        wait_for(a_worker_composes, "worker1 composing", 120, [run, *workers])
        (job,) = world.sql("SELECT id, sig, compose_id FROM compose_jobs WHERE state = 'running'"
                           " AND worker LIKE ?", "worker1:%")  # fmt: skip
        workers[0].kill()
        wait_for(lambda: staged(world) == 3, "every SIG staged", 240, [run, workers[1]])
        sig, half = str(job[1]), str(job[2])
        made = compose_dirs(world, sig, "9")
        assert made[half] == ComposeStatus.DOOMED.value, made
        finished = [c for c, s in made.items() if s == ComposeStatus.FINISHED.value]
        assert len(finished) == 1, made
        (row,) = world.sql("SELECT state, attempt, compose_id FROM compose_jobs WHERE id = ?",
                           job[0])  # fmt: skip
        assert row[0] == "done" and row[1] >= 2 and row[2] == finished[0], row
        staged_cid = world.sql("SELECT compose_id FROM targets WHERE stage = 'staging'"
                               " AND sig = ?", sig)  # fmt: skip
        assert staged_cid == [(finished[0],)]
        assert verify(world, "host-a").returncode == 0


def test_postgresql_restarted_while_a_pass_runs(
    tmp_path: Path, upstream: Upstream, pg_cluster: Any
) -> None:
    sigs = {"core": {"9": {}}}
    slow_rpms(upstream, 1.0)
    with world_running(make_world(tmp_path / "world", upstream, sigs, pg_cluster)) as world:
        run = world.run("host-a")
        wait_for(
            lambda: bool(world.sql("SELECT 1 FROM compose_jobs WHERE state = 'running'"
                                   " AND compose_id IS NOT NULL")),
            "a compose running", 120, [run],
        )  # fmt: skip
        pg_cluster.restart(down=1.0)
        wait_for(lambda: staged(world) == 1, "staging after the restart", 240, [run])
        # a clear error, naming the database (never its password), and a retry
        said = [e for e in run.log.events if e.get("level") in {"warning", "error"}
                and "postgresql://" in str(e.get("message", ""))]  # fmt: skip
        assert said, "nothing said the state database went away"
        assert not any("s3cret" in json.dumps(e) for e in run.log.events), "password logged"
        # no partial state: no action left running, the job composed once and recorded
        assert world.sql("SELECT count(*) FROM history WHERE result = 'running'") == [(0,)]
        jobs = world.sql("SELECT state, compose_id FROM compose_jobs ORDER BY id")
        done = [cid for state, cid in jobs if state == "done"]
        assert len(done) == 1 and all(state != "running" for state, _ in jobs), jobs
        # a compose the restart cut (its start could not be recorded) is DOOMED, never
        # published, and pruned; the restart cut mid-download: the end is recorded late
        made = compose_dirs(world, "core", "9")
        assert made.pop(done[0]) == ComposeStatus.FINISHED.value
        assert set(made.values()) <= {ComposeStatus.DOOMED.value}, made
        assert world.sql("SELECT compose_id FROM targets WHERE stage = 'staging'") == [(done[0],)]
        assert verify(world, "host-a").returncode == 0


# -- the same on one host, with the SQLite file -----------------------------------------


def test_sqlite_run_and_worker_compose_each_sig_once(tmp_path: Path, upstream: Upstream) -> None:
    slow_rpms(upstream, 0.4)
    with world_running(make_world(tmp_path / "world", upstream, SIGS3, None)) as world:
        worker = world.worker("worker1", "--poll", "0.2")
        run = world.run("host-a")
        wait_for(lambda: staged(world) == 6, "every SIG release staged", 240, [run, worker])
        jobs = world.sql("SELECT sig, release, state, worker FROM compose_jobs")
        assert len(jobs) == 6 and {j[2] for j in jobs} == {"done"}, jobs
        for sig in SIGS3:
            for release in ("8", "9"):
                assert len(compose_dirs(world, sig, release)) == 1
        assert verify(world, "host-a").returncode == 0


@needs_strace
def test_sqlite_run_killed_mid_promotion_publishes_once_after_restart(
    tmp_path: Path, upstream: Upstream
) -> None:
    with world_running(make_world(tmp_path / "world", upstream, {"core": {"9": {}}}, None)) as w:
        run = w.run("host-a")
        wait_for(lambda: staged(w) == 1, "staging", 180, [run])
        (cid,) = w.sql("SELECT compose_id FROM targets WHERE stage = 'staging'")[0]
        with killed_at_third_link(run.pid):
            w.write_sigs({"core": {"9": {"production": cid}}}, "Promote")
            wait_for(lambda: run.proc.poll() is not None, "the run killed", 120)
        again = w.run("host-a")
        wait_for(lambda: bool(w.sql("SELECT 1 FROM targets WHERE stage = 'production'")),
                 "production", 120, [again])  # fmt: skip
        done = w.sql("SELECT result FROM history WHERE action = 'publish' AND stage = 'production'")
        assert [r[0] for r in done].count("ok") == 1, done
        assert w.sql("SELECT compose_id FROM stage_events WHERE stage = 'production'") == [(cid,)]
        assert verify(w, "host-a").returncode == 0
