"""What keeps a compose of 100,000 packages small: downloads are handed to the pool a
window at a time (``pool.map`` made a future for every package up front), and the first
failure stops the rest; the placement's steps share what they have in common (the
repository's URL, the reason of a link) instead of a copy each."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from reconciler.layout import Variant
from reconciler.placement import Previous, PreviousPackage, VariantSource, choose, plan
from reconciler.placing import bounded_map
from reconciler.vocabulary import VariantKind

from .placement_support import package


def test_items_are_taken_a_window_at_a_time_and_every_result_comes_back() -> None:
    taken = 0
    release = threading.Event()

    def items() -> Iterator[int]:
        nonlocal taken
        for i in range(200):
            taken += 1
            yield i

    def work(i: int) -> int:
        release.wait(10)
        return i * 2

    with ThreadPoolExecutor(2) as pool:
        results = bounded_map(pool, work, items(), window=5)
        threading.Timer(0.2, release.set).start()
        first = next(results)  # waits for the first download: only a window was taken
        assert taken <= 6, f"{taken} items submitted for a window of 5"
        rest = list(results)
    assert sorted([first, *rest]) == [i * 2 for i in range(200)]


def test_the_first_failure_is_raised_and_what_was_not_submitted_never_runs() -> None:
    ran: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            ran.append(i)
        if i == 3:
            raise OSError(f"download {i} failed")
        return i

    with ThreadPoolExecutor(2) as pool, pytest.raises(OSError, match="download 3 failed"):
        for _ in bounded_map(pool, work, range(1000), window=4):
            pass
    assert len(ran) < 20, f"{len(ran)} items ran after the failure"


def test_link_steps_share_their_reason_and_make_a_url_only_when_asked() -> None:
    old = Variant("core-common", "x86_64", VariantKind.BINARY)
    facts = [
        package({"nevra": f"sig-p{i}-1.0-1.x86_64", "id": f"id{i}", "size": 7}) for i in range(3)
    ]
    prev = Previous(
        "SIG-core-9-20261101.0",
        {f.pkgid: PreviousPackage(f.pkgid, 7, old, f"Packages/{f.filename}", 5) for f in facts},
    )
    base = "http://build.invalid/repo/core-common/x86_64"
    links = plan([choose(VariantSource(old, base, tuple(facts)), 0, True)], prev).links
    assert len(links) == 3
    assert all(s.base is base for s in links), "each step refers to the one repository URL"
    assert links[1].reason is links[0].reason is links[2].reason
    assert links[2].url == f"{base}/Packages/sig-p2-1.0-1.x86_64.rpm"
