"""``reconciler worker`` and the applier composing through jobs: real processes, a real
upstream over HTTP, real composes (SQLite state shared by the processes of one host)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.composemeta import read_status
from reconciler.specfile import load_host_config
from reconciler.state import StateDB
from reconciler.vocabulary import AttemptOutcome, ComposeStatus, JobState, Result, Trigger

from .conftest import (
    DesiredState,
    Upstream,
    git_host,
    make_desired_state,
    reconciler_process,
    sample_release,
    wait_until,
    write_host_config,
)

SIGS = ("core", "extras")


def _world(tmp_path: Path, upstream: Upstream, **state: Any) -> tuple[Path, Path]:
    """Two SIGs (core, extras) of release 9 from the sample upstream; (config, desired state)."""
    ds = make_desired_state(tmp_path / "desired-state")
    doc = {"sig": "extras", "releases": {"9": sample_release()}}
    (ds.path / "sigs" / "extras.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    root = tmp_path / "host"
    root.mkdir()
    return write_host_config(root, upstream.server.base_url, state=state), ds.path


def _state(config: Path) -> StateDB:
    return StateDB.open(load_host_config(config).state_dir)


def _events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def _composes(config: Path, sig: str) -> dict[str, ComposeStatus | None]:
    """Every compose directory of SIG release 9 and its STATUS."""
    tree = load_host_config(config).compose_tree(sig, "9")
    return {
        d.name: read_status(d)
        for d in sorted(tree.release_dir.glob(f"*-{sig}-9-*"))
        if d.is_dir() and not d.is_symlink()
    }


def _stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM (the current compose finishes), wait; its stderr. Exit 0 expected."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return err


def test_a_worker_composes_the_submitted_jobs_of_two_sigs(
    tmp_path: Path, upstream: Upstream
) -> None:
    config, ds = _world(tmp_path, upstream)
    with _state(config) as state:
        wanted = [state.jobs.submit(s, "9", "test", Trigger.COMMIT, None, 0.0).id for s in SIGS]
    proc = reconciler_process("worker", "--once", "--config", config, "--desired-state", ds)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    with _state(config) as state:
        jobs = [state.jobs.get(i) for i in wanted]
        attempts = state.jobs.attempts()
    for sig, job in zip(SIGS, jobs, strict=True):
        assert job is not None and job.state is JobState.DONE, job
        assert job.worker is not None and job.worker.endswith(f":{proc.pid}")
        assert _composes(config, sig) == {job.compose_id: ComposeStatus.FINISHED}
        assert job.packages > 0
    assert [(a.attempt, a.outcome) for a in attempts] == [(1, AttemptOutcome.DONE)] * 2
    done = [e for e in _events(err) if e["event"] == "job.done"]
    assert sorted((e["sig"], e["compose_id"]) for e in done) == sorted(
        (j.sig, j.compose_id) for j in jobs if j is not None
    )


def test_a_killed_workers_job_is_taken_again_and_its_half_made_compose_doomed(
    tmp_path: Path, upstream: Upstream, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 mid-compose: once job_timeout passed, the apply that wants the compose
    takes the job again, marks the half-made directory DOOMED and makes a new compose
    that FINISHES; one compose is recorded (history, job, attempts), then all is in sync."""
    config, ds = _world(tmp_path, upstream, job_timeout=2)
    (ds / "sigs" / "extras.yaml").unlink()  # one SIG is enough here
    upstream.server.delay(upstream.path("core-common", "x86_64", "repodata/repomd.xml"), 5, times=1)
    with _state(config) as state:
        job = state.jobs.submit("core", "9", "no finished compose yet", Trigger.COMMIT, None, 0.0)
    first = reconciler_process("worker", "--config", config, "--desired-state", ds)

    def half_made() -> str | None:
        with _state(config) as state:
            return state.jobs.get(job.id).compose_id  # type: ignore[union-attr]

    try:
        wait_until(
            lambda: (cid := half_made()) is not None and cid in _composes(config, "core"),
            first,
            "the first attempt's compose directory",
            timeout=60,
        )
    finally:
        first.kill()
        first.communicate(timeout=60)
    half = half_made()
    assert _composes(config, "core") == {half: ComposeStatus.STARTED}
    with _state(config) as state:  # while its heartbeat is fresh, the compose runs
        assert state.jobs.composes("core", "9", 2).working == {half}
    deadline = time.monotonic() + 30
    while _working(config) and time.monotonic() < deadline:
        time.sleep(0.1)

    monkeypatch.setenv("RECONCILER_LOG_FORMAT", "json")
    apply = reconciler_process("apply", "--yes", "--config", config, "--desired-state", ds)
    _, err = apply.communicate(timeout=300)
    assert apply.returncode == 0, err

    with _state(config) as state:
        done = state.jobs.get(job.id)
        attempts = state.jobs.attempts(job.id)
        history = state.history.entries()
    assert done is not None and done.state is JobState.DONE and done.attempt == 2
    assert done.compose_id not in (None, half)
    assert [(a.attempt, a.outcome, a.compose_id) for a in attempts] == [
        (1, AttemptOutcome.ABANDONED, half),
        (2, AttemptOutcome.DONE, done.compose_id),
    ]
    composed = [(h.result, h.compose_id) for h in history if h.action == "compose"]
    assert composed == [(Result.OK, done.compose_id)]
    events = {(e["event"], e.get("compose_id")) for e in _events(err)}
    assert {("job.expired", half), ("job.doomed", half)} <= events
    # the dead attempt's directory: DOOMED, then pruned by the same plan (a dead compose)
    assert _composes(config, "core") == {done.compose_id: ComposeStatus.FINISHED}
    assert [(h.result, h.compose_id) for h in history if h.action == "prune"] == [(Result.OK, half)]
    # the abandoned DOOMED attempt is no verdict on the upstream: nothing left to do
    assert cli("plan", "--config", config, "--desired-state", ds).code == 0


