"""``reconciler run``: one pass, the loop waking on its trigger file, a clean SIGTERM."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from watchdog.observers import Observer

from reconciler.running import MAX_BACKOFF, Debounce, _Wake, next_delay, watches
from reconciler.specfile import load_host_config
from reconciler.state import StateDB
from reconciler.vocabulary import Stage

from .conftest import DesiredState, Host, reconciler_process, wait_until, write_host_config
from .gitrepo import DesiredRepo
from .test_metrics import Reader


def test_run_once_converges(cli: Any, host: Host, desired_state: DesiredState) -> None:
    args = ("--config", host.config_path, "--desired-state", desired_state.path)
    assert cli("run", "--once", *args).code == 0
    assert cli("plan", *args).code == 0
    # the loop kept its last pass: the exported status page shows it too
    page = cli("status", "--format", "html", "--config", host.config_path).out
    last = page[page.index('id="last-pass"') :].split("</div>")[0]
    assert "last pass" in last and "converged" in last and "did not" not in last


def test_delays_have_jitter_and_back_off() -> None:
    rng = random.Random(1)
    assert all(270 <= next_delay(300, 0, rng) <= 330 for _ in range(50))
    assert next_delay(300, 1, rng) < next_delay(300, 4, rng) <= 330
    assert next_delay(10**6, 50, rng) <= MAX_BACKOFF * 1.1


def last_update(state_dir: Path) -> str:
    with StateDB.open(state_dir) as state:
        return max((s.updated_at.isoformat() for s in state.targets.statuses()), default="")


def test_loop_wakes_on_trigger_and_stops_on_sigterm(
    host: Host, desired_state: DesiredState
) -> None:
    conf = yaml.safe_load(host.config_path.read_text())
    conf["interval"] = 3600
    host.config_path.write_text(yaml.safe_dump(conf))
    state_dir = Path(conf["state_dir"])
    proc = reconciler_process("run", "--config", host.config_path, "--desired-state",
                              desired_state.path)  # fmt: skip
    try:
        wait_until(lambda: bool(last_update(state_dir)), proc, "the first pass")
        first = last_update(state_dir)
        (state_dir / "trigger").touch()
        wait_until(lambda: last_update(state_dir) != first, proc, "a pass woken by the trigger")
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err


def test_sigterm_finishes_the_current_action_then_exits(
    host: Host, desired_state: DesiredState, upstream: Any
) -> None:
    path = upstream.path("core-common", "aarch64", "Packages/sig-tools-2.0-1.aarch64.rpm")
    upstream.server.delay(path, 2.0)
    proc = reconciler_process("run", "--config", host.config_path, "--desired-state",
                              desired_state.path)  # fmt: skip
    try:
        wait_until(lambda: path in upstream.server.requests, proc, "the compose's downloads")
        proc.send_signal(signal.SIGTERM)  # mid-compose
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    (compose,) = (host.compose_root / "9").glob("SIG-core-9-*")
    assert (compose / "STATUS").read_text() == "FINISHED\n", "the running compose finished"
    with StateDB.open(Path(yaml.safe_load(host.config_path.read_text())["state_dir"])) as state:
        assert [h.action for h in state.history.entries()] == ["compose"], (
            "nothing after it started"
        )
        assert state.targets.get("core", "9", Stage.STAGING) is None


# -- a git world: the loop rests until a push or the trigger, and survives surprises ------


@dataclass
class Running:
    """A ``reconciler run`` process, its metrics address and its JSON log lines."""

    proc: subprocess.Popen[str]
    base: str
    log: Reader
    state_dir: Path

    def passes(self, result: str | None = None) -> int:
        """``reconciler_passes_total`` (for one result, or summed) from /metrics."""
        body = httpx.get(f"{self.base}/metrics", timeout=5).text
        found = re.findall(r'^reconciler_passes_total\{result="(\w+)"\} ([0-9.e+]+)$', body, re.M)
        return sum(int(float(n)) for r, n in found if result is None or r == result)

    def wait_passes(self, n: int, what: str, timeout: float = 60) -> None:
        def done() -> bool:
            try:
                return self.passes() >= n
            except httpx.TransportError:  # not listening (any more): wait_until says why
                return False

        wait_until(done, self.proc, what, timeout)

    def done_events(self) -> int:
        return sum(1 for e in self.log.events if e.get("event") == "pass.done")


@pytest.fixture
def git_world(
    tmp_path: Path, desired_state: DesiredState, upstream: Any
) -> tuple[Path, DesiredRepo]:
    """A host config whose desired state is a local bare git repository (the default set-up)."""
    repo = DesiredRepo(tmp_path / "git", desired_state.path)
    repo.commit("Add SIG core")
    root = tmp_path / "host"
    root.mkdir()
    config = write_host_config(
        root, upstream.server.base_url, interval=3600,
        git={"url": str(repo.server), "branch": "main", "path": "desired-state"},
    )  # fmt: skip
    return config, repo


@contextmanager
def running(config: Path, *, stop: bool = True) -> Iterator[Running]:
    """``reconciler run`` on ``config``; at the end SIGTERM, which must exit 0 (or, with
    ``stop=False``, nothing: the caller stopped or killed it)."""
    proc = reconciler_process("run", "--config", config)
    assert proc.stderr is not None
    reader = Reader(proc.stderr)
    try:
        address = reader.wait_for("metrics.listening")["address"]
        state_dir = Path(yaml.safe_load(config.read_text())["state_dir"])
        yield Running(proc, f"http://{address}", reader, state_dir)
        if stop:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join(timeout=5)
        proc.stderr.close()


def test_the_loop_rests_until_a_push_or_the_trigger(git_world: tuple[Path, DesiredRepo]) -> None:
    config, repo = git_world
    with running(config) as run:
        run.wait_passes(1, "the first pass")
        time.sleep(8)  # nothing happens: interval is an hour, nobody pushes
        assert run.passes() == 1, f"{run.passes()} passes while nothing changed"
        assert run.done_events() == 1

        (repo.work / "desired-state" / "README.txt").write_text("a push\n")
        repo.commit("A push that changes no target")
        run.wait_passes(2, "a pass woken by the push", timeout=10)
        time.sleep(3)
        assert run.passes() == 2, "one push, one pass"

        (run.state_dir / "trigger").touch()  # created
        run.wait_passes(3, "a pass woken by the trigger file", timeout=10)
        time.sleep(2)
        (run.state_dir / "trigger").touch()  # an existing file: only its time changes
        run.wait_passes(4, "a pass woken by touching the trigger again", timeout=10)
        time.sleep(3)
        assert run.passes() == 4
        assert run.passes("failed") == 0


def test_a_pass_that_raises_a_surprise_is_recorded_and_retried(
    git_world: tuple[Path, DesiredRepo],
) -> None:
    config, _repo = git_world
    compose_root = Path(yaml.safe_load(config.read_text())["roots"]["compose"])
    compose_root.write_text("not a directory\n")  # observing it raises NotADirectoryError
    with running(config) as run:
        run.wait_passes(1, "the first pass")
        failed = run.log.wait_for("pass.failed")
        assert failed["level"] == "error"
        assert "NotADirectoryError" in failed["exception"], failed
        assert run.passes("failed") >= 1 and run.passes("ok") == 0
        health = httpx.get(f"{run.base}/healthz", timeout=5).json()
        assert health["ok"] is False and "Not a directory" in health["error"]

        run.wait_passes(2, "a second try after the back-off", timeout=20)
        assert run.proc.poll() is None, "the process stays up"
        assert run.passes("failed") >= 2 and run.passes("ok") == 0

        compose_root.unlink()  # the fault clears: a later pass succeeds
        wait_until(lambda: run.passes("ok") == 1, run.proc, "a pass that succeeds", timeout=30)
        assert run.passes("failed") == 2, "backed off: 5 s, then 10 s"
        assert httpx.get(f"{run.base}/healthz", timeout=5).json()["ok"] is True
        assert (compose_root / "9").is_dir()


class Wakes:
    """Counts the loop's wake-ups from a real watchdog observer on a host's watches."""

    def __init__(self, config: Path) -> None:
        self.count = 0
        self.plan = watches(load_host_config(config))
        handler = _Wake(self.plan.files, Debounce(self._fire, quiet=0.5).poke)
        self.observer = Observer()
        for directory, recursive in self.plan.dirs.items():
            self.observer.schedule(handler, str(directory), recursive=recursive)
        self.observer.start()

    def _fire(self) -> None:
        self.count += 1

    def after(self, seconds: float = 1.5) -> int:
        time.sleep(seconds)
        return self.count

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join()


def test_reads_never_wake_the_loop_and_a_burst_of_writes_wakes_it_once(
    git_world: tuple[Path, DesiredRepo], tmp_path: Path
) -> None:
    config, repo = git_world
    state_dir = Path(yaml.safe_load(config.read_text())["state_dir"])
    state_dir.mkdir()
    wakes = Wakes(config)
    try:
        assert str(repo.server / "refs" / "heads" / "main") in wakes.plan.files
        clone = tmp_path / "reader"
        repo.git("clone", "-q", "--bare", str(repo.server), str(clone))
        repo.git("ls-remote", str(repo.server))
        repo.git("--git-dir", str(clone), "fetch", "-q", str(repo.server), "+main:main")
        for path in repo.server.rglob("*"):
            if path.is_file():
                path.read_bytes()
        assert wakes.after() == 0, "reads of the repository are not changes"

        (repo.work / "desired-state" / "README.txt").write_text("pushed\n")
        repo.commit("Push")
        assert wakes.after() == 1, "a push is one wake-up"

        for _ in range(10):  # a burst: create, then touch the trigger again and again
            (state_dir / "trigger").touch()
            time.sleep(0.02)
        assert wakes.after() == 2, "a burst of touches is one wake-up"

        (state_dir / "apply.lock").write_text("123\n")  # other files of the state dir
        (repo.server / "description").write_text("not a ref\n")  # other files of the repo
        assert wakes.after() == 2
    finally:
        wakes.stop()


def test_a_nested_branch_is_watched_and_a_remote_url_is_polled(
    git_world: tuple[Path, DesiredRepo],
) -> None:
    config, repo = git_world
    conf = yaml.safe_load(config.read_text())
    Path(conf["state_dir"]).mkdir()
    conf["git"]["branch"] = "release/9"
    config.write_text(yaml.safe_dump(conf))
    wakes = Wakes(config)
    try:
        assert wakes.plan.dirs[repo.server / "refs" / "heads"] is True
        repo.git("push", "-q", "origin", "HEAD:release/9")  # creates refs/heads/release/
        assert wakes.after() == 1
    finally:
        wakes.stop()

    conf["git"]["url"] = "https://git.example.org/desired-state.git"
    config.write_text(yaml.safe_dump(conf))
    remote = watches(load_host_config(config))
    assert remote.dirs == {Path(conf["state_dir"]).resolve(): False}
    assert remote.files == {str(Path(conf["state_dir"]).resolve() / "trigger")}
