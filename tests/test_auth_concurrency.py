"""Races on PostgreSQL: many containers (here threads, each calling the real handler)
signing up, refreshing or failing to log in at the same moment.

SQLite serialises writers, so these races cannot happen there; the tests run on
PostgreSQL only.
"""

from collections import Counter

import pytest

from tests.support.auth import (
    PASSWORD,
    auth_sessions,
    count,
    login,
    login_attempt,
    signup,
    tokens,
    user_row,
)
from tests.support.client import Client
from tests.support.concurrency import at_once
from tests.support.database import Database
from tests.support.environment import configure

pytestmark = pytest.mark.postgres_only


def test_simultaneous_signups_with_one_email_create_one_user(pg: Database) -> None:
    client = Client("auth")
    responses = at_once(20, lambda: signup(client, email="race@example.com"))
    statuses = Counter(response.status for response in responses)
    assert statuses == {201: 1, 409: 19}, [r.body for r in responses if r.status not in (201, 409)]
    for response in responses:
        if response.status == 409:
            assert response.json() == {"detail": "A user with this email already exists"}
    assert count(pg, "user") == 1
    assert count(pg, "auth_session") == 1
    (winner,) = (response for response in responses if response.status == 201)
    assert client.get("/api/auth/me", token=winner.json()["access_token"]).status == 200


def test_simultaneous_refreshes_of_one_token_let_exactly_one_through(pg: Database) -> None:
    client = Client("auth")
    signup(client)
    other_access, _ = tokens(login(client))
    access, refresh = tokens(login(client))
    responses = at_once(
        10, lambda: client.post("/api/auth/refresh", json_body={"refresh_token": refresh})
    )
    statuses = Counter(response.status for response in responses)
    assert statuses == {200: 1, 401: 9}, [r.body for r in responses]
    for response in responses:
        if response.status == 401:
            assert response.headers["www-authenticate"] == "Bearer"
    # The losers presented a token that had just been rotated: that is reuse, so the
    # session ends, the winner's new tokens included (docs/API.md, "Project choices").
    (winner,) = (response for response in responses if response.status == 200)
    assert client.get("/api/auth/me", token=winner.json()["access_token"]).status == 401
    assert client.get("/api/auth/me", token=access).status == 401
    sessions = auth_sessions(pg, user_row(pg, "ada@example.com").id)
    assert sum(row.revoked_at is not None for row in sessions.values()) == 1
    # The user's other sessions are untouched.
    assert client.get("/api/auth/me", token=other_access).status == 200


def test_simultaneous_failed_logins_are_all_counted(
    pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, login_max_attempts="50")
    client = Client("auth")
    signup(client)
    responses = at_once(12, lambda: login(client, password="wrong password"))
    assert {response.status for response in responses} == {401}
    attempt = login_attempt(pg, "ada@example.com")
    assert attempt is not None
    assert attempt.failed_count == 12
    assert login(client, password=PASSWORD).status == 200
    assert login_attempt(pg, "ada@example.com") is None
