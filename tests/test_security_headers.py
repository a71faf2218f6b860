"""Headers every function sets in the app factory (`X-Content-Type-Options: nosniff`
everywhere, `Cache-Control: no-store` on token responses and authenticated requests), and
422 `json_invalid` for every body the JSON parser cannot read."""

import pytest

from localapi.events import http_event
from taskapi.factory import create_app, make_handler
from tests.support.auth import login, signup, tokens
from tests.support.client import Client, Response, invoke
from tests.support.database import Database

OVERLONG_INTEGER = '{"title": "x", "priority": ' + "9" * 5000 + "}"


def assert_nosniff(response: Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff", response.headers


def assert_no_store(response: Response) -> None:
    assert_nosniff(response)
    assert response.headers["cache-control"] == "no-store", response.headers


def test_token_responses_and_authenticated_answers_are_never_stored(db: Database) -> None:
    auth, tasks = Client("auth"), Client("tasks")
    created = signup(auth)
    assert created.status == 201
    assert_no_store(created)
    logged_in = login(auth)
    assert_no_store(logged_in)
    access, refresh = tokens(logged_in)
    refreshed = auth.post("/api/auth/refresh", json_body={"refresh_token": refresh})
    assert refreshed.status == 200
    assert_no_store(refreshed)
    access, _ = tokens(refreshed)
    for response in (
        auth.get("/api/auth/me", token=access),
        tasks.get("/api/tasks", token=access),
        tasks.post("/api/tasks", json_body={"title": "t"}, token=access),
        tasks.get("/api/tasks/999999", token=access),
        # A refused token is still an authenticated request.
        tasks.get("/api/tasks", token="not-a-token"),
        auth.post("/api/auth/logout", token=access),
    ):
        assert response.status in (200, 201, 401, 404), response.body
        assert_no_store(response)
    # The auth function's failures too (they may answer a login).
    assert_no_store(login(auth, password="wrong password"))


def test_every_response_has_nosniff(db: Database) -> None:
    health, tasks = Client("health"), Client("tasks")
    public = health.get("/health")
    assert public.status == 200
    assert_nosniff(public)
    # Nothing private in it: caches may keep it.
    assert public.headers.get("cache-control") != "no-store"
    for response in (
        tasks.get("/api/tasks"),
        tasks.get("/api/nowhere"),
        health.get("/openapi.json"),
    ):
        assert_nosniff(response)


@pytest.mark.parametrize(
    ("domain", "path"), [("tasks", "/api/tasks"), ("auth", "/api/auth/signup")]
)
def test_an_integer_too_long_for_the_parser_is_422_json_invalid(
    db: Database, domain: str, path: str
) -> None:
    client = Client(domain)
    headers = {"content-type": "application/json"}
    if domain == "tasks":
        access, _ = tokens(signup(Client("auth")))
        headers["authorization"] = f"Bearer {access}"
    response = client.post(path, body=OVERLONG_INTEGER, headers=headers)
    assert response.status == 422, response.body
    (error,) = response.json()["detail"]
    assert error["type"] == "json_invalid"
    assert "4300 digits" in error["ctx"]["error"]
    assert_nosniff(response)


def test_an_unhandled_error_carries_the_headers_too(db: Database) -> None:
    app = create_app(title="headers test")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("internals")

    response = invoke(make_handler(app), http_event("GET", "/boom"))
    assert response.status == 500
    assert_no_store(response)
