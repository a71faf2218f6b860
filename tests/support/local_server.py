"""`python -m localapi` serving a template on a free port, for the tests that go through
real HTTP, and what they send it."""

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from localapi import server as localapi_server
from localapi.server import ServerStartError, free_port, running
from tests.support.auth import PASSWORD
from tests.support.database import Database
from tests.support.functions import ROOT
from tests.support.keys import JWT_KEY


def wait_until_serving(
    process: "subprocess.Popen[bytes]", url: str, log: Path, *, name: str, pause: float = 0.1
) -> None:
    """Until `url` answers at all; the test fails with the process's log if it exits first
    or does not answer within 90 s."""
    try:
        localapi_server.wait_until_serving(process, url, log, pause=pause)
    except ServerStartError as error:
        pytest.fail(f"{name}: {error}")


@contextmanager
def local_server(
    template: Path,
    *,
    env: dict[str, str | None] | None = None,
    cwd: Path | None = None,
    options: tuple[str, ...] = (),
) -> Iterator[tuple[httpx.Client, Path]]:
    """`python -m localapi` on a free port; yields a client for it and its log file.
    `env` adds variables to this process's environment (None removes one). The process
    is always stopped, and its log shown when it fails to start."""
    port = free_port()
    cwd = cwd or template.parent
    log = cwd / f"server-{port}.log"
    environment = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'shared'}"}
    for name, value in (env or {}).items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    command = [sys.executable, "-m", "localapi", "--template", str(template), "--port", str(port)]
    command += options
    base_url = f"http://127.0.0.1:{port}"
    try:
        server = running(command, ready_url=f"{base_url}/", log=log, env=environment, cwd=cwd)
        with server, httpx.Client(base_url=base_url, timeout=15) as client:
            yield client, log
    except ServerStartError as error:
        pytest.fail(f"The server: {error}")


def server_environment(database: Database) -> dict[str, str | None]:
    return {
        "STAGE": "local",
        "DATABASE_URL": database.url,
        "JWT_SECRET_KEY": JWT_KEY,
        "BCRYPT_ROUNDS": "4",
        "CORS_ORIGINS": "http://localhost:5173",
        "LOG_LEVEL": "WARNING",
        "DATABASE_SECRET_ARN": None,
        "JWT_SECRET_ARN": None,
    }


