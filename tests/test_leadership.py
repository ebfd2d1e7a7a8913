"""One leader publishes (issue 18): the lease on a real PostgreSQL (advisory lock on a
connection of its own, a renewed row, a wait for the old row's expiry), the apply's
fence, and ``reconciler run`` processes sharing one state: one leads, the others follow.

The PostgreSQL lease tests migrate a fresh database (``StateDB.connect``) and then use
only the lease's own connections; the ``run`` tests run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import yaml

from reconciler.facts import TargetKey
from reconciler.hostconfig import HostConfig, StateConfig
from reconciler.leadership import LEASE_KEY, FileLease, PgLease
from reconciler.reconciling import open_state, run_pass
from reconciler.specfile import load_host_config
from reconciler.state import ActionStart, StateDB
from reconciler.state.leases import LeaderRecord
from reconciler.verifying import verify_tree
from reconciler.vocabulary import INTERRUPTED, Result, Stage

from .conftest import DesiredState, Host, reconciler_process, wait_until, write_host_config
from .test_metrics import Reader

LEASE = 3  # seconds: renewed every second


@pytest.fixture
def lease_db(pg_cluster: Any, tmp_path: Path) -> str:
    """A fresh database, migrated (the lease tables are schema 9's)."""
    name = str(pg_cluster.new_database("lease"))
    StateDB.connect(lease_host(pg_cluster, name, tmp_path, "migrate")).close()
    return name


def lease_host(pg_cluster: Any, db: str, tmp_path: Path, node: str) -> HostConfig:
    state = StateConfig(url=pg_cluster.url(db), password_file=pg_cluster.password_file,
                        lease=LEASE, node=node, connect_timeout=5, statement_timeout=5)  # fmt: skip
    return HostConfig(state_dir=tmp_path / node, state=state)


@pytest.fixture
def contenders(pg_cluster: Any, lease_db: str, tmp_path: Path) -> Iterator[tuple[PgLease, PgLease]]:
    """Two leases on one database, as two hosts would hold them (closed at the end)."""
    stop = threading.Event()
    a = PgLease(lease_host(pg_cluster, lease_db, tmp_path, "a"), stop)
    b = PgLease(lease_host(pg_cluster, lease_db, tmp_path, "b"), stop)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def leads(lease: PgLease) -> bool:
    """One pass's question: does this process lead? (The PostgreSQL lease reads nothing of
    the state it is given.)"""
    with lease.lead(cast(StateDB, None)) as leading:
        return bool(leading)


def leader_row(pg_cluster: Any, db: str) -> LeaderRecord:
    with pg_cluster.connect(db) as conn:
        row = conn.execute(
            "SELECT term, holder, since, renewed_at, expires_at FROM leader WHERE id = 1"
        ).fetchone()
    assert row is not None, "no leader row"
    return LeaderRecord.from_row(row)


def advisory_holders(pg_cluster: Any, db: str) -> list[str]:
    """The application names of the sessions that hold the lease's advisory lock."""
    with pg_cluster.connect(db) as conn:
        rows = conn.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (LEASE_KEY >> 32, LEASE_KEY & 0xFFFFFFFF),
        ).fetchall()
    return sorted(str(r[0]) for r in rows)


def test_two_contenders_one_wins(
    contenders: tuple[PgLease, PgLease], pg_cluster: Any, lease_db: str
) -> None:
    a, b = contenders
    assert leads(a)
    assert not leads(b), "the advisory lock is held: b follows"
    assert leads(a), "a keeps leading, pass after pass"
    assert a.valid() and not b.valid()
    assert advisory_holders(pg_cluster, lease_db) == [f"{a.holder} lease"]
    row = leader_row(pg_cluster, lease_db)
    assert (row.term, row.holder) == (1, a.holder)
    time.sleep(LEASE / 3 * 2.5)  # two renewals at least
    renewed = leader_row(pg_cluster, lease_db)
    assert renewed.term == 1 and renewed.renewed_at > row.renewed_at
    assert a.valid(), "renewed: still valid after more than half the lease"
    # a clean exit gives the lease up: b leads at once, without waiting for the expiry
    a.close()
    started = time.monotonic()
    assert leads(b)
    assert time.monotonic() - started < LEASE / 2
    assert leader_row(pg_cluster, lease_db).term == 2
    assert advisory_holders(pg_cluster, lease_db) == [f"{b.holder} lease"]


