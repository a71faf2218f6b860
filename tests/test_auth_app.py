"""The auth function as a whole: what it logs, how many SQL statements each call costs,
and what its OpenAPI description promises."""

import io
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from taskapi.db import get_engine
from taskapi.logs import JsonFormatter
from tests.support.auth import PASSWORD, login, signup, tokens, user_row
from tests.support.client import Client
from tests.support.database import Database
from tests.support.environment import configure
from tests.support.functions import load_function

ME = "/api/auth/me"


# The `client` fixture's requests go to the auth function.
pytestmark = pytest.mark.client("auth")


# ---------------------------------------------------------------------------------------
# Logs


@contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Every record that reaches the root logger, formatted as the functions write them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)


def test_logs_hold_no_password_hash_or_token(
    db: Database, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    configure(monkeypatch, log_level="DEBUG", login_max_attempts="2")
    client = Client("auth")
    secrets: list[str] = [PASSWORD, "wrong password 1", "wrong password 2"]
    with captured_logs() as logs:
        signed_up = signup(client)
        login(client, password=secrets[1])
        logged_in = login(client)
        refreshed = client.post(
            "/api/auth/refresh", json_body={"refresh_token": logged_in.json()["refresh_token"]}
        )
        reused = client.post(
            "/api/auth/refresh", json_body={"refresh_token": logged_in.json()["refresh_token"]}
        )
        access, _ = tokens(login(client))
        client.get(ME, token=access)
        client.post("/api/auth/logout", token=access, json_body={"refresh_token": "x.y.z"})
        client.post("/api/auth/logout", token=access)
        login(client, email="nobody@example.com", password=secrets[2])
        login(client, email="nobody@example.com", password=secrets[2])
        locked = login(client, email="nobody@example.com", password=secrets[2])
    assert (signed_up.status, refreshed.status, reused.status, locked.status) == (
        201,
        200,
        401,
        429,
    )
    for response in (signed_up, logged_in, refreshed):
        secrets += [response.json()["access_token"], response.json()["refresh_token"]]
    secrets.append(access)
    secrets.append(user_row(db, "ada@example.com").hashed_password)

    output = logs.getvalue() + "".join(capfd.readouterr())
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    messages = {line["message"] for line in lines}
    # The flow was logged (so the check below looks at something)...
    assert {"signed up", "logged in", "login failed", "refresh refused", "logged out"} <= messages
    assert any(line.get("reason") == "TOKEN_REUSED" for line in lines)
    # ... and nothing secret was.
    for secret in secrets:
        assert secret not in output
        # No token payload or signature either (a bcrypt hash may hold dots too; a short
        # fragment of it would match by chance).
        for part in secret.split(".")[1:]:
            if len(part) >= 16:
                assert part not in output
    assert not re.search(r"\$2[aby]\$\d\d\$", output), "a bcrypt hash was logged"
    assert "eyJ" not in output, "something that looks like a JWT was logged"


# ---------------------------------------------------------------------------------------
# SQL per request


@contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL statements the app's engine runs inside the block."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(" ".join(str(args[2]).split()))

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def verbs(seen: list[str]) -> list[str]:
    return [f"{sql.split()[0]} {table}" for sql in seen for table in _tables(sql)]


def _tables(sql: str) -> list[str]:
    match = re.match(r"(?:SELECT .*? FROM|INSERT INTO|UPDATE|DELETE FROM) \(?\"?(\w+)", sql)
    return [match.group(1) if match else sql]


def test_sql_statements_per_call(client: Client, db: Database) -> None:
    signup(client)  # warms the connection
    with statements() as seen:
        access, refresh = tokens(login(client))
    # The attempt is reserved (one upsert of both counters, committed before bcrypt), the
    # user looked up; then the user row is locked if its hash is still the one checked,
    # the right password takes the reservation back, and `last_login_at`, the session
    # (only while the hash is still the user's) and the device, with
    # the login's security event, are written in the same transaction.
    assert len(seen) == 9, seen
    assert verbs(seen[:3]) == ["INSERT login_attempt", "SELECT user", "SELECT user"]
    assert sorted(verbs(seen[3:])) == [
        "DELETE login_attempt",
        "INSERT auth_session",
        "INSERT login_device",
        "INSERT security_event",
        "UPDATE login_attempt",
        "UPDATE user",
    ]

    with statements() as seen:
        assert client.get(ME, token=access).status == 200
    assert len(seen) == 1, seen  # the user and its session in one query

    with statements() as seen:
        tokens(client.post("/api/auth/refresh", json_body={"refresh_token": refresh}))
    assert verbs(seen) == ["UPDATE auth_session"]

    with statements() as seen:
        assert login(client, password="wrong password").status == 401
    # The reservation is the count; the known user's log gets the failure.
    assert verbs(seen) == ["INSERT login_attempt", "SELECT user", "INSERT security_event"], seen


# ---------------------------------------------------------------------------------------
# OpenAPI


def test_openapi_declares_the_real_statuses() -> None:
    document = load_function("auth").app.openapi()
    paths = document["paths"]
    expected = {
        ("/api/auth/signup", "post"): {"201", "409", "422", "503"},
        ("/api/auth/login", "post"): {"200", "401", "403", "422", "429", "503"},
        ("/api/auth/refresh", "post"): {"200", "401", "422", "503"},
        ("/api/auth/logout", "post"): {"200", "401", "422", "503"},
        ("/api/auth/me", "get"): {"200", "401", "503"},
        ("/api/auth/password", "post"): {"200", "401", "403", "422", "429", "503"},
        ("/api/auth/sessions", "get"): {"200", "401", "503"},
        ("/api/auth/sessions/{session_id}", "delete"): {"204", "401", "404", "422", "503"},
        ("/api/auth/me", "delete"): {"204", "401", "403", "422", "429", "503"},
        ("/api/auth/me", "patch"): {"200", "401", "422", "503"},
        ("/api/auth/password-reset", "post"): {"202", "422", "429", "503"},
        ("/api/auth/password-reset/confirm", "post"): {"200", "401", "422", "503"},
        ("/api/auth/email", "post"): {"202", "401", "403", "409", "422", "429", "503"},
        ("/api/auth/email/confirm", "post"): {"200", "401", "409", "422", "503"},
        ("/api/auth/events", "get"): {"200", "401", "422", "503"},
    }
    assert {path for path, _ in expected} == set(paths)
    for (path, method), statuses in expected.items():
        responses = paths[path][method]["responses"]
        assert set(responses) == statuses, path
        for status in statuses - {"200", "201", "202", "204", "422"}:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Detail"}
    assert document["components"]["schemas"]["Detail"]["required"] == ["detail"]
    login_429 = paths["/api/auth/login"]["post"]["responses"]["429"]
    assert "Retry-After" in login_429["headers"]
    for path, method in (("/api/auth/password", "post"), ("/api/auth/me", "delete")):
        assert "Retry-After" in paths[path][method]["responses"]["429"]["headers"]
        assert paths[path][method]["security"] == [{"HTTPBearer": []}]
    assert paths["/api/auth/me"]["get"]["security"] == [{"HTTPBearer": []}]
    assert paths["/api/auth/logout"]["post"]["security"] == [{"HTTPBearer": []}]
    user = document["components"]["schemas"]["UserPublic"]["properties"]
    assert "hashed_password" not in user
    assert "password" not in user
