"""The host config: where things are on this compose host (docs/architecture.md).

Not in git. Found at ``--config FILE``, else ``$RECONCILER_CONFIG``, else
``/etc/reconciler/config.yaml`` (:func:`reconciler.specfile.load_host_config` reads it).
Records only: no I/O here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from .layout import ComposeTree, PublishedTree, StateLayout
from .schema import Check, Limits, Record
from .vocabulary import Dialect, Stage

#: A ``commit_url``: http(s), no spaces or quotes, ``{sha}`` exactly once, no other braces.
_COMMIT_URL = re.compile(r"https?://[^\s{}\"'<>]+\{sha\}[^\s{}\"'<>]*")


def _commit_url(value: str) -> str:
    if len(value) > 500 or not _COMMIT_URL.fullmatch(value):
        raise ValueError(
            "must be an http(s) URL with {sha} where the commit goes, such as "
            "https://forge.example/desired-state/commit/{sha}"
        )
    return value


def _default_workers() -> int:
    return min(8, max(2, 2 * (os.cpu_count() or 1)))


@dataclass(frozen=True)
class GitConfig(Record):
    """The desired-state repository and how much to trust it."""

    url: str
    branch: str = "main"
    path: str = "desired-state"
    #: none: take any commit; head: the fetched head must carry a good signature;
    #: strict: every commit since the last applied one must.
    verify: Literal["none", "head", "strict"] = "none"
    #: SSH signatures: an allowed_signers file (ssh-keygen format).
    allowed_signers: Path | None = None
    #: GPG signatures: a file of armored public keys that may sign.
    gpg_keys: Path | None = None
    #: Accept a branch that is not a fast-forward of the last applied revision.
    allow_rewrite: bool = False
    #: Seconds a fetch may take (at most a day).
    timeout: Annotated[float, Limits(gt=0, le=86400)] = 120.0


@dataclass(frozen=True)
class Roots(Record):
    compose: Path = Path("/mnt/compose")
    staging: Path = Path("/mnt/repos-staging")
    production: Path = Path("/mnt/repos-production")

    def of(self, stage: Stage) -> Path:
        """The root of a stage's trees."""
        if stage in {Stage.PRODUCTION, Stage.VAULT}:  # the vault is under production's root
            return self.production
        return self.staging if stage is Stage.STAGING else self.compose


@dataclass(frozen=True)
class DownloadConfig(Record):
    """How packages are fetched from the build system."""

    #: Parallel downloads. The default, two per CPU between 2 and 8, is what measured
    #: fastest here (on 2 CPUs, 4 workers composed 20,000 packages 21% faster than 8);
    #: raise it for a distant upstream, where latency rather than CPU is the limit.
    workers: Annotated[int, Limits(ge=1, le=64)] = field(default_factory=_default_workers)
    retries: Annotated[int, Limits(ge=0, le=20)] = 4
    backoff: Annotated[float, Limits(ge=0.0, le=60.0)] = 0.5
    #: Seconds one read (or the connect) may wait for the server (at most an hour).
    timeout: Annotated[float, Limits(gt=0.0, le=3600)] = 60.0
    #: Seconds one file may take in all: connecting, redirects, every byte of the
    #: body, and the retries and their waits. A server that answers a byte at a time
    #: never trips ``timeout``; this bounds how long it can hold a compose.
    deadline: Annotated[float, Limits(gt=0.0, le=86400.0)] = 600.0
    #: The largest metadata file read into memory (``repomd.xml``, and a file whose
    #: size the metadata does not state); a larger one is refused.
    max_metadata_bytes: Annotated[int, Limits(ge=1, le=1 << 32)] = 256 << 20


@dataclass(frozen=True)
class MetricsConfig(Record):
    """Where ``run`` serves /metrics, /healthz and POST /trigger."""

    #: host:port; empty string turns the server off.
    listen: str = "127.0.0.1:9090"
    #: also write the metrics here after each pass (node_exporter textfile collector).
    textfile: Path | None = None


@dataclass(frozen=True)
class HooksConfig(Record):
    """Lifecycle hooks: executables named ``pre-<stage>``, ``post-<stage>``, ``on-failure``."""

    dir: Path | None = None
    #: Seconds a hook may run (at most a day).
    timeout: Annotated[float, Limits(gt=0, le=86400)] = 300.0


def _check_mirror_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
        raise ValueError(f"invalid mirror base_url {value!r}: expected http:// or https://")
    return value.rstrip("/")


def _check_mirror_path(value: str) -> str:
    """The category's path on the mirror: relative, no '..', no query."""
    parts = [p for p in value.strip("/").split("/") if p]
    if any(p in (".", "..") for p in parts) or not re.fullmatch(r"[A-Za-z0-9._~/%+-]*", value):
        raise ValueError(f"invalid mirror path {value!r}: a relative URL path, no '..'")
    return "/".join(parts)


def _check_mirror_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", value):
        raise ValueError(f"invalid mirror name {value!r}: letters, digits, '._-', 1 to 64")
    return value


@dataclass(frozen=True)
class MirrorConfig(Record):
    """A public mirror whose copy of production is checked (:mod:`reconciler.propagation`)."""

    name: Annotated[str, Check(_check_mirror_name)]
    #: http:// or https://, e.g. ``https://mirror.example.org``
    base_url: Annotated[str, Check(_check_mirror_url)]
    #: Where production's category is on that mirror, e.g. ``pub/rocky/sig``: a repo's
    #: ``repomd.xml`` is at ``<base_url>/<path>/<release>/<sig>/<repo dir>/repodata/``.
    path: Annotated[str, Check(_check_mirror_path)] = ""

    def url(self, release: str, sig: str, rel: str) -> str:
        """The URL of a file ``rel`` (relative to the SIG's directory) on this mirror."""
        parts = (p.strip("/") for p in (self.base_url, self.path, release, sig, rel))
        return "/".join(p for p in parts if p)


