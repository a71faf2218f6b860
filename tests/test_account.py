"""The account routes of the auth function (password change, sessions, account deletion),
through the real Lambda handlers on SQLite and PostgreSQL, with the rows behind them."""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlmodel import SQLModel, col

from taskapi.db import get_engine
from taskapi.models import AuthSession, utcnow
from taskapi.tokens import decode_token
from tests.support.auth import (
    ME,
    NEW_PASSWORD,
    PASSWORD,
    PASSWORD_PATH,
    assert_unauthorized,
    auth_sessions,
    change_password,
    delete_account,
    login,
    login_attempt,
    parse_time,
    rows,
    session_id,
    signup,
    tokens,
    user_row,
)
from tests.support.client import Client, Response
from tests.support.database import Database, rows_naming
from tests.support.environment import configure
from tests.support.functions import template

REFRESH = "/api/auth/refresh"
SESSIONS = "/api/auth/sessions"
# A session id in test parameters: fixed, as pytest-xdist's workers must collect the same ids.
SOME_SESSION_ID = "0c0ffee0-0000-4000-8000-000000000000"


# The `client` fixture's requests go to the auth function.
pytestmark = pytest.mark.client("auth")


def refresh(client: Client, refresh_token: str) -> Response:
    return client.post(REFRESH, json_body={"refresh_token": refresh_token})


def lock_out(client: Client, email: str = "ada@example.com") -> None:
    """Fail LOGIN_MAX_ATTEMPTS (5) logins, which locks the email out."""
    for _ in range(5):
        assert login(client, email=email, password="wrong password").status == 401
    assert login(client, email=email).status == 429


# ---------------------------------------------------------------------------------------
# POST /api/auth/password


def test_password_change_keeps_this_session_and_ends_the_others(
    client: Client, db: Database
) -> None:
    other_access, other_refresh = tokens(signup(client))
    third_access, third_refresh = tokens(login(client))
    access, refresh_token = tokens(login(client))
    old_hash = user_row(db, "ada@example.com").hashed_password

    response = change_password(client, access)

    assert (response.status, response.json()) == (200, {"detail": "Password changed"})
    assert response.headers["content-type"] == "application/json"
    row = user_row(db, "ada@example.com")
    assert row.hashed_password != old_hash
    assert row.hashed_password.startswith("$2b$04$")  # the configured cost (BCRYPT_ROUNDS=4)
    for stolen_access, stolen_refresh in (
        (other_access, other_refresh),
        (third_access, third_refresh),
    ):
        assert_unauthorized(client.get(ME, token=stolen_access))
        assert_unauthorized(refresh(client, stolen_refresh))
    # The caller's session goes on: its access token, and its refresh token once.
    assert client.get(ME, token=access).status == 200
    new_access, _ = tokens(refresh(client, refresh_token))
    assert client.get(ME, token=new_access).status == 200
    sessions = auth_sessions(db, row.id)
    assert [s.id for s in sessions.values() if s.revoked_at is None] == [session_id(access)]
    # The new password logs in; the old one no longer does.
    assert login(client, password=NEW_PASSWORD).status == 200
    assert login(client, password=PASSWORD).status == 401


