"""The metrics of ``reconciler run`` and the webhook's secret.

:mod:`reconciler.webapp` serves them (``/metrics``, ``/healthz``, ``POST /trigger``)
with the status page, within the limits below.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import write_to_textfile as _write_textfile

from .errors import ConfigError
from .vocabulary import JobState, Stage, TargetState

if TYPE_CHECKING:
    from .state import LeaderRecord

#: Seconds a client has to send its whole request (and to take the answer).
REQUEST_TIMEOUT = 10.0
#: Connections served at once; more are refused at once.
MAX_CONNECTIONS = 64
#: Bytes a POST body may have.
MAX_BODY = 64 * 1024


class Metrics:
    """The reconciler's metrics, in a registry of their own (no global state)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.pass_duration = Histogram(
            "reconciler_pass_duration_seconds", "Duration of a reconcile pass", registry=r,
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
        )  # fmt: skip
        self.passes = Counter("reconciler_passes", "Reconcile passes by result", ["result"],
                              registry=r)  # fmt: skip
        self.target_state = Gauge(
            "reconciler_target_state", "1 for the current state of each target",
            ["sig", "release", "stage", "state"], registry=r,
        )  # fmt: skip
        self.last_success = Gauge("reconciler_last_success_timestamp_seconds",
                                  "When a pass last converged", registry=r)  # fmt: skip
        self.published_bytes = Counter("reconciler_published_bytes", "Bytes published",
                                       ["stage"], registry=r)  # fmt: skip
        self.published_files = Counter("reconciler_published_files", "Files published",
                                       ["stage"], registry=r)  # fmt: skip
        self.compose_duration = Histogram(
            "reconciler_compose_duration_seconds", "Duration of composes", ["result"],
            registry=r, buckets=(1, 5, 15, 60, 300, 900, 1800, 3600, 7200),
        )  # fmt: skip
        self.git_fetch_failures = Counter("reconciler_git_fetch_failures",
                                          "Failed fetches of the desired-state repository",
                                          registry=r)  # fmt: skip
        self.unmanaged_files = Gauge(
            "reconciler_unmanaged_files",
            "Files under a published target that the reconciler did not publish and keeps "
            "(not drift; publish.unmanaged paths not counted), as its last walk found them",
            ["sig", "release", "stage"], registry=r,
        )  # fmt: skip
        self.unmanaged_bytes = Gauge(
            "reconciler_unmanaged_bytes", "Bytes of those unmanaged files",
            ["sig", "release", "stage"], registry=r,
        )  # fmt: skip
        self.mirror_current = Gauge(
            "reconciler_mirror_current",
            "1 when the mirror serves production's newest repomd.xml of every repo of the "
            "SIG release, at its last check; else 0",
            ["mirror", "sig", "release"], registry=r,
        )  # fmt: skip
        self.mirror_lag = Gauge(
            "reconciler_mirror_lag_seconds",
            "How long the mirror has been behind production for the SIG release (its "
            "oldest behind repo); 0 when it is not behind",
            ["mirror", "sig", "release"], registry=r,
        )  # fmt: skip
        self.leader = Gauge("reconciler_leader", "1 for the process that holds the leader "
                            "lease (<node>:<pid>)", ["holder"], registry=r)  # fmt: skip
        self.is_leader = Gauge("reconciler_is_leader", "1 when this process leads (publishes)",
                               registry=r)  # fmt: skip
        self.leader_since = Gauge("reconciler_leader_since_seconds",
                                  "When the leader's term began (epoch)", registry=r)  # fmt: skip
        self.leader_term = Gauge("reconciler_leader_term", "The leader lease's term",
                                 registry=r)  # fmt: skip
        self.compose_jobs = Gauge("reconciler_compose_jobs", "Compose jobs in the shared state "
                                  "by state (queued, running, done, failed)", ["state"],
                                  registry=r)  # fmt: skip
        self.last_pass: dict[str, Any] = {}

    def set_target_states(self, rows: Iterable[tuple[str, str, Stage, TargetState]]) -> None:
        """``(sig, release, stage, state)`` rows: 1 for the state each target is in, else 0."""
        for sig, release, stage, current in rows:
            for state in TargetState:
                self.target_state.labels(sig, release, stage, state).set(
                    1 if state is current else 0
                )

    def set_unmanaged(self, rows: Iterable[tuple[str, str, Stage, int, int]]) -> None:
        """``(sig, release, stage, files, bytes)`` of each published target's unmanaged
        files; a target no longer listed is dropped."""
        self.unmanaged_files.clear()
        self.unmanaged_bytes.clear()
        for sig, release, stage, files, size in rows:
            self.unmanaged_files.labels(sig, release, stage).set(files)
            self.unmanaged_bytes.labels(sig, release, stage).set(size)

    def set_mirrors(self, rows: Iterable[tuple[str, str, str, bool, float]]) -> None:
        """``(mirror, sig, release, current, lag seconds)`` of each mirror and production
        target; one no longer listed is dropped."""
        self.mirror_current.clear()
        self.mirror_lag.clear()
        for mirror, sig, release, current, lag in rows:
            self.mirror_current.labels(mirror, sig, release).set(1 if current else 0)
            self.mirror_lag.labels(mirror, sig, release).set(lag)

    def set_leader(self, held: LeaderRecord | None, leading: bool) -> None:
        """Who leads (None: nobody holds a live lease) and whether this process does."""
        self.leader.clear()
        self.is_leader.set(1 if leading else 0)
        if held is not None:
            self.leader.labels(held.holder).set(1)
        self.leader_since.set(held.since if held is not None else 0)
        self.leader_term.set(held.term if held is not None else 0)

    def set_jobs(self, counts: Mapping[JobState, int]) -> None:
        """How many compose jobs are in each state."""
        for state, n in counts.items():
            self.compose_jobs.labels(state.value).set(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def write_textfile(self, path: Path) -> None:
        _write_textfile(str(path), self.registry)


def read_secret(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        secret = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"webhook_secret_file {path}: {exc.strerror}") from exc
    if len(secret) < 16:
        raise ConfigError(f"webhook_secret_file {path}: the secret must be 16 characters or more")
    return secret


def now() -> float:
    return time.time()
