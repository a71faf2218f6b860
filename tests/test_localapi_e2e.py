"""The whole API through `python -m localapi` and template.yaml, over real HTTP, on SQLite
and PostgreSQL: the flow a client goes through, a parallel burst, and the same answers as
the handlers give when called directly."""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.support.auth import PASSWORD
from tests.support.client import Client
from tests.support.database import Database
from tests.support.functions import ROOT
from tests.support.local_server import bearer, server_environment, signup_over_http


def test_the_whole_flow_over_http(api: httpx.Client) -> None:
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
    assert preflight.status_code == 204
    assert "PUT" in preflight.headers["access-control-allow-methods"]
    # CORS_ORIGINS from the environment, not the template's "*".
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:5173"

    missing = api.get("/api/nothing-here")
    assert (missing.status_code, missing.json()) == (404, {"message": "Not Found"})
    # Routes are per method, as in the template: /health is GET only.
    assert api.post("/health").status_code == 404


def test_a_parallel_burst_of_50_requests_has_no_errors(api: httpx.Client) -> None:
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


def test_the_server_answers_as_the_handlers_do(api: httpx.Client, db: Database) -> None:
    """Each request goes both to the server and straight to the function's handler."""
    tokens = signup_over_http(api, "same@example.com")
    auth = {"authorization": f"Bearer {tokens['access_token']}"}
    task = api.post("/api/tasks", json={"title": "Same", "description": "both"}, headers=auth)
    task_id = task.json()["id"]
    other = signup_over_http(api, "other@example.com")
    other_task = api.post(
        "/api/tasks", json={"title": "Theirs"}, headers=bearer(other["access_token"])
    ).json()["id"]

    requests: list[tuple[str, str, str, dict[str, Any]]] = [
        ("tasks", "GET", f"/api/tasks/{task_id}", {"headers": auth}),
        ("tasks", "GET", "/api/tasks", {"headers": auth, "query": "status=Pending&sort=-title"}),
        ("tasks", "GET", "/api/tasks", {"headers": auth, "query": "sort=nonsense"}),
        ("tasks", "GET", "/api/tasks/999999", {"headers": auth}),
        ("tasks", "GET", f"/api/tasks/{other_task}", {"headers": auth}),
        ("tasks", "GET", "/api/tasks/abc", {"headers": auth}),
        ("tasks", "GET", "/api/tasks", {}),
        ("tasks", "POST", "/api/tasks", {"headers": auth, "json": {"title": " "}}),
        ("tasks", "POST", "/api/tasks", {"headers": auth, "json": {"title": "x", "owner": 1}}),
        (
            "tasks",
            "PUT",
            f"/api/tasks/{task_id}",
            {"headers": {**auth, "if-match": '"stale"'}, "json": {"title": "No"}},
        ),
        ("auth", "GET", "/api/auth/me", {"headers": auth}),
        ("auth", "POST", "/api/auth/login", {"json": {"email": "same@example.com"}}),
        (
            "auth",
            "POST",
            "/api/auth/login",
            {"json": {"email": "nobody@example.com", "password": "wrong password"}},
        ),
        ("auth", "POST", "/api/auth/refresh", {"json": {"refresh_token": "not.a.token"}}),
        ("health", "GET", "/health/nothing", {}),
        ("health", "GET", "/openapi.json", {}),
    ]
    for domain, method, path, options in requests:
        headers = dict(options.get("headers", {}))
        body = None
        if "json" in options:
            body = json.dumps(options["json"])
            headers["content-type"] = "application/json"
        query = options.get("query", "")
        over_http = api.request(
            method, f"{path}?{query}" if query else path, content=body, headers=headers
        )
        direct = Client(domain).request(method, path, body=body, headers=headers, query=query)
        assert over_http.status_code == direct.status, (method, path)
        assert over_http.json() == direct.json(), (method, path)
        assert over_http.headers.get("etag") == direct.headers.get("etag"), (method, path)


def test_invoke_runs_the_scheduled_health_check(migrated_database: Database) -> None:
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name, value in server_environment(migrated_database).items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "localapi",
            "invoke",
            "HealthFunction",
            "events/schedule-health.json",
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # stdout is the result alone; the function's log lines (its metrics too) go to stderr.
    summary = json.loads(result.stdout)
    assert summary["status"] == "ok"
    assert summary["database"] == "ok"