def _working(config: Path) -> frozenset[str]:
    with _state(config) as state:
        return state.jobs.composes("core", "9", load_host_config(config).state.job_timeout).working


def test_apply_and_a_worker_beside_it_make_each_compose_once(
    tmp_path: Path, upstream: Upstream, cli: Any
) -> None:
    config, ds = _world(tmp_path, upstream)
    with _state(config):
        pass  # the state exists before the worker looks at it
    worker = reconciler_process(
        "worker", "--config", config, "--desired-state", ds, "--poll", "0.1"
    )
    try:
        result = cli("apply", "--yes", "--config", config, "--desired-state", ds)
    finally:
        err = _stop(worker)
    assert result.code == 0, result.err + result.out
    with _state(config) as state:
        jobs = state.jobs.all()
        attempts = state.jobs.attempts()
        composed = [h for h in state.history.entries() if h.action == "compose"]
    assert sorted((j.sig, j.state, j.attempt) for j in jobs) == [
        (s, JobState.DONE, 1) for s in SIGS
    ]
    assert len(attempts) == 2
    for sig in SIGS:
        (cid,) = [j.compose_id for j in jobs if j.sig == sig]
        assert _composes(config, sig) == {cid: ComposeStatus.FINISHED}  # made once
        assert [(h.result, h.compose_id) for h in composed if h.sig == sig] == [(Result.OK, cid)]
    workers = {j.worker for j in jobs}
    assert all(w is not None and w.startswith(f"{os.uname().nodename}:") for w in workers)
    assert any(e["event"] == "worker.stop" for e in _events(err))


def test_the_worker_refuses_a_bad_poll(cli: Any) -> None:
    with pytest.raises(SystemExit):
        cli("worker", "--poll", "0")


def test_a_process_killed_on_this_host_is_known_dead(tmp_path: Path, upstream: Upstream) -> None:
    """What lets the next apply take a killed apply's job at once (not after job_timeout)."""
    from reconciler.nodes import is_dead_here

    config, _ = _world(tmp_path, upstream, node="here")
    host = load_host_config(config)
    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert not is_dead_here(host, f"here:{proc.pid}")
    finally:
        proc.kill()
        proc.wait()
    assert is_dead_here(host, f"here:{proc.pid}")
    assert not is_dead_here(host, f"elsewhere:{proc.pid}")  # another host's: its timeout


def test_a_worker_composes_from_the_revision_whose_plan_wanted_the_job(
    tmp_path: Path, desired_state: DesiredState, upstream: Upstream
) -> None:
    """No --desired-state: the job's revision is fetched from the git source and exported
    into the state directory (this host never ran a pass); the compose records it."""
    from reconciler.composemeta import read_record

    config, repo = git_host(tmp_path, desired_state, upstream)
    sha = repo.git("rev-parse", "HEAD")
    with _state(config) as state:
        job = state.jobs.submit("core", "9", "test", Trigger.COMMIT, sha, 0.0)
    proc = reconciler_process("worker", "--once", "--config", config)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    host = load_host_config(config)
    with _state(config) as state:
        done = state.jobs.get(job.id)
    assert done is not None and done.state is JobState.DONE and done.compose_id is not None
    assert (host.layout.revision(sha) / "defaults.yaml").is_file()
    record = read_record(host.compose_tree("core", "9"), done.compose_id)
    assert record is not None and record.git_revision == sha