def test_a_leader_cut_off_stops_before_its_successor_starts(
    contenders: tuple[PgLease, PgLease], pg_cluster: Any, lease_db: str
) -> None:
    a, b = contenders
    assert leads(a)
    with pg_cluster.connect(lease_db) as conn:  # the network cuts a off the database
        (killed,) = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"{a.holder} lease",),
        ).fetchone()
    cut = time.monotonic()
    assert killed
    while a.valid():
        assert time.monotonic() < cut + LEASE, "still valid a whole lease after the cut"
        time.sleep(0.02)
    invalid_after = time.monotonic() - cut
    old = leader_row(pg_cluster, lease_db)  # a cannot renew it any more
    assert leads(b), "the lock went with a's session: b takes it, after the old lease"
    new = leader_row(pg_cluster, lease_db)
    assert (new.term, new.holder) == (2, b.holder)
    assert new.since >= old.expires_at, (new, old)
    # a notices at its next pass: it follows (and would try again later, on a new connection)
    assert not leads(a) and not a.valid()
    assert advisory_holders(pg_cluster, lease_db) == [f"{b.holder} lease"]
    assert invalid_after < LEASE


def test_a_leader_whose_database_restarts_leads_again_on_a_later_pass(
    contenders: tuple[PgLease, PgLease], pg_cluster: Any, lease_db: str,
    warnings_log: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    a, _b = contenders
    assert leads(a)
    before = leader_row(pg_cluster, lease_db)
    pg_cluster.restart()
    restarted = time.monotonic()
    while a.valid():
        assert time.monotonic() < restarted + LEASE, "still valid a whole lease after the restart"
        time.sleep(0.02)
    assert not leads(a), "the pass after the loss follows"
    assert any(getattr(r, "event", None) == "leader.lost" for r in warnings_log.records)
    last = leader_row(pg_cluster, lease_db)  # as a last renewed it (kept over the restart)
    assert (last.term, last.holder) == (before.term, a.holder)
    assert leads(a), "the next one takes the lease again, on a new connection"
    after = leader_row(pg_cluster, lease_db)
    assert (after.term, after.holder) == (before.term + 1, a.holder)
    assert after.since >= last.expires_at, "not before its own old lease ended"
    assert advisory_holders(pg_cluster, lease_db) == [f"{a.holder} lease"]


CHILD = """
import sys, threading, time
from pathlib import Path
from reconciler.leadership import PgLease
from reconciler.specfile import load_host_config
lease = PgLease(load_host_config(Path(sys.argv[1])), threading.Event())
with lease.lead(None) as leading:
    print("leading" if leading else "following", flush=True)
time.sleep(600)
"""


def test_sigkill_of_the_holder_hands_the_lease_over_within_the_lease(
    contenders: tuple[PgLease, PgLease], pg_cluster: Any, lease_db: str, tmp_path: Path
) -> None:
    _a, b = contenders
    state = pg_cluster.state_config(lease_db, lease=LEASE, node="victim")
    (tmp_path / "victim").mkdir()
    config = write_host_config(tmp_path / "victim", "http://127.0.0.1:9", state=state)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(config)], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "leading", child.stderr
        assert not leads(b)
        child.send_signal(signal.SIGKILL)
        killed = time.monotonic()
    finally:
        child.kill()
        child.communicate(timeout=10)  # and closes its pipes
    old = leader_row(pg_cluster, lease_db)
    assert old.holder == f"victim:{child.pid}"
    assert leads(b)
    took = time.monotonic() - killed
    assert took < LEASE + 1.5, f"took {took:.1f}s"
    new = leader_row(pg_cluster, lease_db)
    assert (new.term, new.holder) == (old.term + 1, b.holder)
    assert new.since >= old.expires_at


# -- the fence: a lease lost mid-apply stops it, recorded as interrupted -------------------