def signup_over_http(api: httpx.Client, email: str) -> dict[str, Any]:
    response = api.post(
        "/api/auth/signup", json={"email": email, "name": "Local", "password": PASSWORD}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class Gateway:
    """What the API's front answers by itself: a CORS preflight, and a path no route has."""

    preflight_status: int
    no_route: tuple[int, dict[str, str]]


# An HTTP API, as the local server emulates it.
HTTP_API = Gateway(preflight_status=204, no_route=(404, {"message": "Not Found"}))
# `sam local start-api` (SAM CLI 1.170) answers both as a REST API does.
SAM_LOCAL = Gateway(
    preflight_status=200, no_route=(403, {"message": "Missing Authentication Token"})
)


def the_whole_flow(api: httpx.Client, gateway: Gateway = HTTP_API) -> None:
    """What a client goes through, from sign-up to logout, and the health, docs, CORS and
    routing answers around it; the server's CORS_ORIGINS is http://localhost:5173."""
    signed_up = signup_over_http(api, "Flow@Example.com")
    assert signed_up["user"]["email"] == "flow@example.com"

    login = api.post("/api/auth/login", json={"email": "flow@example.com", "password": PASSWORD})
    assert login.status_code == 200
    tokens = login.json()
    auth = bearer(tokens["access_token"])
    assert api.get("/api/auth/me", headers=auth).json()["id"] == signed_up["user"]["id"]

    created = []
    for title, priority in [("Buy milk", "Low"), ("File taxes", "High"), ("Call mum", "High")]:
        response = api.post("/api/tasks", json={"title": title, "priority": priority}, headers=auth)
        assert response.status_code == 201
        assert response.headers["location"] == f"/api/tasks/{response.json()['id']}"
        created.append(response.json())

    listed = api.get(
        "/api/tasks", params={"priority": "High", "sort": "title", "limit": 10}, headers=auth
    )
    assert listed.status_code == 200
    page = listed.json()
    assert [task["title"] for task in page["items"]] == ["Call mum", "File taxes"]
    assert (page["total"], page["skip"], page["limit"]) == (2, 0, 10)
    assert api.get("/api/tasks", params={"q": "MILK"}, headers=auth).json()["total"] == 1
    assert api.get("/api/tasks", params={"limit": 0}, headers=auth).status_code == 422

    task_url = f"/api/tasks/{created[0]['id']}"
    fetched = api.get(task_url, headers=auth)
    etag = fetched.headers["etag"]
    updated = api.put(task_url, json={"status": "In Progress"}, headers={**auth, "If-Match": etag})
    assert updated.status_code == 200
    assert updated.json()["status"] == "In Progress"
    stale = api.put(task_url, json={"title": "Lost update"}, headers={**auth, "If-Match": etag})
    assert stale.status_code == 412
    assert api.get(task_url, headers=auth).json()["title"] == "Buy milk"

    completed = api.patch(f"{task_url}/complete", headers=auth)
    assert completed.status_code == 200
    assert completed.json()["status"] == "Completed"
    assert completed.json()["completed_at"] is not None

    assert api.delete(task_url, headers=auth).status_code == 204
    assert api.get(task_url, headers=auth).status_code == 404
    assert api.get("/api/tasks", headers=auth).json()["total"] == 2

    refreshed = api.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200
    new_tokens = refreshed.json()
    assert new_tokens["refresh_token"] != tokens["refresh_token"]
    new_auth = bearer(new_tokens["access_token"])
    logout = api.post(
        "/api/auth/logout", json={"refresh_token": new_tokens["refresh_token"]}, headers=new_auth
    )
    assert (logout.status_code, logout.json()) == (200, {"detail": "Logged out"})
    after = api.get("/api/tasks", headers=new_auth)
    assert after.status_code == 401
    assert after.headers["www-authenticate"] == "Bearer"

    health = api.get("/health/db")
    assert health.status_code == 200
    assert health.json()["database"] == "ok"
    assert health.json()["migrations"]["up_to_date"] is True
    docs = api.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/api/auth/signup", "/api/tasks", "/health"} <= set(paths)

    preflight = api.options(
        "/api/tasks",
        headers={"Origin": "http://localhost:5173", "Access-Control-Request-Method": "PUT"},
    )
    assert preflight.status_code == gateway.preflight_status
    assert "PUT" in preflight.headers["access-control-allow-methods"]
    # CORS_ORIGINS from the environment, not the template's "*".
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:5173"

    missing = api.get("/api/nothing-here")
    assert (missing.status_code, missing.json()) == gateway.no_route
    # Routes are per method, as in the template: /health is GET only.
    assert api.post("/health").status_code == gateway.no_route[0]


def a_parallel_burst_of_50(api: httpx.Client) -> None:
    """50 requests at once across the functions: every one answered as it should be, and
    every create stored."""
    auth = bearer(signup_over_http(api, "burst@example.com")["access_token"])

    def call(number: int) -> tuple[str, int]:
        kind = ("create", "list", "health", "me", "db")[number % 5]
        if kind == "create":
            response = api.post("/api/tasks", json={"title": f"Task {number}"}, headers=auth)
        elif kind == "list":
            response = api.get("/api/tasks", headers=auth)
        elif kind == "health":
            response = api.get("/health")
        elif kind == "me":
            response = api.get("/api/auth/me", headers=auth)
        else:
            response = api.get("/health/db")
        return kind, response.status_code

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(call, range(50)))
    expected = {"create": 201, "list": 200, "health": 200, "me": 200, "db": 200}
    assert [status for _, status in results] == [expected[kind] for kind, _ in results]
    titles = {
        task["title"] for task in api.get("/api/tasks?limit=100", headers=auth).json()["items"]
    }
    assert titles == {f"Task {number}" for number in range(0, 50, 5)}
