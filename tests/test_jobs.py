"""The compose jobs table (StateDB.jobs) on SQLite and on a real PostgreSQL (the state's
own backend, in a fresh database of the session's throwaway cluster)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from reconciler.hostconfig import StateConfig
from reconciler.state import StateDB
from reconciler.state.jobs import Jobs
from reconciler.state.postgres import PostgresDatabase
from reconciler.vocabulary import AttemptOutcome, Dialect, JobState, Trigger


class Connections:
    """Connections to one fresh state: ``connect()`` (closed at the end of the test) or
    ``with connect.own() as jobs`` (opened and closed in the calling thread: SQLite's
    connections belong to the thread that made them)."""

    def __init__(self, opener: Callable[[], tuple[Jobs, Callable[[], None]]]) -> None:
        self._open = opener
        self._closers: list[Callable[[], None]] = []

    def __call__(self) -> Jobs:
        jobs, close = self._open()
        self._closers.append(close)
        return jobs

    @contextmanager
    def own(self) -> Iterator[Jobs]:
        jobs, close = self._open()
        try:
            yield jobs
        finally:
            close()

    def close(self) -> None:
        for close in self._closers:
            close()


def _pg_opener(
    cluster: Any, name: str | None = None
) -> Callable[[], tuple[Jobs, Callable[[], None]]]:
    """Connections to a fresh PostgreSQL state (or database ``name``); a statement waits
    at most 5 s for a lock (a claim that waited for another's row would fail the test
    instead of hanging it)."""
    database = name or cluster.new_database("jobs")
    config = StateConfig(**cluster.state_config(database), statement_timeout=5.0)

    def opener() -> tuple[Jobs, Callable[[], None]]:
        state = StateDB(PostgresDatabase.connect(config, "test-jobs"))
        return state.jobs, state.close

    return opener


@pytest.fixture(params=[Dialect.SQLITE, Dialect.POSTGRESQL], ids=str)
def connect(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Connections]:
    if request.param is Dialect.SQLITE:

        def opener() -> tuple[Jobs, Callable[[], None]]:
            state = StateDB.open(tmp_path / "state")
            return state.jobs, state.close

    else:
        opener = _pg_opener(request.getfixturevalue("pg_cluster"))
    connections = Connections(opener)
    try:
        yield connections
    finally:
        connections.close()


def _submit(jobs: Jobs, sig: str = "core", since: float = 0.0) -> Any:
    return jobs.submit(sig, "9", "no finished compose yet", Trigger.COMMIT, "a" * 40, since)


def test_one_job_per_sig_release_and_a_finished_one_stands_for_the_plan(
    connect: Connections,
) -> None:
    jobs = connect()
    first = _submit(jobs)
    assert first.state is JobState.QUEUED and first.attempt == 0
    assert _submit(connect()).id == first.id  # another process's plan: the same job
    newer = connect().submit("core", "9", "upstream changed", Trigger.UPSTREAM, "b" * 40, 0.0)
    assert (newer.id, newer.revision, newer.trigger) == (first.id, "b" * 40, Trigger.UPSTREAM)
    assert _submit(jobs, "extras").id != first.id  # another SIG: its own job
    before = jobs.get(first.id).queued_at  # type: ignore[union-attr]
    claimed = jobs.claim("w1")
    assert claimed is not None and claimed.id == first.id  # the oldest first
    assert _submit(jobs).id == first.id  # running: still the same job
    assert jobs.finish(first.id, 1, JobState.DONE, compose_id="C-1", bytes=5, packages=2)
    # a plan that observed before it finished: that compose is the one it wanted
    again = _submit(jobs, since=before)
    assert (again.id, again.state, again.compose_id) == (first.id, JobState.DONE, "C-1")
    # a plan that observed after it finished wants a new compose
    later = _submit(jobs, since=jobs.get(first.id).finished_at + 0.001)  # type: ignore[union-attr]
    assert later.id != first.id and later.state is JobState.QUEUED
    assert jobs.counts()[JobState.QUEUED] == 2 and jobs.counts()[JobState.DONE] == 1


def test_concurrent_claims_never_take_one_job_twice(connect: Connections) -> None:
    setup = connect()
    queued = {_submit(setup, sig).id for sig in ("core", "extras", "cloud")}
    barrier = threading.Barrier(6, timeout=60)
    taken: list[int | None] = []
    lock = threading.Lock()

    def claim(i: int) -> None:
        with connect.own() as jobs:  # each worker its own connection
            barrier.wait()
            job = jobs.claim(f"w{i}")
        with lock:
            taken.append(None if job is None else job.id)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    got = [j for j in taken if j is not None]
    assert len(taken) == 6 and sorted(got) == sorted(queued)  # each once, the rest None
    running = setup.all(frozenset({JobState.RUNNING}))
    assert {j.id for j in running} == queued and all(j.attempt == 1 for j in running)


def test_concurrent_submits_of_one_sig_release_make_one_job(connect: Connections) -> None:
    barrier = threading.Barrier(5, timeout=60)
    ids: list[int] = []
    lock = threading.Lock()

    def submit() -> None:
        with connect.own() as jobs:
            barrier.wait()
            job = _submit(jobs)
        with lock:
            ids.append(job.id)

    threads = [threading.Thread(target=submit) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(ids) == 5 and len(set(ids)) == 1
    assert len(connect().all()) == 1


def test_postgresql_claim_skips_a_row_another_claimer_holds(pg_cluster: Any) -> None:
    """FOR UPDATE SKIP LOCKED: while one claimer's transaction holds the oldest queued
    job, another claims the next one at once instead of waiting or taking the same.
    (Row locks are PostgreSQL's; SQLite serialises whole write transactions.)"""
    name = pg_cluster.new_database("jobs")
    connect = Connections(_pg_opener(pg_cluster, name))
    try:
        jobs = connect()
        first, second = _submit(jobs, "core"), _submit(jobs, "extras")
        claimer = connect()
        with pg_cluster.connect(name) as holder, holder.transaction():
            holder.execute("SELECT id FROM compose_jobs WHERE id = %s FOR UPDATE", (first.id,))
            other = claimer.claim("w2")
        assert other is not None and other.id == second.id
        mine = jobs.claim("w1")
        assert mine is not None and mine.id == first.id
    finally:
        connect.close()


def test_an_expired_job_is_taken_again_and_the_old_attempt_is_refused(
    connect: Connections,
) -> None:
    jobs = connect()
    job = _submit(jobs)
    old = jobs.claim("w1")
    assert old is not None
    jobs.started(old.id, old.attempt, "core-9-20261204.0")
    assert jobs.expire(60) == []  # fresh heartbeat: nothing taken
    assert jobs.heartbeat(old.id, "w1", old.attempt)
    time.sleep(0.05)
    abandoned = jobs.expire(0.01)
    assert [(a.job, a.attempt, a.worker, a.compose_id, a.outcome) for a in abandoned] == [
        (job.id, 1, "w1", "core-9-20261204.0", AttemptOutcome.ABANDONED)
    ]
    assert jobs.get(job.id).state is JobState.QUEUED  # type: ignore[union-attr]
    new = connect().claim("w2")
    assert new is not None and (new.id, new.attempt, new.worker) == (job.id, 2, "w2")
    assert new.compose_id is None  # the new attempt makes its own
    # the old worker wakes up: its heartbeat and its result are refused
    assert not jobs.heartbeat(old.id, "w1", old.attempt)
    assert not jobs.finish(old.id, old.attempt, JobState.DONE, compose_id="core-9-20261204.0")
    assert jobs.finish(new.id, new.attempt, JobState.DONE, compose_id="core-9-20261204.1")
    done = jobs.get(job.id)
    assert done is not None and (done.state, done.compose_id) == (
        JobState.DONE,
        "core-9-20261204.1",
    )
    outcomes = [(a.attempt, a.outcome, a.compose_id) for a in jobs.attempts(job.id)]
    assert outcomes == [
        (1, AttemptOutcome.ABANDONED, "core-9-20261204.0"),
        (2, AttemptOutcome.DONE, "core-9-20261204.1"),
    ]
    assert jobs.composes("core", "9", 60).abandoned == {"core-9-20261204.0"}
    # a worker known dead (killed on this host) loses its job without the timeout
    third = _submit(jobs, "extras")
    taken = jobs.claim("here:1")
    assert taken is not None and taken.id == third.id
    assert jobs.composes("extras", "9", 60, lambda w: True).working == frozenset()
    assert jobs.expire(60, lambda w: w == "elsewhere:1") == []
    assert [a.job for a in jobs.expire(60, lambda w: w == "here:1")] == [third.id]
    with pytest.raises(ValueError, match="done or failed"):
        jobs.finish(job.id, 2, JobState.QUEUED)


@pytest.mark.parametrize("abandoned", [False, True])
def test_an_abandoned_doomed_attempt_is_no_verdict_on_the_upstream(abandoned: bool) -> None:
    """Planning (pure): a DOOMED compose of the upstream revision we would compose stops
    composing, unless a dead worker's attempt made it (the fact observing adds)."""
    from dataclasses import replace

    from reconciler.planning import plan
    from reconciler.vocabulary import ActionKind, Stage, TargetState

    from .planning_support import make_observed, make_spec

    composes = [
        {"id": "SIG-core-9-20261124.0", "upstream": "up0"},
        {"id": "SIG-core-9-20261125.0", "upstream": "up1", "status": "DOOMED"},
    ]
    observed = make_observed({"upstream": {"revision": "up1"}, "composes": composes})
    facts = observed.releases[("core", "9")]
    last = replace(facts.composes[-1], abandoned=abandoned)
    facts = replace(facts, composes=(*facts.composes[:-1], last))
    observed = replace(observed, releases={("core", "9"): facts})
    planned = plan(make_spec({"staging": None}), observed)
    composing = [a for a in planned.actions if a.kind is ActionKind.COMPOSE]
    (verdict,) = [v for v in planned.verdicts if v.stage is Stage.COMPOSE]
    if abandoned:
        assert len(composing) == 1 and verdict.state is TargetState.OUT_OF_SYNC
    else:
        assert composing == [] and verdict.state is TargetState.FAILED
        assert "was DOOMED" in verdict.reason