def test_a_lease_lost_before_a_publish_stops_the_apply_as_interrupted(
    host: Host, desired_state: DesiredState
) -> None:
    answers = iter([True, True])  # before the compose, before the publish; then lost

    def fence() -> bool:
        return next(answers, False)

    config = load_host_config(host.config_path)
    with StateDB.open(config.state_dir) as state:
        result = run_pass(config, state, apply=True, spec_dir=desired_state.path, fence=fence)
        assert result.applied is not None and result.applied.stopped and not result.ok
        assert [r.result for r in result.applied.results] == [Result.OK]
        compose, publish = sorted(state.history.entries(), key=lambda h: h.id)
        assert (compose.action, compose.result) == ("compose", Result.OK)
        assert (publish.action, publish.result, publish.error) == (
            "publish", Result.FAILED, INTERRUPTED)  # fmt: skip
        assert state.targets.get("core", "9", Stage.STAGING) is None
        assert not state.targets.statuses(), "a leader that lost its lease records no status"
        assert {compose.node, publish.node} == {f"{os.uname().nodename}:{os.getpid()}"}
    assert not (host.root / "staging" / "mirror").exists(), "nothing was placed"


def test_a_lease_lapsing_mid_publish_stops_before_the_metadata_and_the_next_leader_redoes_it(
    host: Host, desired_state: DesiredState
) -> None:
    """The fence is asked again before each phase of a publish: a lease that lapses once
    the packages are placed stops the publish before any metadata or repomd.xml (the
    mirrors see the old repository, or none), and the next leader's publish completes it."""
    staging = host.root / "staging"

    def fence() -> bool:  # the lease lapses once packages are in the staging tree
        return not any(staging.rglob("*.rpm")) if staging.is_dir() else True

    config = load_host_config(host.config_path)
    key = TargetKey(Stage.STAGING, "core", "9")
    with StateDB.open(config.state_dir) as state:
        result = run_pass(config, state, apply=True, spec_dir=desired_state.path, fence=fence)
        assert result.applied is not None and result.applied.stopped
        publish = state.history.entries(1)[0]
        assert (publish.action, publish.result, publish.error) == (
            "publish", Result.FAILED, INTERRUPTED)  # fmt: skip
        assert any(staging.rglob("*.rpm")), "the packages phase ran"
        assert not any(staging.rglob("repodata/*")), "no metadata after the lease lapsed"
        assert state.targets.get("core", "9", Stage.STAGING) is None
        assert state.targets.is_publishing(key), "the next publish compares everything"
        again = run_pass(config, state, apply=True, spec_dir=desired_state.path)
        assert again.ok
        assert len(state.targets.events("core", "9", Stage.STAGING)) == 1
    assert verify_tree(staging).ok


# -- SQLite: the apply lock is the lease -----------------------------------------------------


def test_on_sqlite_the_apply_lock_leads_and_the_leader_keeps_it_between_passes(
    tmp_path: Path,
) -> None:
    host = HostConfig(state_dir=tmp_path / "state", interval=60, state=StateConfig(lease=5))
    a, b = FileLease(host), FileLease(host)
    b.holder = "other:1"  # two processes (one here: flock is per open file, not per process)
    with StateDB.open(host.state_dir) as state:
        with a.lead(state) as leading:
            assert leading and a.valid()
            with b.lead(state) as other:
                assert not other and not b.valid(), "the apply lock is taken"
        assert not a.valid(), "valid only while the lock is held"
        with b.lead(state) as other:
            assert not other, "the leader's lease lasts a lease and an interval past its pass"
        with a.lead(state) as leading:
            assert leading
        held = state.leases.current()
        assert held is not None and (held.term, held.holder) == (1, a.holder)
        assert held.expires_at >= state.clock() + 5 + 60
        a.close()  # a clean exit gives it up
        with b.lead(state) as other:
            assert other
        assert [(t.term, t.holder) for t in state.leases.terms()] == [(2, b.holder), (1, a.holder)]
        assert state.leases.terms()[1].until is not None


def test_interrupted_marks_spare_the_actions_of_a_process_running_a_job(tmp_path: Path) -> None:
    with StateDB.open(tmp_path) as state:
        for node in ("dead:1", "worker:2", None):
            state.history.start(ActionStart("compose", "core", "9", None, None, "why", None,
                                            None, datetime.now(UTC), node=node))  # fmt: skip
    conn = sqlite3.connect(tmp_path / "state.db")
    with conn:
        conn.execute("INSERT INTO compose_jobs (sig, release, state, reason, queued_at, worker)"
                     " VALUES ('core', '9', 'running', 'why', 0, 'worker:2')")  # fmt: skip
    conn.close()
    with StateDB.open(tmp_path) as state:
        assert state.history.mark_interrupted(datetime.now(UTC)) == 2
        assert [h.node for h in state.history.running()] == ["worker:2"]


