"""The shared app factory, through a real Mangum handler fed API Gateway events."""

import asyncio
import json
import time
from typing import Annotated

import pytest
from fastapi import APIRouter, Depends, HTTPException
from sqlmodel import select

from localapi.events import http_event
from taskapi.db import SessionDep
from taskapi.factory import LambdaHandler, create_app, function_router, make_handler
from taskapi.models import User
from tests.support.client import Response, invoke
from tests.support.database import Database
from tests.support.environment import configure


def build_handler() -> LambdaHandler:
    app = create_app(title="factory test")

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    @app.get("/teapot")
    def teapot() -> None:
        raise HTTPException(status_code=418, detail="I'm a teapot")

    @app.get("/users")
    def users(session: SessionDep) -> int:
        return len(session.exec(select(User)).all())

    return make_handler(app)


def greeting() -> str:
    return "hello"


def test_a_function_routers_routes_are_the_apps_own() -> None:
    """Served without `include_router` (which would build them again on the first
    request), they keep the app's operation ids and see its dependency overrides."""
    router = function_router(prefix="/greet", tags=["greet"])

    @router.get("/{name}")
    async def greet(name: str, word: Annotated[str, Depends(greeting)]) -> dict[str, str]:
        return {"text": f"{word} {name}"}

    app = create_app(title="routers test", database=False, routers=[router])
    handler = make_handler(app)
    assert invoke(handler, http_event("GET", "/greet/ada")).json() == {"text": "hello ada"}
    app.dependency_overrides[greeting] = lambda: "goodbye"
    assert invoke(handler, http_event("GET", "/greet/ada")).json() == {"text": "goodbye ada"}
    operation = app.openapi()["paths"]["/greet/{name}"]["get"]
    assert (operation["operationId"], operation["tags"]) == ("greet", ["greet"])
    with pytest.raises(TypeError, match="function_router"):
        create_app(title="plain router", database=False, routers=[APIRouter()])


def test_errors_use_the_contract_format(db: Database) -> None:
    handler = build_handler()
    response = invoke(handler, http_event("GET", "/boom"))
    assert (response.status, response.json()) == (500, {"detail": "Internal Server Error"})
    assert "secret internals" not in response.body
    response = invoke(handler, http_event("GET", "/teapot"))
    assert (response.status, response.json()) == (418, {"detail": "I'm a teapot"})
    response = invoke(handler, http_event("GET", "/nowhere"))
    assert (response.status, response.json()) == (404, {"detail": "Not Found"})