def test_password_change_hashes_at_the_configured_cost(
    client: Client, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    access, _ = tokens(signup(client))
    configure(monkeypatch, bcrypt_rounds="5")
    assert change_password(client, access).status == 200
    assert user_row(db, "ada@example.com").hashed_password.startswith("$2b$05$")


def test_the_same_password_may_be_set_again(client: Client, db: Database) -> None:
    other_access, _ = tokens(signup(client))
    access, _ = tokens(login(client))
    response = change_password(client, access, new=PASSWORD)
    assert response.status == 200
    # Still a change: the other sessions end all the same.
    assert_unauthorized(client.get(ME, token=other_access))
    assert login(client, password=PASSWORD).status == 200


def test_a_wrong_current_password_is_403_and_counts_as_a_failed_login(
    client: Client, db: Database
) -> None:
    other_access, _ = tokens(signup(client))
    access, _ = tokens(login(client))
    old_hash = user_row(db, "ada@example.com").hashed_password

    response = change_password(client, access, current="not my password")

    assert (response.status, response.json()) == (403, {"detail": "The password is wrong"})
    assert user_row(db, "ada@example.com").hashed_password == old_hash
    assert client.get(ME, token=other_access).status == 200
    attempt = login_attempt(db, "ada@example.com")
    assert attempt is not None
    assert attempt.failed_count == 1


def test_wrong_current_passwords_lock_the_email_out(client: Client, db: Database) -> None:
    access, _ = tokens(signup(client))
    for _ in range(5):
        assert change_password(client, access, current="not my password").status == 403
    # As at login: locked out, even with the right password, with Retry-After.
    response = change_password(client, access)
    assert response.status == 429
    assert 0 < int(response.headers["retry-after"]) <= 15 * 60
    assert login(client).status == 429


def test_a_locked_out_email_cannot_change_its_password(client: Client, db: Database) -> None:
    access, _ = tokens(signup(client))
    old_hash = user_row(db, "ada@example.com").hashed_password
    lock_out(client)
    response = change_password(client, access)
    assert response.status == 429
    assert response.json() == {"detail": "Too many failed login attempts; try again later"}
    assert int(response.headers["retry-after"]) > 0
    assert user_row(db, "ada@example.com").hashed_password == old_hash


# The sign-up rules, on the same passwords as test_auth's sign-up cases.
REFUSED_PASSWORDS = {
    "under-8": "1234567",
    "over-72-bytes": "p" * 73,
    "over-72-bytes-multibyte": "é" * 37,
    "nul": "pass\x00word",
    # Common passwords, in any letter case (the 10,000th of the list too).
    "common": "SunShine",
    "common-list-10000": "DESMOND1",
}


@pytest.mark.parametrize("password", REFUSED_PASSWORDS.values(), ids=REFUSED_PASSWORDS.keys())
def test_the_new_password_follows_the_signup_rules(
    client: Client, db: Database, password: str
) -> None:
    access, _ = tokens(signup(client))
    old_hash = user_row(db, "ada@example.com").hashed_password
    response = change_password(client, access, new=password)
    assert response.status == 422, response.body
    assert [error["loc"] for error in response.json()["detail"]] == [["body", "new_password"]]
    assert password not in response.body
    assert user_row(db, "ada@example.com").hashed_password == old_hash
    # The same password is refused at sign-up, for the same reason.
    refused = signup(client, email="bob@example.com", password=password)
    assert refused.status == 422
    assert [e["msg"] for e in refused.json()["detail"]] == [
        e["msg"] for e in response.json()["detail"]
    ]


def test_a_common_password_is_refused_with_a_detail_that_says_so(
    client: Client, db: Database
) -> None:
    access, _ = tokens(signup(client))
    response = change_password(client, access, new="Iloveyou")
    assert response.status == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "new_password"]
    assert "most commonly used passwords" in error["msg"]
    # An uncommon password of the same shape is fine.
    assert change_password(client, access, new="Iloveyou, Quokka").status == 200


def test_the_common_password_list_holds_at_least_the_10000_most_common() -> None:
    from taskapi.rules import common_passwords

    listed = common_passwords()
    assert len(listed) >= 10_000
    assert {"password", "12345678", "qwertyuiop", "iloveyou"} <= listed
    assert all(entry == entry.lower() for entry in listed)


@pytest.mark.parametrize(
    "body",
    [
        {"new_password": NEW_PASSWORD},
        {"current_password": PASSWORD},
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD, "extra": 1},
        {"current_password": "p" * 73, "new_password": NEW_PASSWORD},
        {"current_password": 12345678, "new_password": NEW_PASSWORD},
    ],
    ids=["no-current", "no-new", "unknown-field", "current-over-72-bytes", "current-not-a-string"],
)
def test_password_change_rejects_invalid_bodies(
    client: Client, db: Database, body: dict[str, Any]
) -> None:
    access, _ = tokens(signup(client))
    response = client.post(PASSWORD_PATH, json_body=body, token=access)
    assert response.status == 422, response.body
    assert login_attempt(db, "ada@example.com") is None


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", PASSWORD_PATH, {"current_password": PASSWORD, "new_password": NEW_PASSWORD}),
        ("GET", SESSIONS, None),
        ("DELETE", f"{SESSIONS}/{SOME_SESSION_ID}", None),
        ("DELETE", ME, {"password": PASSWORD}),
    ],
    ids=["password", "sessions", "revoke", "delete"],
)
def test_the_account_routes_need_a_live_access_token(
    client: Client, db: Database, method: str, path: str, body: Any
) -> None:
    access, refresh_token = tokens(signup(client))
    assert_unauthorized(client.request(method, path, json_body=body))
    assert_unauthorized(client.request(method, path, json_body=body, token=refresh_token))
    assert client.post("/api/auth/logout", token=access).status == 200
    assert_unauthorized(client.request(method, path, json_body=body, token=access))
    assert user_row(db, "ada@example.com").hashed_password is not None
    assert login(client).status == 200


