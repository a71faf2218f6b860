"""Run by `bench/profile_list.py` in a warm Python 3.13 on the built layer: where the
authenticated `GET /api/tasks` spends its time. Each stage is timed on its own, with the
same arguments the request gives it, interleaved with the whole invocation, so that each
is a share of the same total:

- Mangum: the handler against the FastAPI app called directly with the ASGI scope that
  Mangum builds from the event (the difference is Mangum's event and response work);
- token decoding (`taskapi.tokens.decode_token`), opening and closing the read-only
  connection (`taskapi.db.open_read_connection`: the pool's checkout and check-in), the
  page query (the list's statement, which checks the session too, rows fetched), the
  page's data from the rows and its serialisation (`taskapi.models.page_json`,
  `json_response`), the
  request log line;
- FastAPI and Starlette: whatever the ASGI call costs beyond all of those (routing,
  dependency resolution, query parameter validation, middleware, exception handling).

Then a cProfile of the same invocations, for the functions behind each share.
"""

import asyncio
import cProfile
import gc
import importlib.util
import io
import json
import logging
import os
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

config: dict[str, Any] = json.loads(open(sys.argv[1]).read())  # noqa: SIM115
root = config["root"]
sys.path.insert(0, root)
spec = importlib.util.spec_from_file_location("app", os.path.join(root, "app.py"))
assert spec is not None
assert spec.loader is not None
app_module = importlib.util.module_from_spec(spec)
sys.modules["app"] = app_module
spec.loader.exec_module(app_module)

from mangum.handlers.api_gateway import HTTPGateway  # noqa: E402
from pydantic import TypeAdapter  # noqa: E402

import tasks_queries  # noqa: E402
import tasks_routes  # noqa: E402
from taskapi import auth, db  # noqa: E402
from taskapi.models import TaskPage, page_json, task_values  # noqa: E402
from taskapi.tokens import decode_token  # noqa: E402


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


event = config["event"]
context = LambdaContext()
token = config["token"]
handler = app_module.handler
fastapi_app = app_module.app
loop = asyncio.get_event_loop()
scope = HTTPGateway(event, context, {"api_gateway_base_path": "/"}).scope


def invocation() -> None:
    response = handler(event, context)
    assert response["statusCode"] == 200, response


def asgi() -> None:
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    loop.run_until_complete(fastapi_app(dict(scope), receive, send))
    assert sent[0]["status"] == 200, sent


claims = decode_token(token, expected_type="access")
user_params = {"user_id": claims.user_id, "session_id": claims.session_id}
page_statement, _ = tasks_queries._list_statements(
    tasks_queries._Shape(
        sort=tasks_queries.DEFAULT_SORT,
        by_status=False,
        by_priority=False,
        by_text=False,
        postgresql=False,
        by_due_before=False,
        by_due_after=False,
        overdue=None,
        skips=False,
    )
)
page_params = {
    "user_id": claims.user_id,
    "session_id": claims.session_id,
    "statuses": [],
    "priorities": [],
    "text": None,
    "due_before": None,
    "due_after": None,
    "now": datetime.now(UTC),
    "skip": 0,
    "limit": 20,
}
# One connection kept open for the query stages, as the request's own is while they run;
# and a session for the references that need one.
connection = db.open_read_connection()
session = db.open_session(read_only=True)
rows = connection.execute(page_statement, page_params).all()
page_items = [task_values(row) for row in rows]
request_logger = logging.getLogger("taskapi.request")


def token_decoding() -> None:
    decode_token(token, expected_type="access")


def user_query() -> None:
    # `CurrentUser`'s check, which the list makes inside its page statement instead.
    row = connection.execute(
        auth._LIVE_SESSION_USER, {**user_params, "now": datetime.now(UTC)}
    ).first()
    assert row is not None


def connection_open_close() -> None:
    with db.open_read_connection():
        pass


def page_query() -> None:
    connection.execute(page_statement, page_params).all()


def page_data_from_rows() -> None:
    [task_values(row) for row in rows]


def serialisation() -> None:
    tasks_routes.json_response(page_json(page_items, total=rows[0].total, skip=0, limit=20))


PAGE_MODEL = TypeAdapter(TaskPage)


def page_validated_and_dumped() -> None:
    # What the list did before: validate the rows into `TaskPage`, then dump it.
    items = [task_values(row) for row in rows]
    page = PAGE_MODEL.validate_python(
        {"items": items, "total": rows[0].total, "skip": 0, "limit": 20}
    )
    tasks_routes.json_response(PAGE_MODEL.dump_json(page))


