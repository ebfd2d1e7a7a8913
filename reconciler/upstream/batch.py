"""Many verified downloads at once (:meth:`reconciler.upstream.Upstream.download_all`).

First attempts go through libcurl's multi interface (:mod:`.transfers`), on
:func:`loops_for` threads: one loop keeps a CPU busy hashing and writing, and a
compose host has more than one. They take the jobs from one queue in their order,
so that the largest files (first) are spread over them. Whatever libcurl does not do
here goes to the client's own loop (:meth:`~reconciler.upstream.Upstream.download_after`)
on a thread pool: a URL that goes through a proxy, a redirect, and every attempt
after a failed first one (which counts as its first try, its time as part of the
deadline). So the rules (retries, backoff, ``Retry-After``, the deadline, the error
tree) are the client's, written once. The first final error stops the loops and is
raised.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UpstreamError
from .faults import Failed, Retryable, check_status
from .records import Expected, Fetched
from .transfers import Job, Outcome, Settings, transfer

if TYPE_CHECKING:
    from . import Upstream

#: Connections one loop keeps busy at the least (fewer loops than that would give).
_PER_LOOP = 2


def loops_for(workers: int, cpus: int | None) -> int:
    """How many transfer loops: one per CPU, each with at least :data:`_PER_LOOP` of the
    ``workers`` connections."""
    return max(1, min(cpus or 1, workers // _PER_LOOP))


def download_all(
    up: Upstream, jobs: Sequence[tuple[str, Path, Expected]], done: Callable[[int, Fetched], None]
) -> None:
    """See :meth:`reconciler.upstream.Upstream.download_all`."""
    cfg = up.config
    loops = loops_for(cfg.workers, os.cpu_count())
    settings = Settings(
        concurrency=-(-cfg.workers // loops),
        connect_timeout=min(cfg.timeout, 15.0),
        read_timeout=cfg.timeout,
        deadline=cfg.deadline,
        max_metadata_bytes=cfg.max_metadata_bytes,
    )
    index: dict[int, int] = {}  # id of a Job -> its index in jobs
    later: list[Future[None]] = []
    stop = threading.Event()

    def carry_on(i: int, failed: Failed | None = None) -> None:
        done(i, up.download_after(*jobs[i], failed))

    def judge(out: Outcome) -> None:
        i = index[id(out.job)]
        if out.fetched is None:
            up.stats.add(requests=1)
            later.append(pool.submit(carry_on, i, _failure(out)))
        else:
            up.stats.add(requests=1, nbytes=out.fetched.nbytes, files=1)
            done(i, out.fetched)

    def run(todo: deque[Job]) -> None:
        try:
            with closing(transfer(todo, settings, stop)) as outcomes:
                for out in outcomes:
                    judge(out)
        except BaseException:
            stop.set()  # the other loops end too
            raise

    with ThreadPoolExecutor(cfg.workers) as pool, ThreadPoolExecutor(loops) as runners:
        try:
            todo: deque[Job] = deque()
            seen: dict[str, bool] = {}
            for i, (url, dest, expected) in enumerate(jobs):
                if _direct(up, url, seen):
                    todo.append(Job(url, dest, expected))
                    index[id(todo[-1])] = i
                else:
                    later.append(pool.submit(carry_on, i))
            for future in as_completed([runners.submit(run, todo) for _ in range(loops)]):
                future.result()
            for future in as_completed(later):
                future.result()
        finally:
            stop.set()
            pool.shutdown(cancel_futures=True)


def _direct(up: Upstream, url: str, seen: dict[str, bool]) -> bool:
    """Whether ``url`` is fetched straight from its server, without credentials (the
    plain case :mod:`.transfers` handles). ``seen``: the answers so far, by scheme and
    authority (the same for every path)."""
    scheme, _, rest = url.partition("://")
    key = f"{scheme}://{rest.split('/', 1)[0]}"
    if key not in seen:
        try:
            direct = up.proxy_for(url) is None
        except UpstreamError:  # the client's loop says why, naming the URL
            direct = False
        seen[key] = direct and "@" not in key
    return seen[key]


def _failure(out: Outcome) -> Failed | None:
    """A failed first attempt as the client's retry loop takes it (None: to do anew
    there, as a redirect); a final one raised."""
    if out.error is not None:
        raise out.error
    if out.tls:
        raise UpstreamError(f"{out.job.url}: {out.reason}")
    if out.status is None:
        return Retryable(out.reason, out.integrity), out.started
    try:
        check_status(out.job.url, out.status, out.reason, out.retry_after)
    except Retryable as exc:
        return exc, out.started
    return None
