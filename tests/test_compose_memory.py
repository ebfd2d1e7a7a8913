"""What keeps a compose of 100,000 packages small: downloads are handed to the pool a
window at a time (``pool.map`` made a future for every package up front), and the first
failure stops the rest."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from reconciler.placing import bounded_map


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