def request_log() -> None:
    request_logger.info(
        "request",
        extra={
            "method": "GET",
            "path": "/api/tasks",
            "status": 200,
            "duration_ms": 1.23,
            "cold_start": False,
        },
    )


# What the stages above chose against, timed beside them: the whole ORM user instead of
# the columns the check needs, the session check as a query of its own instead of inside
# the page statement, an ORM Session instead of a bare connection, and validating the page
# into models before dumping it. Each row is what the choice saves per request; the lean
# FastAPI + Core route gives the scale of a whole invocation without the layer.


def user_query_orm() -> None:
    user = session.exec(
        auth._LIVE_SESSION_USER, params={**user_params, "now": datetime.now(UTC)}
    ).first()
    assert user is not None


def session_open_close() -> None:
    with db.open_session(read_only=True) as fresh:
        fresh.connection()


candidates: dict[str, Callable[[], None]] = {
    "reference: the whole ORM User (CurrentUser, /me and account routes)": user_query_orm,
    "reference: CurrentUser's query on its own (in the page statement instead)": user_query,
    "reference: a read-only ORM Session open/close (SessionDep)": session_open_close,
    "reference: the page validated into TaskPage and dumped": page_validated_and_dumped,
}


def baseline(root: str, name: str) -> Any:
    """A peer baseline's app module (bench/apps), imported as the functions' are."""
    sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location(name, f"{root}/app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def baseline_invocation(module: Any) -> Callable[[], None]:
    event = config["lean_event"]

    def call() -> None:
        response = module.handler(event, context)
        assert response["statusCode"] == 200, response

    return call


if config.get("lean_root"):
    candidates["reference: lean FastAPI + Core route, whole invocation"] = baseline_invocation(
        baseline(config["lean_root"], "lean_app")
    )
if config.get("powertools_root"):
    candidates["reference: Powertools resolver + Core, whole invocation"] = baseline_invocation(
        baseline(config["powertools_root"], "powertools_app")
    )


def whole(event: dict[str, Any], status: int) -> Callable[[], None]:
    def call() -> None:
        response = handler(event, context)
        assert response["statusCode"] == status, response

    return call


candidates["reference: GET /api/tasks/{id}, whole invocation"] = whole(config["read_event"], 200)
candidates["reference: POST /api/tasks, whole invocation"] = whole(config["create_event"], 201)

stages: dict[str, Callable[[], None]] = {
    "invocation": invocation,
    "asgi app": asgi,
    "token decoding": token_decoding,
    "connection open/close": connection_open_close,
    "page query": page_query,
    "page data (rows to dicts)": page_data_from_rows,
    "serialisation": serialisation,
    "request log line": request_log,
    **candidates,
}
for _ in range(config["warmup"]):
    for call in stages.values():
        call()
# Wall time, and the thread's CPU time: on a loaded machine a 2 ms call is far likelier to
# be preempted than a 0.2 ms one, which would inflate the long stages' wall medians; CPU
# time leaves that out (and leaves out waiting for PostgreSQL, which wall time shows).
wall: dict[str, list[float]] = {name: [] for name in stages}
cpu: dict[str, list[float]] = {name: [] for name in stages}
gc.collect()
for _ in range(config["invocations"]):
    for name, call in stages.items():
        started, started_cpu = time.perf_counter(), time.thread_time()
        call()
        cpu[name].append((time.thread_time() - started_cpu) * 1000)
        wall[name].append((time.perf_counter() - started) * 1000)
medians = {name: statistics.median(values) for name, values in wall.items()}
cpu_medians = {name: statistics.median(values) for name, values in cpu.items()}

profiler = cProfile.Profile()
profiler.enable()
for _ in range(config["invocations"]):
    invocation()
profiler.disable()
listing = io.StringIO()
stats = pstats.Stats(profiler, stream=listing)
stats.sort_stats("cumulative").print_stats(45)
tottime = io.StringIO()
pstats.Stats(profiler, stream=tottime).sort_stats("tottime").print_stats(25)
session.close()
connection.close()
with open(sys.argv[2], "w") as result:
    json.dump(
        {
            "medians_ms": medians,
            "cpu_medians_ms": cpu_medians,
            "cprofile_cumulative": listing.getvalue(),
            "cprofile_tottime": tottime.getvalue(),
        },
        result,
    )