def test_sigterm_mid_compose_finishes_the_compose_then_exits_0(
    tmp_path: Path, upstream: Upstream
) -> None:
    config, ds = _world(tmp_path, upstream)
    (ds / "sigs" / "extras.yaml").unlink()
    upstream.server.delay(upstream.path("core-common", "x86_64", "repodata/repomd.xml"), 2, times=1)
    with _state(config) as state:
        job = state.jobs.submit("core", "9", "test", Trigger.COMMIT, None, 0.0)
    proc = reconciler_process("worker", "--config", config, "--desired-state", ds)
    try:
        wait_until(lambda: bool(_composes(config, "core")), proc, "the compose directory")
    finally:
        err = _stop(proc)
    with _state(config) as state:
        done = state.jobs.get(job.id)
    assert done is not None and done.state is JobState.DONE
    assert _composes(config, "core") == {done.compose_id: ComposeStatus.FINISHED}
    assert [e["event"] for e in _events(err)][-2:] == ["job.done", "worker.stop"]


def test_the_heartbeat_says_when_the_job_was_taken(tmp_path: Path) -> None:
    from reconciler.composejobs import Heartbeat

    config = write_host_config(tmp_path, "http://127.0.0.1:9", state={"job_timeout": 2})
    host = load_host_config(config)
    with _state(config) as state:
        state.jobs.submit("core", "9", "test", Trigger.COMMIT, None, 0.0)
        mine = state.jobs.claim("here:1")
        assert mine is not None
        with Heartbeat(host, mine, "here:1") as beat:
            assert not beat.lost.wait(1.0)  # its beats keep the job
            assert state.jobs.expire(2) == []
            assert [a.worker for a in state.jobs.expire(2, lambda w: True)] == ["here:1"]
            assert state.jobs.claim("there:2") is not None
            assert beat.lost.wait(10), "the heartbeat noticed"
            assert not beat.still_ours(), "a taken job is never finished"
        ours = state.jobs.get(mine.id)
    assert ours is not None and ours.worker == "there:2"


def test_a_worker_cut_off_from_the_state_stops_calling_the_job_its_own(tmp_path: Path) -> None:
    """A worker whose heartbeats cannot reach the database (here: nothing listens where the
    state is) cannot learn that its job was taken; once 4/5 of job_timeout have passed
    since its last renewal (the claim), another process may have taken it, so the job is
    no longer its own to finish."""
    from reconciler.composejobs import Heartbeat
    from reconciler.state import ComposeJob

    from .pgcluster import free_port

    secret = tmp_path / "password"
    secret.write_text("unused\n")
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
    config = write_host_config(tmp_path, "http://127.0.0.1:9", state={
        "url": url, "password_file": str(secret), "job_timeout": 2, "connect_timeout": 1})  # fmt: skip
    host = load_host_config(config)
    with StateDB.open(tmp_path / "local") as local:  # only to make a claimed job's record
        local.jobs.submit("core", "9", "test", Trigger.COMMIT, None, 0.0)
        job = local.jobs.claim("here:1")
    assert isinstance(job, ComposeJob)
    with Heartbeat(host, job, "here:1") as beat:
        assert beat.still_ours(), "just claimed"
        deadline = time.monotonic() + 30
        while beat.still_ours():
            assert time.monotonic() < deadline, "still its own long after job_timeout"
            time.sleep(0.05)


def test_a_compose_its_worker_no_longer_owns_is_doomed_not_finished(
    tmp_path: Path, upstream: Upstream
) -> None:
    """The compose asks before FINISHED: a worker whose job may be another's by now leaves
    a DOOMED compose (never staged, never ``latest``), not a second finished one."""
    from reconciler.composing import ComposeRequest, compose
    from reconciler.specfile import load_spec

    config, desired = _world(tmp_path, upstream)
    host = load_host_config(config)
    request = ComposeRequest("core", "9", still_ours=lambda: False)
    result = compose(load_spec(desired), desired, host, request)
    assert result.status is ComposeStatus.DOOMED and "another worker" in (result.error or "")
    assert _composes(config, "core") == {result.compose_id: ComposeStatus.DOOMED}
    assert not host.compose_tree("core", "9").latest_link.exists()


def test_only_the_newest_exported_revisions_are_kept(tmp_path: Path) -> None:
    from reconciler.composejobs import prune_revisions

    shas = [f"{i:040x}" for i in range(5)]
    for i, sha in enumerate(shas):
        (tmp_path / sha).mkdir()
        os.utime(tmp_path / sha, (1_000_000 + i, 1_000_000 + i))
    (tmp_path / ".abc.tmp").mkdir()  # not a revision: never touched
    deleted = prune_revisions(tmp_path, 3)
    assert sorted(p.name for p in deleted) == shas[:2]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".abc.tmp", *shas[2:]])
