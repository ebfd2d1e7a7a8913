"""Lifecycle hooks around actions, and the two example hooks, with real processes."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import createrepo_c as cr
import pytest
import yaml

from reconciler.lifecycle import Event, run_hooks
from reconciler.vocabulary import Stage

from .conftest import DesiredState, Host
from .test_compose import run_compose

EXAMPLES = Path(__file__).resolve().parent.parent / "hooks" / "lifecycle"


def with_hooks(host: Host, hooks_dir: Path, timeout: float = 10) -> None:
    conf = yaml.safe_load(host.config_path.read_text())
    conf["hooks"] = {"dir": str(hooks_dir), "timeout": timeout}
    host.config_path.write_text(yaml.safe_dump(conf))


def hook(directory: Path, name: str, body: str, executable: bool = True) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755 if executable else 0o644)
    return path


def apply(cli: Any, host: Host, ds: DesiredState) -> Any:
    return cli("apply", "--config", host.config_path, "--desired-state", ds.path)


def status(cli: Any, host: Host) -> dict[str, dict[str, Any]]:
    rows = json.loads(cli("status", "--format", "json", "--config", host.config_path).out)
    return {r["stage"]: r for r in rows}


def test_hooks_get_the_event_and_a_failing_pre_hook_blocks(
    cli: Any, host: Host, desired_state: DesiredState, tmp_path: Path
) -> None:
    hooks = tmp_path / "hooks"
    log = tmp_path / "events.jsonl"
    for name in ("pre-compose", "post-compose", "post-staging"):
        hook(hooks, f"{name}.record", f"cat >> {log}; echo >> {log}")
    hook(hooks, "pre-staging.gate", "echo 'staging is frozen for the release'; exit 3")
    with_hooks(host, hooks)
    result = apply(cli, host, desired_state)
    assert result.code == 1
    assert "BLOCKED: stage (new compose) to staging" in result.out
    row = status(cli, host)["staging"]
    assert row["state"] == "Blocked" and "staging is frozen for the release" in row["reason"]
    assert status(cli, host)["compose"]["state"] == "Synced"
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert [e["event"] for e in events] == ["pre-compose", "post-compose"]
    post = events[1]
    assert post["result"] == "ok" and post["sig"] == "core" and post["release"] == "9"
    assert post["compose_id"].startswith("SIG-core-9-") and Path(post["compose_path"]).is_dir()
    history = json.loads(cli("history", "--format", "json", "--config", host.config_path).out)
    assert history[0]["result"] == "blocked" and "frozen" in history[0]["error"]
    (hooks / "pre-staging.gate").unlink()
    assert apply(cli, host, desired_state).code == 0
    assert status(cli, host)["staging"]["state"] == "Synced"


def test_a_hanging_hook_is_killed_at_its_timeout(
    cli: Any, host: Host, desired_state: DesiredState, tmp_path: Path
) -> None:
    hooks = tmp_path / "hooks"
    marker = tmp_path / "child-alive"
    hook(hooks, "pre-compose", f"(sleep 30; touch {marker}) & sleep 60")
    with_hooks(host, hooks, timeout=1)
    started = time.monotonic()
    result = apply(cli, host, desired_state)
    assert time.monotonic() - started < 15
    assert result.code == 1
    assert "timed out after 1s and was killed" in status(cli, host)["compose"]["reason"]
    time.sleep(0.2)
    assert not marker.exists()


def test_a_hook_that_is_not_executable_blocks(
    cli: Any, host: Host, desired_state: DesiredState, tmp_path: Path
) -> None:
    hooks = tmp_path / "hooks"
    hook(hooks, "pre-compose", "exit 0", executable=False)
    with_hooks(host, hooks)
    assert apply(cli, host, desired_state).code == 1
    assert "is not an executable file" in status(cli, host)["compose"]["reason"]


def test_on_failure_hooks_run_when_an_action_fails(
    cli: Any, host: Host, desired_state: DesiredState, upstream: Any, tmp_path: Path
) -> None:
    hooks = tmp_path / "hooks"
    log = tmp_path / "failures"
    hook(hooks, "on-failure", f"cat > {log}")
    with_hooks(host, hooks)
    upstream.server.fail(
        upstream.path("core-common", "aarch64", "Packages/sig-tools-2.0-1.aarch64.rpm"), 404
    )
    assert apply(cli, host, desired_state).code == 1
    event = json.loads(log.read_text())
    assert event["event"] == "on-failure" and event["result"] == "failed"
    assert "HTTP 404" in event["error"]


class _Catcher(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Catcher.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()


@pytest.fixture
def chat() -> Iterator[str]:
    _Catcher.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Catcher)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/abc"
    server.shutdown()
    server.server_close()


def test_example_mattermost_hook_posts_the_promotion(chat: str) -> None:
    event = {
        "event": "post-production",
        "sig": "core",
        "release": "9",
        "stage": "production",
        "compose_id": "SIG-core-9-20261125.0",
        "revision": "a" * 40,
        "author": "Bob <bob@example.org>",
        "result": "ok",
    }
    proc = subprocess.run(
        [str(EXAMPLES / "post-production.mattermost")],
        input=json.dumps(event),
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        env={**os.environ, "MATTERMOST_WEBHOOK_URL": chat},
    )
    assert proc.returncode == 0, proc.stderr
    (message,) = _Catcher.received
    assert "SIG-core-9-20261125.0" in message["text"] and "production" in message["text"]
    assert "Bob" in message["text"]


def break_closure(repo: Path) -> None:
    """Rewrite a repo's metadata so that one package requires something nobody provides."""
    rpms = sorted((repo / "Packages").rglob("*.rpm"))
    shutil.rmtree(repo / "repodata")
    with cr.RepositoryWriter(str(repo), num_packages=len(rpms), compression=cr.GZ_COMPRESSION) as w:
        for i, rpm in enumerate(rpms):
            pkg = cr.package_from_rpm(str(rpm), location_href=str(rpm.relative_to(repo)))
            if i == 0:
                pkg.requires = [("libnowhere.so.1()(64bit)", None, None, None, None, False)]
            w.add_pkg(pkg)