# ---------------------------------------------------------------------------------------
# GET /api/auth/sessions


def test_sessions_after_two_logins_a_refresh_and_a_logout(client: Client, db: Database) -> None:
    signup_access, _ = tokens(signup(client))
    first_access, first_refresh = tokens(login(client))
    second_access, _ = tokens(login(client))
    refreshed = refresh(client, first_refresh).json()
    assert client.post("/api/auth/logout", token=second_access).status == 200
    # Someone else's sessions never show.
    tokens(signup(client, email="bob@example.com"))

    response = client.get(SESSIONS, token=refreshed["access_token"])

    assert response.status == 200, response.body
    items = response.json()["items"]
    assert [item["id"] for item in items] == [
        str(session_id(first_access)),
        str(session_id(signup_access)),
    ]
    assert [item["current"] for item in items] == [True, False]
    assert all(
        set(item)
        == {"id", "created_at", "expires_at", "current", "ip", "user_agent", "last_used_at"}
        for item in items
    )
    rows_by_id = auth_sessions(db, user_row(db, "ada@example.com").id)
    for item in items:
        row = rows_by_id[uuid.UUID(item["id"])]
        assert parse_time(item["created_at"]) == row.created_at
        assert parse_time(item["expires_at"]) == row.expires_at
        assert parse_time(item["last_used_at"]) == row.last_used_at
        assert item["ip"] == "127.0.0.1"
    # The refresh extended its session to the new refresh token's expiry.
    new_refresh = decode_token(refreshed["refresh_token"], expected_type="refresh")
    assert parse_time(items[0]["expires_at"]) == new_refresh.expires_at
    # ... and its `last_used_at` is the refresh's; the sign-up's session was never used again.
    assert parse_time(items[0]["last_used_at"]) > parse_time(items[0]["created_at"])
    assert items[1]["last_used_at"] == items[1]["created_at"]
    # The list from another session marks that one as current.
    other_view = client.get(SESSIONS, token=signup_access).json()["items"]
    assert [item["current"] for item in other_view] == [False, True]


def test_expired_sessions_are_not_listed(client: Client, db: Database) -> None:
    old_access, _ = tokens(signup(client))
    access, _ = tokens(login(client))
    with rows(db) as session:
        session.exec(
            sa.update(AuthSession)
            .where(col(AuthSession.id) == session_id(old_access))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    items = client.get(SESSIONS, token=access).json()["items"]
    assert [item["id"] for item in items] == [str(session_id(access))]


# ---------------------------------------------------------------------------------------
# DELETE /api/auth/sessions/{session_id}


def test_revoking_a_session_ends_its_tokens_at_once(client: Client, db: Database) -> None:
    other_access, other_refresh = tokens(signup(client))
    access, refresh_token = tokens(login(client))

    response = client.delete(f"{SESSIONS}/{session_id(other_access)}", token=access)

    assert (response.status, response.body) == (204, "")
    assert_unauthorized(client.get(ME, token=other_access))
    assert_unauthorized(refresh(client, other_refresh))
    assert client.get(ME, token=access).status == 200
    listed = client.get(SESSIONS, token=access).json()["items"]
    assert [item["id"] for item in listed] == [str(session_id(access))]
    # Already revoked: 404.
    again = client.delete(f"{SESSIONS}/{session_id(other_access)}", token=access)
    assert (again.status, again.json()) == (404, {"detail": "Session not found"})
    assert tokens(refresh(client, refresh_token))


def test_revoking_the_current_session_is_a_logout(client: Client, db: Database) -> None:
    other_access, _ = tokens(signup(client))
    access, refresh_token = tokens(login(client))
    assert client.delete(f"{SESSIONS}/{session_id(access)}", token=access).status == 204
    assert_unauthorized(client.get(ME, token=access))
    assert_unauthorized(refresh(client, refresh_token))
    assert client.get(ME, token=other_access).status == 200


def test_another_users_session_is_404_and_stays_live(client: Client, db: Database) -> None:
    bob_access, bob_refresh = tokens(signup(client, email="bob@example.com"))
    access, _ = tokens(signup(client))
    bob_session = session_id(bob_access)

    response = client.delete(f"{SESSIONS}/{bob_session}", token=access)

    assert (response.status, response.json()) == (404, {"detail": "Session not found"})
    unknown = client.delete(f"{SESSIONS}/{uuid.uuid4()}", token=access)
    assert (unknown.status, unknown.json()) == (404, {"detail": "Session not found"})
    assert auth_sessions(db, user_row(db, "bob@example.com").id)[bob_session].revoked_at is None
    assert client.get(ME, token=bob_access).status == 200
    assert tokens(refresh(client, bob_refresh))


def test_an_expired_session_is_404(client: Client, db: Database) -> None:
    old_access, _ = tokens(signup(client))
    access, _ = tokens(login(client))
    with rows(db) as session:
        session.exec(
            sa.update(AuthSession)
            .where(col(AuthSession.id) == session_id(old_access))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    assert client.delete(f"{SESSIONS}/{session_id(old_access)}", token=access).status == 404


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "1", "%00"])
def test_a_malformed_session_id_is_422(client: Client, db: Database, bad_id: str) -> None:
    access, _ = tokens(signup(client))
    response = client.delete(f"{SESSIONS}/{bad_id}", token=access)
    assert response.status == 422, response.body
    assert response.json()["detail"][0]["loc"] == ["path", "session_id"]


