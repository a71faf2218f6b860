"""Run by `bench/warm.py` as `python -c CODE config.json result.json` with the layer on
`PYTHONPATH`: load the functions and the baselines into one warm process and time each
invocation of `handler(event, context)`, subjects interleaved call by call.

Standard library and the layer only (psycopg2 for the floor comes from the layer).
"""

import gc
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

config: dict[str, Any] = json.loads(open(sys.argv[1]).read())  # noqa: SIM115


def load(name: str, root: str) -> Any:
    """A task root's `app.py` under a unique module name (all the apps are `app`)."""
    sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, "app.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class LambdaContext:
    function_name = "bench"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    aws_request_id = "00000000-0000-0000-0000-000000000001"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    log_group_name = "/aws/lambda/bench"
    log_stream_name = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def invocation(handler: Any, event: dict[str, Any], expected: int) -> Callable[[], None]:
    context = LambdaContext()

    def call() -> None:
        response = handler(event, context)
        if response["statusCode"] != expected:
            raise RuntimeError(f"{event['rawPath']}: {response['statusCode']} {response}")

    return call


def floor(backend: str, url: str, user_id: str) -> Callable[[], None]:
    """The same page query with the plain driver, rows to JSON: nothing can be cheaper."""
    columns = "id, user_id, title, description, status, priority, created_at, updated_at"
    columns += ", completed_at"
    if backend == "sqlite":
        import sqlite3

        connection: Any = sqlite3.connect(url)
        parameter, marker = user_id.replace("-", ""), "?"
    else:
        import psycopg2

        connection = psycopg2.connect(url)
        parameter, marker = user_id, "%s"
    sql = (
        f"SELECT {columns} FROM task WHERE user_id = {marker} AND deleted_at IS NULL "
        "ORDER BY created_at DESC, id DESC LIMIT 20 OFFSET 0"
    )
    names = [name.strip() for name in columns.split(",")]

    def call() -> None:
        cursor = connection.cursor()
        cursor.execute(sql, (parameter,))
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        cursor.close()
        connection.commit()
        json.dumps(rows, default=str)

    return call


apps = {name: load(f"bench_{name}_app", root) for name, root in config["roots"].items()}
events = config["events"]
subjects: dict[str, Callable[[], None]] = {
    "GET /api/tasks": invocation(apps["tasks"].handler, events["list"], 200),
    "GET /api/tasks/{id}": invocation(apps["tasks"].handler, events["read"], 200),
    "POST /api/tasks": invocation(apps["tasks"].handler, events["create"], 201),
    "GET /health": invocation(apps["health"].handler, events["health"], 200),
    "baseline: minimal GET /api/tasks": invocation(apps["minimal"].handler, events["minimal"], 200),
    "baseline: bare GET /health": invocation(apps["bare"].handler, events["health"], 200),
    "baseline: lean FastAPI + Core GET /api/tasks": invocation(
        apps["lean"].handler, events["minimal"], 200
    ),
    "baseline: Powertools GET /api/tasks": invocation(
        apps["powertools"].handler, events["minimal"], 200
    ),
    "baseline: Chalice GET /api/tasks": invocation(apps["chalice"].handler, events["chalice"], 200),
    "floor: driver + json.dumps": floor(config["backend"], config["raw_url"], config["user_id"]),
}
for call in subjects.values():
    for _ in range(config["warmup"]):
        call()
samples: dict[str, list[float]] = {name: [] for name in subjects}
gc.collect()
for _ in range(config["invocations"]):
    for name, call in subjects.items():
        started = time.perf_counter()
        call()
        samples[name].append((time.perf_counter() - started) * 1000)
with open(sys.argv[2], "w") as result:
    json.dump(samples, result)
