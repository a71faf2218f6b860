"""The whole API through `python -m localapi` and template.yaml, over real HTTP, on SQLite
and PostgreSQL: the flow a client goes through, a parallel burst, and the same answers as
the handlers give when called directly."""

import json
import os
import subprocess
import sys
from typing import Any

import httpx

from tests.support.client import Client, with_example_email
from tests.support.database import Database
from tests.support.functions import ROOT
from tests.support.local_server import (
    a_parallel_burst_of_50,
    bearer,
    server_environment,
    signup_over_http,
    the_whole_flow,
)


def test_the_whole_flow_over_http(api: httpx.Client) -> None:
    the_whole_flow(api)


def test_a_parallel_burst_of_50_requests_has_no_errors(api: httpx.Client) -> None:
    a_parallel_burst_of_50(api)


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
        answers = (with_example_email(over_http.text), with_example_email(direct.body))
        assert json.loads(answers[0]) == json.loads(answers[1]), (method, path)
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