# ---------------------------------------------------------------------------------------
# DELETE /api/auth/me


def test_deleting_the_account_leaves_no_row_that_names_the_user(
    client: Client, db: Database
) -> None:
    tasks = Client("tasks")
    first_access, first_refresh = tokens(signup(client))
    access, refresh_token = tokens(login(client))
    for title in ("keep", "done", "trashed"):
        created = tasks.post("/api/tasks", json_body={"title": title}, token=access)
        assert created.status == 201
        if title == "trashed":
            task_id = created.json()["id"]
            assert tasks.delete(f"/api/tasks/{task_id}", token=access).status == 204
    # A failed attempt leaves a failed-login row keyed by the email.
    assert delete_account(client, access, password="wrong password").status == 403
    bob_access, _ = tokens(signup(client, email="bob@example.com"))
    assert tasks.post("/api/tasks", json_body={"title": "Bob's"}, token=bob_access).status == 201
    ada = user_row(db, "ada@example.com")
    bob = user_row(db, "bob@example.com")
    before = rows_naming(db, ada.id, ada.email)
    assert {"user", "task", "auth_session", "login_attempt"} <= set(before), before
    bob_before = rows_naming(db, bob.id, bob.email)

    response = delete_account(client, access)

    assert (response.status, response.body) == (204, "")
    assert rows_naming(db, ada.id, ada.email) == {}
    assert rows_naming(db, bob.id, bob.email) == bob_before
    for old_access, old_refresh in ((first_access, first_refresh), (access, refresh_token)):
        assert_unauthorized(client.get(ME, token=old_access))
        assert_unauthorized(refresh(client, old_refresh))
        assert_unauthorized(tasks.get("/api/tasks", token=old_access))
    # The email is free at once, with no lockout or failure count inherited.
    again = signup(client, password="a different one")
    assert again.status == 201
    assert again.json()["user"]["id"] != str(ada.id)
    assert login(client, password="a different one").status == 200
    assert client.get(ME, token=bob_access).status == 200


def test_a_wrong_password_does_not_delete_and_counts_as_a_failed_login(
    client: Client, db: Database
) -> None:
    access, _ = tokens(signup(client))
    response = delete_account(client, access, password="not my password")
    assert (response.status, response.json()) == (403, {"detail": "The password is wrong"})
    user_row(db, "ada@example.com")
    assert client.get(ME, token=access).status == 200
    attempt = login_attempt(db, "ada@example.com")
    assert attempt is not None
    assert attempt.failed_count == 1


def test_a_locked_out_email_cannot_delete_its_account(client: Client, db: Database) -> None:
    access, _ = tokens(signup(client))
    lock_out(client)
    response = delete_account(client, access)
    assert response.status == 429
    assert int(response.headers["retry-after"]) > 0
    user_row(db, "ada@example.com")
    assert client.get(ME, token=access).status == 200