def _unique_mirrors(value: tuple[MirrorConfig, ...]) -> tuple[MirrorConfig, ...]:
    names = [m.name for m in value]
    if len(set(names)) != len(names):
        raise ValueError(f"mirror names must be unique: {names}")
    return value


_STATE_URL_RE = re.compile(r"postgres(?:ql)?://[^/?#\s]+/[A-Za-z0-9_.-]+(?:\?[^#\s]*)?")


def _state_url(value: str) -> str:
    """A PostgreSQL URL without a password (that comes from ``password_file``)."""
    if not _STATE_URL_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a postgresql://[user@]host[:port]/database URL")
    authority = value.split("://", 1)[1].split("/", 1)[0]
    if ":" in authority.rpartition("@")[0] or "password=" in value:
        raise ValueError("the URL holds a password: put it in password_file instead")
    return value


@dataclass(frozen=True)
class StateConfig(Record):
    """Where the state lives. Without ``url``: one SQLite file in ``state_dir`` (one host).
    With it: a PostgreSQL database that every host of the distribution shares; one
    ``run`` process leads (publishes) under a lease, any process composes jobs."""

    #: ``postgresql://user@host:port/database`` (no password in it).
    url: Annotated[str, Check(_state_url)] | None = None
    #: A file holding the database password (first line); never the config itself.
    password_file: Path | None = None
    #: Seconds to wait for a connection, and for any one statement (deadlines).
    connect_timeout: Annotated[float, Limits(gt=0.0, le=300.0)] = 10.0
    statement_timeout: Annotated[float, Limits(gt=0.0, le=3600.0)] = 60.0
    #: Seconds the leader lease lasts unless renewed (renewed every third of it). A
    #: leader that cannot renew stops publishing before its lease can be taken; a new
    #: leader takes over within this plus one pass interval.
    lease: Annotated[int, Limits(ge=2, le=3600)] = 30
    #: Seconds without a heartbeat after which a running compose job is taken again
    #: (its half-made compose is DOOMED).
    job_timeout: Annotated[int, Limits(ge=2, le=86400)] = 60
    #: This host's name in the lease and the job table (default: the host name).
    node: Annotated[str, Limits(min_length=1, max_length=200)] | None = None

    @property
    def dialect(self) -> Dialect:
        return Dialect.SQLITE if self.url is None else Dialect.POSTGRESQL


@dataclass(frozen=True)
class HostConfig(Record):
    git: GitConfig | None = None
    roots: Roots = Roots()
    state_dir: Path = Path("/var/lib/reconciler")
    #: The state database (default: SQLite in ``state_dir``; or a shared PostgreSQL).
    state: StateConfig = StateConfig()
    upstream_base_url: str | None = None
    #: Seconds between passes of ``run`` (at most a day).
    interval: Annotated[int, Limits(ge=1, le=86400)] = 300
    download: DownloadConfig = DownloadConfig()
    #: What to do when a published tree differs from what was published.
    drift: Literal["repair", "report"] = "repair"
    #: Seconds between drift checks (each walks the published trees; at most a week).
    drift_interval: Annotated[int, Limits(ge=0, le=604800)] = 3600
    #: Seconds between deep drift checks: each reads every published file and compares
    #: its sha256 with the compose's manifest (bytes changed in place, size and mtime put
    #: back). Default daily; 0: only on demand (``reconciler verify --drift --deep``).
    #: At most a year (a check that never comes is 0, not a huge number).
    drift_deep_interval: Annotated[int, Limits(ge=0, le=366 * 86400)] = 86400
    metrics: MetricsConfig = MetricsConfig()
    #: A file holding the shared secret that POST /trigger requires (Bearer token).
    webhook_secret_file: Path | None = None
    hooks: HooksConfig = HooksConfig()
    #: Public mirrors whose copies of production are checked after each production
    #: publish and every ``mirror_check_interval`` seconds.
    mirrors: Annotated[
        tuple[MirrorConfig, ...], Limits(max_length=100), Check(_unique_mirrors)
    ] = ()
    #: Seconds between mirror checks besides those after a production publish (at most
    #: a day; 0: only after a production publish).
    mirror_check_interval: Annotated[int, Limits(ge=0, le=86400)] = 600
    #: auto: JSON when stderr is not a terminal, text on a terminal.
    log_format: Literal["auto", "json", "text"] = "auto"
    #: Where the status page links a desired-state commit: ``{sha}`` is replaced by its
    #: full sha (``https://forge.example/desired-state/commit/{sha}``); None: no links.
    commit_url: Annotated[str, Check(_commit_url)] | None = None

    def commit_link(self, sha: str | None) -> str | None:
        """The link to a commit, or None (no template, no commit)."""
        if self.commit_url is None or not sha:
            return None
        return self.commit_url.replace("{sha}", sha)

    @property
    def layout(self) -> StateLayout:
        """Where things are in the state directory."""
        return StateLayout(self.state_dir)

    def compose_tree(self, sig: str, release: str) -> ComposeTree:
        """The composes of a SIG release under the compose root."""
        return ComposeTree(self.roots.compose, sig, release)

    def published(self, category: str, stage: Stage, sig: str, release: str) -> PublishedTree:
        """Where a SIG release is published at ``stage`` (staging or production)."""
        return PublishedTree(stage, self.roots.of(stage), category, sig, release)
