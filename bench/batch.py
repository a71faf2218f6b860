"""A batch of 100 creates against 10 single creates, through the tasks function's real
handler (API Gateway events, one warm process), on SQLite and on PostgreSQL when it is
reachable: the median wall time of each, over interleaved rounds.

Usage: .venv/bin/python -m bench.batch [--rounds N]  (prints a table; not part of `make bench`)
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.database import bench_database, postgres_available
from localapi.events import LambdaContext, http_event

BATCH = 100
SINGLES = 10


def tasks_handler() -> Any:
    # Imported here: the function reads its settings, set by `measure`, as it loads.
    from tests.support.functions import load_function

    return load_function("tasks").handler


def timed(call: Callable[[], None]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def measure(backend: str, rounds: int) -> dict[str, float]:
    from taskapi import state

    with (
        tempfile.TemporaryDirectory() as folder,
        bench_database(backend, Path(folder), tasks=0) as database,
    ):
        os.environ["DATABASE_URL"] = database.url
        os.environ["MAX_TASKS_PER_USER"] = str(rounds * (BATCH + SINGLES) * 2)
        state.reset()
        handler = tasks_handler()
        context = LambdaContext()
        headers = {
            "authorization": f"Bearer {database.writer_token}",
            "content-type": "application/json",
        }
        one = json.dumps({"title": "A single create", "priority": "High"})
        batch = json.dumps(
            {
                "operations": [
                    {"op": "create", "body": {"title": f"Batched {n}", "priority": "High"}}
                    for n in range(BATCH)
                ]
            }
        )
        single_event = http_event("POST", "/api/tasks", headers=headers, body=one)
        batch_event = http_event("POST", "/api/tasks/batch", headers=headers, body=batch)

        def singles() -> None:
            for _ in range(SINGLES):
                assert handler(single_event, context)["statusCode"] == 201

        def batched() -> None:
            response = handler(batch_event, context)
            assert response["statusCode"] == 200, response
            results = json.loads(response["body"])["results"]
            assert [result["status"] for result in results] == [201] * BATCH

        singles()  # warm both paths
        batched()
        single_ms, batch_ms = [], []
        for _ in range(rounds):
            single_ms.append(timed(singles))
            batch_ms.append(timed(batched))
        state.reset()
    return {"singles": statistics.median(single_ms), "batch": statistics.median(batch_ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    rounds = parser.parse_args().rounds
    backends = ["sqlite"] + (["postgresql"] if postgres_available() else [])
    print(f"| backend | {SINGLES} single creates (ms) | 1 batch of {BATCH} creates (ms) |")
    print("|---|---|---|")
    for backend in backends:
        result = measure(backend, rounds)
        print(f"| {backend} | {result['singles']:.1f} | {result['batch']:.1f} |")


if __name__ == "__main__":
    main()