@pytest.mark.parametrize(
    "body",
    [None, {}, {"password": PASSWORD, "extra": True}, {"password": None}, {"password": "p" * 73}],
    ids=["no-body", "empty", "unknown-field", "null", "over-72-bytes"],
)
def test_account_deletion_rejects_invalid_bodies(client: Client, db: Database, body: Any) -> None:
    access, _ = tokens(signup(client))
    response = client.delete(ME, json_body=body, token=access)
    assert response.status == 422, response.body
    user_row(db, "ada@example.com")


def test_every_foreign_key_references_the_user() -> None:
    """The 401 for a write that broke a foreign key (taskapi.db.user_gone) assumes that a
    missing referenced row is a deleted user: a new kind of reference must revisit it."""
    targets = {
        fk.target_fullname for table in SQLModel.metadata.sorted_tables for fk in table.foreign_keys
    }
    assert targets == {"user.id"}


@contextmanager
def user_deleted_before(
    db: Database, email: str, statement_start: str, containing: str = ""
) -> Iterator[None]:
    """Delete the user, on a connection of its own, just before the app's first statement
    that starts with `statement_start` (and holds `containing`): the race with an account
    deletion, made certain."""
    engine = get_engine()

    def delete_user_first(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # Quotes aside: PostgreSQL's SQL quotes "user", SQLite's does not.
        if (
            statement.lstrip().upper().replace('"', "").startswith(f"{statement_start.upper()} ")
            and containing in statement
        ):
            # As `delete_user` does: the user, and the failed logins kept by email.
            with db.engine.begin() as connection:
                connection.execute(
                    sa.text("DELETE FROM login_attempt WHERE email = :e"), {"e": email}
                )
                connection.execute(sa.text('DELETE FROM "user" WHERE email = :e'), {"e": email})

    event.listen(engine, "before_cursor_execute", delete_user_first)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", delete_user_first)


# On PostgreSQL the task route's share lock on the user (CurrentUser) makes a deletion
# wait for the create instead (tests/test_account_concurrency.py): only SQLite, which
# takes no such lock, can lose the user between the token check and the INSERT.
@pytest.mark.sqlite_only
def test_a_task_created_while_its_user_is_deleted_gets_401(client: Client, db: Database) -> None:
    """The user passes the token check, then is deleted just before the create's first
    write (taking its change number, which then finds no user): 401, not 500. (Later than
    that, on SQLite, the create holds the database's write lock and a deletion waits.)"""
    access, _ = tokens(signup(client))
    user = user_row(db, "ada@example.com")

    with user_deleted_before(db, user.email, "UPDATE user SET"):
        response = Client("tasks").post("/api/tasks", json_body={"title": "orphan?"}, token=access)

    assert_unauthorized(response, "Session expired or revoked")
    assert rows_naming(db, user.id, user.email) == {}
    assert db.scalar("SELECT count(*) FROM task") == 0


def test_a_login_while_its_user_is_deleted_gets_401(client: Client, db: Database) -> None:
    """Login checks the password, then the account is deleted before its session's INSERT:
    401 as for an unknown account, not 500, and no session row left behind."""
    signup(client)
    user = user_row(db, "ada@example.com")

    # Its first statement after bcrypt: the lock on the user row, which checks the hash
    # (later than that the login holds the row, or on SQLite the database's write lock,
    # and a deletion waits for it).
    with user_deleted_before(db, user.email, "SELECT", containing=".hashed_password = "):
        response = login(client)

    assert_unauthorized(response, "Invalid email or password")
    assert rows_naming(db, user.id, user.email) == {}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", PASSWORD_PATH),
        ("GET", SESSIONS),
        ("DELETE", f"{SESSIONS}/{SOME_SESSION_ID}"),
        ("DELETE", ME),
    ],
)
def test_the_template_routes_the_account_calls_to_the_auth_function(method: str, path: str) -> None:
    """Nothing to declare: `ANY /api/auth/{proxy+}` takes them, on AWS and in the local
    server, which routes by the template."""
    found = template().match(method, path)
    assert found is not None
    route, parameters = found
    assert (route.key, route.function) == ("ANY /api/auth/{proxy+}", "AuthFunction")
    assert parameters == {"proxy": path.removeprefix("/api/auth/")}