@pytest.mark.skipif(shutil.which("dnf") is None, reason="dnf is not installed")
def test_example_repoclosure_hook(
    cli: Any, host: Host, desired_state: DesiredState, tmp_path: Path
) -> None:
    assert run_compose(cli, host, desired_state).code == 0
    sig_dir = next((host.compose_root / "9").glob("SIG-core-9-*")) / "compose" / "9" / "core"
    event = json.dumps({"event": "pre-production", "release": "9", "compose_path": str(sig_dir)})
    run = [str(EXAMPLES / "pre-production.repoclosure")]
    env = {**os.environ, "REPOCLOSURE_BASE_REPOS_FILE": str(tmp_path / "none")}
    ok = subprocess.run(
        run, input=event, capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "x86_64/core-common: closed" in ok.stdout
    copy = tmp_path / "broken"
    shutil.copytree(sig_dir, copy)
    break_closure(copy / "x86_64" / "core-common")
    bad = subprocess.run(
        run,
        input=event.replace(str(sig_dir), str(copy)),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert bad.returncode == 1
    assert "libnowhere.so.1" in bad.stdout


def _event(name: str = "pre-compose") -> Event:
    return Event(name, "core", "9", Stage.COMPOSE, None, None, None)


@pytest.fixture
def leftovers(tmp_path: Path) -> Iterator[Path]:
    """A file where hooks write the pids of the sleepers they leave; those are killed after."""
    pids = tmp_path / "leftover-pids"
    yield pids
    for pid in map(int, pids.read_text().split() if pids.exists() else []):
        try:
            if b"sleep" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


@pytest.mark.parametrize(
    "body",
    [
        "setsid sleep 40 &\necho $! >> {pids}\necho started\nsleep 60",  # in a session of its own
        "sleep 40 &\necho $! >> {pids}\necho started\nsleep 60",  # in the hook's process group
        "echo started\nexec >&- 2>&-\nsleep 60",  # closes its output, keeps running
        "setsid sleep 40 &\necho $! >> {pids}\nexec >&- 2>&-\nsleep 60",  # both
    ],
    ids=["setsid-grandchild", "grandchild", "closed-output", "closed-output-setsid-grandchild"],
)
def test_a_hook_timeout_is_kept_on_the_clock_whatever_holds_its_output(
    tmp_path: Path, leftovers: Path, body: str
) -> None:
    hooks = tmp_path / "hooks"
    hook(hooks, "pre-compose", body.format(pids=leftovers))
    started = time.monotonic()
    (failure,) = run_hooks(hooks, _event(), timeout=2)
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"run_hooks took {elapsed:.1f}s with a 2s timeout"
    assert failure.hook == "pre-compose"
    assert "timed out after 2s and was killed" in failure.reason
    if "echo started" in body:
        assert "started" in failure.reason, "the output before the timeout is kept"


def test_a_hook_that_exits_is_done_even_when_a_child_keeps_its_output(
    tmp_path: Path, leftovers: Path
) -> None:
    """A ``post-*`` hook may start something in the background: its exit status is its result."""
    hooks = tmp_path / "hooks"
    hook(hooks, "post-compose.ok", f"setsid sleep 40 &\necho $! >> {leftovers}\necho sent")
    hook(hooks, "post-compose.fails",
         f"sleep 40 &\necho $! >> {leftovers}\necho 'no chat server'\nexit 4")  # fmt: skip
    started = time.monotonic()
    (failure,) = run_hooks(hooks, _event("post-compose"), timeout=30)
    assert time.monotonic() - started < 10
    assert failure.hook == "post-compose.fails"
    assert failure.reason.startswith("exited 4") and "no chat server" in failure.reason


def test_a_hook_gets_its_event_and_its_output_is_kept(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    big = 200_000  # more than a pipe holds, both ways
    hook(
        hooks,
        "pre-compose",
        f"cat > {tmp_path / 'event'}\nhead -c {big} /dev/zero | tr '\\0' x\nexit 1",
    )
    (failure,) = run_hooks(hooks, _event(), timeout=20)
    assert json.loads((tmp_path / "event").read_text())["sig"] == "core"
    assert failure.reason.startswith("exited 1: ...x")
    hook(hooks, "pre-compose", "exec 0<&-\necho ignores its input")
    assert run_hooks(hooks, _event(), timeout=20) == []