def test_one_json_log_line_per_request(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    handler = build_handler()
    capsys.readouterr()
    event = http_event("GET", "/users", query={"x": "1"})
    assert invoke(handler, event).status == 200
    invoke(handler, http_event("GET", "/teapot"))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    requests = [line for line in lines if line["message"] == "request"]
    assert len(requests) == 2
    # Nothing else: Mangum's own line per request ("GET /users 200") is quiet.
    assert lines == requests
    first, second = requests
    assert first["request_id"] == event["requestContext"]["requestId"]
    assert first["lambda_request_id"]
    assert (first["method"], first["path"], first["status"]) == ("GET", "/users", 200)
    assert isinstance(first["duration_ms"], float)
    assert first["cold_start"] is True
    assert (second["status"], second["cold_start"]) == (418, False)


def unreachable_database_answer(monkeypatch: pytest.MonkeyPatch) -> tuple[Response, float]:
    """A request to a database nothing listens for: the answer, and the seconds it took."""
    configure(
        monkeypatch,
        stage="test",
        database_url="postgresql+psycopg2://postgres@127.0.0.1:1/x",
        jwt_secret_key="k",
    )
    handler = build_handler()
    started = time.monotonic()
    response = invoke(handler, http_event("GET", "/users"))
    return response, time.monotonic() - started


@pytest.mark.perf
def test_unreachable_database_answers_within_5_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    assert unreachable_database_answer(monkeypatch)[1] < 5


def test_unreachable_database_answers_503(monkeypatch: pytest.MonkeyPatch) -> None:
    response, _ = unreachable_database_answer(monkeypatch)
    assert response.status == 503
    assert response.json() == {"detail": "The database is unavailable; try again shortly."}
    assert response.headers["retry-after"] == "5"


def test_cors_from_settings(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, cors_origins="https://app.example")
    handler = build_handler()
    preflight = http_event(
        "OPTIONS",
        "/users",
        headers={
            "origin": "https://app.example",
            "access-control-request-method": "GET",
            "access-control-request-headers": "authorization",
        },
    )
    response = invoke(handler, preflight)
    assert response.status == 200
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    other = invoke(handler, http_event("GET", "/users", headers={"origin": "https://evil.example"}))
    assert "access-control-allow-origin" not in other.headers


def test_handlers_run_from_worker_threads(db: Database) -> None:
    """The local server and concurrency tests call handlers from threads: each works."""
    from concurrent.futures import ThreadPoolExecutor

    handler = build_handler()
    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(
            pool.map(lambda _: invoke(handler, http_event("GET", "/users")).status, range(8))
        )
    assert statuses == [200] * 8


def test_a_handler_works_after_asyncio_run_in_the_same_thread(db: Database) -> None:
    """A script or test may run its own `asyncio.run()` between two invocations; when it
    ends it leaves the thread without a current loop, which Mangum asks for."""
    handler = build_handler()
    assert invoke(handler, http_event("GET", "/users")).status == 200
    asyncio.run(asyncio.sleep(0))
    assert invoke(handler, http_event("GET", "/users")).status == 200


def test_validation_errors_do_not_echo_the_input(db: Database) -> None:
    """A rejected value (a password that is too short, say) is not sent back to the client."""
    from pydantic import BaseModel, Field

    app = create_app(title="validation test")

    class Body(BaseModel):
        password: str = Field(min_length=8)

    @app.post("/secret")
    def secret(body: Body) -> None:
        raise AssertionError("unreachable")

    handler = make_handler(app)
    for raw in ('{"password": "hunter2"}', '{"password": "lone \\ud800"}'):
        event = http_event(
            "POST", "/secret", body=raw, headers={"content-type": "application/json"}
        )
        response = invoke(handler, event)
        assert response.status == 422
        [error] = response.json()["detail"]
        assert error["loc"] == ["body", "password"]
        assert "input" not in error
        assert "hunter2" not in response.body


def test_log_lines_carry_the_trace_header(
    db: Database, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With tracing on, Lambda sets `_X_AMZN_TRACE_ID` for each invocation; without it,
    API Gateway's `X-Amzn-Trace-Id` request header still ties the line to the request."""
    handler = build_handler()
    header = "Root=1-6745b9c0-0a1b2c3d4e5f6a7b8c9d0e07"
    lambdas = f"{header};Parent=53995c3f42cd8ad8;Sampled=1"
    monkeypatch.delenv("_X_AMZN_TRACE_ID", raising=False)
    capsys.readouterr()
    invoke(handler, http_event("GET", "/users", headers={"X-Amzn-Trace-Id": header}))
    monkeypatch.setenv("_X_AMZN_TRACE_ID", lambdas)
    invoke(handler, http_event("GET", "/users", headers={"X-Amzn-Trace-Id": header}))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    requests = [line for line in lines if line["message"] == "request"]
    assert [line["trace_id"] for line in requests] == [header, lambdas]
    # Every line of the invocation, not only the request line.
    assert all(line.get("trace_id") for line in lines if "lambda_request_id" in line)


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/plain; charset=utf-8"]
)
def test_a_json_body_sent_with_another_content_type_says_so(
    db: Database, content_type: str
) -> None:
    """`curl -d '{...}'` sends a form content type: the 422 names it, and the fix."""
    from tests.support.client import Client
    from tests.support.tasks import make_account

    account = make_account("curl@example.com")
    client = Client("tasks")
    body = json.dumps({"title": "From curl"})
    response = client.post(
        "/api/tasks", body=body, headers={"content-type": content_type}, token=account.token
    )
    assert response.status == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body"]
    assert "Content-Type: application/json" in error["msg"]
    assert content_type.split(";")[0] in error["msg"]
    assert error["ctx"] == {"content_type": content_type, "expected": "application/json"}
    # The same body with the JSON content type is accepted.
    sent_as_json = client.post(
        "/api/tasks", body=body, headers={"content-type": "application/json"}, token=account.token
    )
    assert sent_as_json.status == 201
    # Without any content type FastAPI reads JSON anyway; other 422s keep pydantic's words.
    wrong_field = client.post("/api/tasks", json_body={"title": 5}, token=account.token)
    assert wrong_field.status == 422
    assert "Content-Type" not in wrong_field.body
