"""The security log (`GET /api/auth/events`) through the real auth handler on SQLite and
PostgreSQL: what it records, written in the same transaction as what it records, paged
newest first, and never a password, token or hash, in the table or in the logs."""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from taskapi.models import USER_AGENT_MAX_LENGTH
from tests.support.auth import (
    NEW_PASSWORD,
    PASSWORD,
    change_password,
    login,
    session_id,
    signup,
    tokens,
    user_row,
)
from tests.support.client import Client, Response
from tests.support.database import Database
from tests.support.smtp import Mailbox

EVENTS = "/api/auth/events"
REFRESH = "/api/auth/refresh"

pytestmark = pytest.mark.client("auth")


def events(client: Client, access: str, **query: int) -> Response:
    response = client.get(EVENTS, token=access, query=query or None)
    assert response.status == 200, response.body
    return response


def test_each_kind_of_event_with_its_device(client: Client, db: Database) -> None:
    agent = {"user-agent": "TaskApp/2.1 (iPhone; iOS 18.1)"}
    signed_up, _ = tokens(signup(client))
    assert login(client, password="wrong password", source_ip="10.1.2.3").status == 401
    access, refresh = tokens(
        client.post(
            "/api/auth/login",
            json_body={"email": "ada@example.com", "password": PASSWORD},
            headers=agent,
            source_ip="10.1.2.3",
        )
    )
    _, newer_refresh = tokens(client.post(REFRESH, json_body={"refresh_token": refresh}))
    # The old refresh token again: reuse, which ends that session.
    assert client.post(REFRESH, json_body={"refresh_token": refresh}).status == 401
    other, _ = tokens(login(client))
    assert change_password(client, other).status == 200
    assert client.delete(f"/api/auth/sessions/{session_id(signed_up)}", token=other).status in (
        204,
        404,
    )
    assert client.post("/api/auth/logout", token=other).status == 200
    latest, _ = tokens(login(client, password=NEW_PASSWORD))

    items = events(client, latest).json()["items"]

    assert [item["type"] for item in items] == [
        "login",
        "logout",
        "password_changed",
        "login",
        "refresh_token_reused",
        "login",
        "login_failed",
        "signup",
    ]
    by_type = {item["type"]: item for item in reversed(items)}
    assert set(items[0]) == {"id", "type", "created_at", "ip", "user_agent", "session_id"}
    assert by_type["signup"]["session_id"] == str(session_id(signed_up))
    assert by_type["login_failed"]["session_id"] is None
    # The User-Agent that localapi's events carry unless told otherwise.
    assert (by_type["login_failed"]["ip"], by_type["login_failed"]["user_agent"]) == (
        "10.1.2.3",
        "taskapi-local",
    )
    first_login = items[5]
    assert first_login["session_id"] == str(session_id(access))
    assert (first_login["ip"], first_login["user_agent"]) == ("10.1.2.3", agent["user-agent"])
    assert items[4]["session_id"] == str(session_id(access))
    assert items[2]["session_id"] == items[1]["session_id"] == str(session_id(other))
    assert newer_refresh  # rotated once before the reuse
    created = [item["created_at"] for item in items]
    assert created == sorted(created, reverse=True)


def test_revoking_a_session_is_logged(client: Client, db: Database) -> None:
    first, _ = tokens(signup(client))
    second, _ = tokens(login(client))
    assert client.delete(f"/api/auth/sessions/{session_id(first)}", token=second).status == 204
    (newest, *_) = events(client, second).json()["items"]
    assert (newest["type"], newest["session_id"]) == ("session_revoked", str(session_id(first)))


def test_pages_newest_first_and_only_the_callers(client: Client, db: Database) -> None:
    access, _ = tokens(signup(client))
    for _ in range(4):
        tokens(login(client))
    tokens(signup(client, email="bob@example.com"))
    tokens(login(client, email="bob@example.com"))

    whole = events(client, access).json()
    assert (whole["total"], whole["skip"], whole["limit"]) == (5, 0, 20)
    page = events(client, access, skip=1, limit=2).json()
    assert (page["total"], page["skip"], page["limit"]) == (5, 1, 2)
    assert page["items"] == whole["items"][1:3]
    assert [item["type"] for item in whole["items"]] == ["login"] * 4 + ["signup"]
    for query in ({"limit": 0}, {"limit": 101}, {"skip": -1}):
        assert client.get(EVENTS, token=access, query=query).status == 422
    assert client.get(EVENTS).status == 401