# -- reconciler run processes sharing one state ------------------------------------------------


def metric(base: str, name: str) -> dict[str, float]:
    """The samples of ``name`` on /metrics, by their label text."""
    body = httpx.get(f"{base}/metrics", timeout=5).text
    return {labels: float(value) for labels, value in
            re.findall(rf"^{name}(\{{[^}}]*\}})? ([0-9.e+-]+)$", body, re.M)}  # fmt: skip


def _passes(base: str) -> int:
    try:
        return int(sum(metric(base, "reconciler_passes_total").values()))
    except httpx.TransportError:
        return 0


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_run_processes_one_leads_the_other_follows(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, upstream: Any,
    desired_state: DesiredState, cli: Any,
) -> None:  # fmt: skip
    extra: dict[str, Any] = {}
    if backend == "postgresql":
        extra = dict(request.getfixturevalue("pg_state"))
    root = tmp_path / "host"
    root.mkdir()
    config = write_host_config(root, upstream.server.base_url, interval=2,
                               state={**extra, "lease": 2, "node": "n1"})  # fmt: skip
    host = load_host_config(config)
    interval = 2.0
    with ExitStack() as stack:
        procs, readers, bases = [], [], []
        for _ in range(2):
            proc = reconciler_process("run", "--config", config, "--desired-state",
                                      desired_state.path)  # fmt: skip
            assert proc.stderr is not None
            reader = Reader(proc.stderr)
            stack.callback(_end, proc, reader)
            procs.append(proc)
            readers.append(reader)
            bases.append(f"http://{reader.wait_for('metrics.listening')['address']}")

        def converged() -> bool:
            with open_state(host) as state:
                return state.targets.get("core", "9", Stage.STAGING) is not None

        wait_until(converged, procs[0], "the staging publish", timeout=120)
        for proc, base in zip(procs, bases, strict=True):
            start = _passes(base)
            wait_until(lambda b=base, s=start: _passes(b) > s, proc, "one more pass", 60)
        with open_state(host) as state:
            held = state.leases.current()
            terms = state.leases.terms()
            nodes = {h.node for h in state.history.entries()}
        assert held is not None and len(terms) == 1, terms
        leader = next(i for i, p in enumerate(procs) if held.holder == f"n1:{p.pid}")
        follower = 1 - leader
        assert nodes == {held.holder}, "only the leader applied"
        assert any(e.get("event") == "pass.follow" for e in readers[follower].events)
        for r in readers:
            failed = [e for e in r.events if e.get("event") == "pass.failed"]
            assert not failed, failed
        for i, base in enumerate(bases):
            assert metric(base, "reconciler_is_leader") == {"": float(i == leader)}
            assert metric(base, "reconciler_leader") == {f'{{holder="{held.holder}"}}': 1.0}
            assert metric(base, "reconciler_leader_term") == {"": 1.0}
            jobs = metric(base, "reconciler_compose_jobs")  # the one compose, as a job
            assert jobs['{state="done"}'] == 1.0 and jobs['{state="running"}'] == 0.0, jobs
        shown = cli("status", "--format", "json", "--config", config).out
        assert {row["leader"]["holder"] for row in yaml.safe_load(shown)} == {held.holder}
        assert f"leader {held.holder} (term 1)" in cli("status", "--config", config).out
        page = cli("status", "--format", "html", "--config", config).out
        assert held.holder in page[page.index('id="leader"') :].split("</div>")[0]
        # the leader dies: the follower leads within the lease and one interval
        procs[leader].send_signal(signal.SIGKILL)
        procs[leader].wait(timeout=10)
        killed = time.monotonic()

        def taken() -> bool:
            with open_state(host) as state:
                now = state.leases.current()
            return now is not None and now.holder == f"n1:{procs[follower].pid}"

        wait_until(taken, procs[follower], "the follower to lead", timeout=30)
        took = time.monotonic() - killed
        assert took < 2 + 2 * (1.1 * interval) + 3, f"took {took:.1f}s"  # lease + span + pass
        with open_state(host) as state:
            assert [t.term for t in state.leases.terms()] == [2, 1]
        procs[follower].send_signal(signal.SIGTERM)
        assert procs[follower].wait(timeout=30) == 0


def _end(proc: subprocess.Popen[str], reader: Reader) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    reader.join(timeout=5)
    assert proc.stderr is not None
    proc.stderr.close()
