"""Mirror propagation: did the public mirrors pick production up?

After each production publish and every ``mirror_check_interval`` seconds
(:func:`check_if_due`, at the end of each apply), every configured mirror (host config
``mirrors:``) is asked for the ``repomd.xml`` of every repo production serves
(:func:`check_mirrors`), and what it serves is kept in the state. How each mirror
stands is decided from the state when it is shown (:mod:`reconciler.freshness`):
:func:`standings` per mirror and SIG release (``reconciler mirrors``), :func:`summaries`
per production target (``status``, the status page, the metrics).

Polite to the mirrors: conditional GETs (``If-None-Match`` / ``If-Modified-Since`` with
the validators of the last answer), one thread per mirror and at most
:data:`MAX_WORKERS` at once, one connection kept alive per mirror, :data:`TIMEOUT` per
read, :data:`DEADLINE` per file, :data:`MAX_REPOMD_BYTES` per body, no retries; the
first failure that is not a 404/410 ends that mirror's check (its other repos are
recorded unreachable with the same error), so a dead mirror costs one timeout.
Built on the upstream client (:class:`reconciler.upstream.Upstream`): proxies, TLS and
redirects as for the build system.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from .errors import HTTPStatusError, ReconcilerError, UpstreamError
from .facts import TargetKey
from .freshness import MirrorCheck, MirrorSummary, MirrorTarget, judge, summarize
from .hostconfig import DownloadConfig, HostConfig, MirrorConfig
from .state import StateDB
from .upstream import Upstream

log = logging.getLogger(__name__)

#: Mirrors checked at once (each by one thread, its repos one after another).
MAX_WORKERS = 8
#: Seconds one read (or the connect) may wait for a mirror.
TIMEOUT = 10.0
#: Seconds one repomd.xml may take in all.
DEADLINE = 30.0
#: The largest repomd.xml read from a mirror.
MAX_REPOMD_BYTES = 4 << 20
_MISSING = frozenset({404, 410})

#: (sig, release, path in the SIG's directory) of a repo's repomd.xml
Repo = tuple[str, str, str]


def _client() -> Upstream:
    config = DownloadConfig(workers=1, retries=0, timeout=TIMEOUT, deadline=DEADLINE,
                            max_metadata_bytes=MAX_REPOMD_BYTES)  # fmt: skip
    return Upstream(config, log)


def _check_one(
    client: Upstream,
    mirror: MirrorConfig,
    repos: Sequence[Repo],
    previous: dict[tuple[str, str, str, str], MirrorCheck],
) -> list[MirrorCheck]:
    """Ask one mirror for every repo's repomd.xml, in turn; stop at its first failure."""
    out: list[MirrorCheck] = []
    down: str | None = None
    for sig, release, path in repos:
        prev = previous.get((mirror.name, sig, release, path))
        # the validators go with the body they describe: without a known body, ask anew
        etag = prev.etag if prev is not None and prev.sha1 else None
        modified = prev.last_modified if prev is not None and prev.sha1 else None
        sha1 = prev.sha1 if prev is not None else None
        if down is not None:
            out.append(MirrorCheck(mirror.name, sig, release, path, sha1, etag, modified,
                                   down, False, datetime.now(UTC)))  # fmt: skip
            continue
        url = mirror.url(release, sig, path)
        try:
            body, etag, modified = client.get_if_changed(url, etag, modified)
        except UpstreamError as exc:
            if isinstance(exc, HTTPStatusError) and exc.status in _MISSING:
                # the mirror does not have the repo (yet): behind, not unreachable
                out.append(MirrorCheck(mirror.name, sig, release, path, None, None, None,
                                       str(exc), True, datetime.now(UTC)))  # fmt: skip
                continue
            down = str(exc)
            log.warning("mirror %s: %s", mirror.name, down,
                        extra={"event": "mirror.unreachable", "mirror": mirror.name})  # fmt: skip
            out.append(MirrorCheck(mirror.name, sig, release, path, sha1, etag, modified,
                                   down, False, datetime.now(UTC)))  # fmt: skip
            continue
        if body is not None:
            sha1 = hashlib.sha1(body, usedforsecurity=False).hexdigest()
        out.append(MirrorCheck(mirror.name, sig, release, path, sha1, etag, modified,
                               None, False, datetime.now(UTC)))  # fmt: skip
    return out


def check_mirrors(host: HostConfig, state: StateDB) -> list[MirrorCheck]:
    """Ask every configured mirror for every repo production serves; keep the answers."""
    mirrors = host.mirrors
    repos = sorted({(s.sig, s.release, s.path) for s in state.mirrors.served() if s.current})
    previous = {(c.mirror, c.sig, c.release, c.path): c for c in state.mirrors.checks()}
    checks: list[MirrorCheck] = []
    if mirrors and repos:
        with (
            _client() as client,
            ThreadPoolExecutor(
                min(MAX_WORKERS, len(mirrors)), thread_name_prefix="mirror-check"
            ) as pool,
        ):
            for found in pool.map(lambda m: _check_one(client, m, repos, previous), mirrors):
                checks.extend(found)
    state.mirrors.replace_checks([m.name for m in mirrors], checks)
    log.info("mirrors checked: %d mirror(s), %d repo(s)", len(mirrors), len(repos),
             extra={"event": "mirror.checked"})  # fmt: skip
    return checks


def is_due(host: HostConfig, state: StateDB, now: datetime) -> bool:
    """Whether the interval's check is due (never, when no mirror is configured)."""
    if not host.mirrors:
        return False
    last = state.mirrors.checked_at()
    interval = host.mirror_check_interval
    return last is None or (interval > 0 and now - last >= timedelta(seconds=interval))


def check_if_due(host: HostConfig, state: StateDB, published: bool) -> None:
    """At the end of an apply: check the mirrors when production was just published or
    the interval has passed. A failure is logged; it never fails the pass."""
    if not host.mirrors or not (published or is_due(host, state, datetime.now(UTC))):
        return
    try:
        check_mirrors(host, state)
    except (ReconcilerError, OSError) as exc:
        log.error("mirror check failed: %s", exc, extra={"event": "mirror.failed"})


def standings(
    state: StateDB, mirrors: Sequence[str] | None = None, now: datetime | None = None
) -> list[MirrorTarget]:
    """How each mirror stands for each SIG release production serves (by mirror, SIG,
    release). ``mirrors``: the names configured (None: those checked last)."""
    checks = state.mirrors.checks()
    names = mirrors if mirrors is not None else sorted({c.mirror for c in checks})
    return judge(names, state.mirrors.served(), checks, now or datetime.now(UTC))


def summaries(
    state: StateDB, mirrors: Sequence[str] | None = None, now: datetime | None = None
) -> dict[TargetKey, MirrorSummary]:
    """For the status page and ``status``: each production target's mirrors, counted
    (current, behind with the oldest lag, foreign, unreachable, unchecked). Read from
    the state only; ``mirrors`` as for :func:`standings`."""
    return summarize(standings(state, mirrors, now))