def test_a_long_user_agent_is_cut_and_nul_dropped(client: Client, db: Database) -> None:
    agent = "Agent\x00" + "x" * 1000
    response = client.post(
        "/api/auth/signup",
        json_body={"email": "ada@example.com", "name": "Ada", "password": PASSWORD},
        headers={"user-agent": agent},
    )
    access, _ = tokens(response)
    (item,) = events(client, access).json()["items"]
    assert item["user_agent"] == ("Agent" + "x" * 1000)[:USER_AGENT_MAX_LENGTH]
    (listed,) = client.get("/api/auth/sessions", token=access).json()["items"]
    assert listed["user_agent"] == item["user_agent"]


@contextmanager
def sessions_refused(db: Database) -> Iterator[None]:
    """A trigger that makes every INSERT of a session fail: the login's commit never happens."""
    if db.backend != "sqlite":  # PostgreSQL, directly or through PgBouncer
        create = [
            "CREATE FUNCTION refuse_session() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'no sessions today'; END $$",
            "CREATE TRIGGER refuse_session BEFORE INSERT ON auth_session"
            " FOR EACH ROW EXECUTE FUNCTION refuse_session()",
        ]
        drop = ["DROP TRIGGER refuse_session ON auth_session", "DROP FUNCTION refuse_session()"]
    else:
        create = [
            "CREATE TRIGGER refuse_session BEFORE INSERT ON auth_session"
            " BEGIN SELECT RAISE(ABORT, 'no sessions today'); END"
        ]
        drop = ["DROP TRIGGER refuse_session"]
    with db.engine.begin() as connection:
        for statement in create:
            connection.execute(sa.text(statement))
    try:
        yield
    finally:
        with db.engine.begin() as connection:
            for statement in drop:
                connection.execute(sa.text(statement))


def test_a_login_that_did_not_commit_leaves_no_event(client: Client, db: Database) -> None:
    tokens(signup(client))
    user_id = user_row(db, "ada@example.com").id
    before = db.scalar("SELECT count(*) FROM security_event")

    with sessions_refused(db):
        response = login(client)

    assert response.status >= 400, response.body
    assert db.scalar("SELECT count(*) FROM security_event") == before == 1
    assert db.scalar("SELECT count(*) FROM auth_session") == 1
    assert user_id


def test_no_password_token_or_hash_in_the_log_or_the_table(
    client: Client,
    db: Database,
    mailbox: Mailbox,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secrets: list[str] = [PASSWORD, NEW_PASSWORD, "wrong password", "a reset password"]
    access, refresh = tokens(signup(client))
    secrets += [access, refresh]
    login(client, password="wrong password")
    access, refresh = tokens(login(client))
    secrets += [access, refresh]
    _, rotated = tokens(client.post(REFRESH, json_body={"refresh_token": refresh}))
    client.post(REFRESH, json_body={"refresh_token": refresh})
    secrets.append(rotated)
    access, refresh = tokens(login(client))
    change_password(client, access)
    client.post("/api/auth/password-reset", json_body={"email": "ada@example.com"})
    reset_token = mailbox.last_token("ada@example.com")
    client.post(
        "/api/auth/password-reset/confirm",
        json_body={"token": reset_token, "new_password": "a reset password"},
    )
    access, refresh = tokens(login(client, password="a reset password"))
    client.post(
        "/api/auth/email",
        json_body={"password": "a reset password", "new_email": "ada2@example.com"},
        token=access,
    )
    email_token = mailbox.last_token("ada2@example.com")
    client.post("/api/auth/email/confirm", json_body={"token": email_token})
    client.post("/api/auth/logout", token=access)
    secrets += [access, refresh, reset_token, email_token]
    user = user_row(db, "ada2@example.com")
    # The JWTs' signatures alone, too (before the hash joins the list: bcrypt's alphabet
    # has '.', and a hash with two of them, one last, would add an empty "signature").
    secrets += [token.rsplit(".", 1)[-1] for token in secrets if token.count(".") == 2]
    # The bcrypt salt and digest alone, too.
    secrets += [user.hashed_password, user.hashed_password[7:]]
    assert all(secrets)

    with db.engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT * FROM security_event")).all()
    assert len(rows) >= 10
    table = "\n".join(" ".join(str(value) for value in row) for row in rows)
    logs = capsys.readouterr().out + caplog.text
    assert "email_changed" in table
    assert "logged in" in logs
    for secret in secrets:
        assert secret not in table, secret
        assert secret not in logs, secret
    assert all(uuid.UUID(str(row.id)) for row in rows)
