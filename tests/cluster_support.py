"""Several hosts on one world, for the tests of issue 18: ``reconciler run`` and
``reconciler worker`` processes, each with its own host config and state directory (as on
hosts of their own), sharing the compose, staging and production trees and one state:
a PostgreSQL database (or, for the one-host variant, one SQLite file).

The desired state is a real git repository with several SIGs, each composing the sample
upstream (tests/conftest.py); the processes are the real CLI in child processes, their
JSON logs collected; what they did is read back from the shared state with SQL.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml

from reconciler.state.pgsql import translate

from .conftest import (
    DEFAULTS_YAML,
    Upstream,
    make_desired_state,
    reconciler_process,
    sample_release,
)
from .conftest import write_host_config as _write_host_config
from .gitrepo import DesiredRepo
from .pgcluster import PASSWORD, PgCluster
from .test_metrics import Reader

#: The tests' defaults, with release 8 besides 9 (two releases per SIG).
DEFAULTS = DEFAULTS_YAML + '  "8": {arches: [x86_64, aarch64]}\n'


@dataclass
class Process:
    """One ``reconciler run`` or ``worker`` process of a host, and its JSON log."""

    name: str
    proc: subprocess.Popen[str]
    log: Reader
    base: str | None = None  # the metrics address of a run process

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.log.events if e.get("event") == name]

    def metrics(self) -> str:
        assert self.base is not None
        return httpx.get(f"{self.base}/metrics", timeout=5).text

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM: the current action finishes, then the process exits (its code)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@dataclass
class World:
    """The trees, the upstream, the git desired state and the shared state of the hosts."""

    root: Path
    upstream: Upstream
    repo: DesiredRepo
    pg: PgCluster | None
    database: str | None
    processes: list[Process] = field(default_factory=list)

    @property
    def trees(self) -> Path:
        return self.root / "trees"

    def state_section(self, **extra: Any) -> dict[str, Any]:
        if self.pg is None or self.database is None:
            return {}
        return {"state": {**self.pg.state_config(self.database), **extra}}

    def config(self, host: str, *, lease: int = 3, job_timeout: int = 4, **extra: Any) -> Path:
        """The host config of ``host``: its own state directory, the shared trees and state."""
        hostdir = self.root / "hosts" / host
        hostdir.mkdir(parents=True, exist_ok=True)
        roots = {s: str(self.trees / s) for s in ("compose", "staging", "production")}
        git = {"url": str(self.repo.server), "branch": "main", "path": "desired-state"}
        state = self.state_section(lease=lease, job_timeout=job_timeout, node=host)
        if not state:  # one host, one SQLite file: every process uses the same state_dir
            hostdir = self.root / "hosts" / "single"
            hostdir.mkdir(parents=True, exist_ok=True)
        conf = {"interval": 2, "roots": roots, "git": git, **state, **extra}
        path = _write_host_config(hostdir, self.upstream.server.base_url, **conf)
        named = hostdir / f"{host}.yaml"
        path.rename(named)
        return named

    # -- processes --

    def run(self, host: str, **config: Any) -> Process:
        """``reconciler run`` as ``host``; returns once it serves its metrics."""
        proc = reconciler_process("run", "--config", self.config(host, **config))
        assert proc.stderr is not None
        p = Process(host, proc, Reader(proc.stderr))
        self.processes.append(p)
        p.base = "http://" + p.log.wait_for("metrics.listening", timeout=60)["address"]
        return p

    def worker(self, host: str, *args: str, **config: Any) -> Process:
        proc = reconciler_process("worker", "--config", self.config(host, **config), *args)
        assert proc.stderr is not None
        p = Process(host, proc, Reader(proc.stderr))
        self.processes.append(p)
        return p

    def stop_all(self) -> None:
        for p in self.processes:
            if p.proc.poll() is None:
                p.proc.send_signal(signal.SIGTERM)
        for p in self.processes:
            try:
                p.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait()
            p.log.join(timeout=5)
            if p.proc.stderr is not None:
                p.proc.stderr.close()

    # -- the shared state, read with SQL --

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of ``query`` (``?`` placeholders) against the shared state."""
        if self.pg is not None and self.database is not None:
            with psycopg.connect(
                self.pg.url(self.database), password=PASSWORD, connect_timeout=5, autocommit=True
            ) as conn:
                return list(conn.execute(translate(query), params).fetchall())
        db = self.root / "hosts" / "single" / "state" / "state.db"
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return list(conn.execute(query, params).fetchall())

    def advisory_lock_holders(self) -> list[int]:
        """The server's lock table: the backends that hold an advisory lock now."""
        assert self.pg is not None and self.database is not None
        with self.pg.connect(self.database) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchall()
        return [int(r[0]) for r in rows]

    def write_sigs(self, sigs: dict[str, dict[str, dict[str, Any]]], message: str) -> str:
        """Write ``{sig: {release: overrides}}`` into the desired state and push it."""
        sig_dir = self.repo.work / "desired-state" / "sigs"
        for sig, releases in sigs.items():
            doc = {"sig": sig, "releases": {r: sample_release(**o) for r, o in releases.items()}}
            (sig_dir / f"{sig}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        return self.repo.commit(message)


def make_world(
    root: Path,
    upstream: Upstream,
    sigs: dict[str, dict[str, dict[str, Any]]],
    pg: PgCluster | None,
) -> World:
    """A world whose desired state holds ``sigs`` (``{sig: {release: overrides}}``)."""
    template = make_desired_state(root / "template", defaults=DEFAULTS, write=False)
    repo = DesiredRepo(root / "git", template.path)
    database = pg.new_database("cluster") if pg is not None else None
    world = World(root, upstream, repo, pg, database)
    world.write_sigs(sigs, "Add the SIGs")
    return world


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120,
             processes: list[Process] | None = None) -> float:  # fmt: skip
    """Poll ``condition`` until true; fail naming ``what`` (and any process that ended).
    Returns the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return time.monotonic()
        except (psycopg.OperationalError, psycopg.errors.UndefinedTable, sqlite3.OperationalError):
            pass  # the server restarting, the schema or the file being made: ask again
        for p in processes or ():
            assert p.proc.poll() is None, f"{p.name} ended before {what}: {p.log.events[-20:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@contextlib.contextmanager
def world_running(world: World) -> Iterator[World]:
    try:
        yield world
    finally:
        world.stop_all()
