"""Races: the same call from many threads (many containers, each calling the real handler)
released at the same moment."""

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def at_once(count: int, call: Callable[[], T]) -> list[T]:
    """`call()` from `count` threads released together; the results, in order."""
    return each_at_once(count, lambda _: call())


def each_at_once(count: int, call: Callable[[int], T]) -> list[T]:
    """`call(i)` for each i in range(count), each from a thread of its own, released together."""
    barrier = threading.Barrier(count)

    def run(index: int) -> T:
        # Generous bounds: a wait that long is a hang (an error), not a slow machine.
        barrier.wait(timeout=60)
        return call(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(run, index) for index in range(count)]
        return [future.result(timeout=120) for future in futures]
