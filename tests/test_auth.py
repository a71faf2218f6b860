"""The auth function (`/api/auth/*`), replayed through its real Lambda handler on SQLite
and PostgreSQL: every row of the contract's auth table, and the rows behind it."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import select

from taskapi.models import LoginAttempt
from tests.support.auth import (
    PASSWORD,
    assert_unauthorized,
    auth_sessions,
    count,
    login,
    login_attempt,
    parse_time,
    record_bcrypt_checks,
    rows,
    session_id,
    set_active,
    signup,
    tokens,
    user_row,
)
from tests.support.client import Client
from tests.support.database import Database
from tests.support.environment import configure

ME = "/api/auth/me"
REFRESH = "/api/auth/refresh"
LOGOUT = "/api/auth/logout"


# What sign-up and login answer.
AUTH_RESPONSE_KEYS = {
    "user",
    "access_token",
    "refresh_token",
    "token_type",
    "expires_in",
    "device_token",
}


# The `client` fixture's requests go to the auth function.
pytestmark = pytest.mark.client("auth")


# ---------------------------------------------------------------------------------------
# Sign-up


def test_signup_creates_the_user_and_a_session(client: Client, db: Database) -> None:
    response = signup(client, email="  Ada.Lovelace@Example.COM ", name="  Ada  ")
    assert response.status == 201
    body = response.json()
    assert set(body) == AUTH_RESPONSE_KEYS
    assert (body["token_type"], body["expires_in"]) == ("bearer", 15 * 60)
    user = body["user"]
    assert set(user) == {
        "id",
        "email",
        "name",
        "is_active",
        "created_at",
        "updated_at",
        "last_login_at",
    }
    assert (user["email"], user["name"], user["is_active"]) == (
        "ada.lovelace@example.com",
        "Ada",
        True,
    )
    assert user["last_login_at"] is None
    assert parse_time(user["created_at"]) == parse_time(user["updated_at"])

    row = user_row(db, "ada.lovelace@example.com")
    assert str(row.id) == user["id"]
    assert row.hashed_password.startswith("$2b$04$")  # bcrypt at BCRYPT_ROUNDS=4
    assert row.hashed_password not in response.body
    assert PASSWORD not in response.body
    sessions = auth_sessions(db, row.id)
    assert list(sessions) == [session_id(body["access_token"])]
    assert session_id(body["refresh_token"], "refresh") in sessions
    assert next(iter(sessions.values())).revoked_at is None

    me = client.get(ME, token=body["access_token"])
    assert (me.status, me.json()) == (200, user)


def test_signup_refuses_a_taken_email_whatever_its_case(client: Client, db: Database) -> None:
    assert signup(client, email="ada@example.com").status == 201
    response = signup(client, email=" ADA@Example.com", name="Impostor", password="another one")
    assert (response.status, response.json()) == (
        409,
        {"detail": "A user with this email already exists"},
    )
    assert count(db, "user") == 1
    assert count(db, "auth_session") == 1
    assert user_row(db, "ada@example.com").name == "Ada"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "name": "Ada", "password": PASSWORD}, "email"),
        ({"email": "ada@localhost", "name": "Ada", "password": PASSWORD}, "email"),
        ({"email": "ada@example.com", "name": "", "password": PASSWORD}, "name"),
        ({"email": "ada@example.com", "name": "  \t ", "password": PASSWORD}, "name"),
        ({"email": "ada@example.com", "name": "x" * 101, "password": PASSWORD}, "name"),
        ({"email": "ada@example.com", "name": "A\x00da", "password": PASSWORD}, "name"),
        ({"email": "ada@example.com", "name": "Ada", "password": "1234567"}, "password"),
        ({"email": "ada@example.com", "name": "Ada", "password": "p" * 73}, "password"),
        # 37 characters but 74 bytes in UTF-8: the limit is bytes, as bcrypt counts them.
        ({"email": "ada@example.com", "name": "Ada", "password": "é" * 37}, "password"),
        ({"email": "ada@example.com", "name": "Ada", "password": "pass\x00word"}, "password"),
        ({"email": "ada@example.com", "name": "Ada"}, "password"),
        ({"email": "ada@example.com", "name": "Ada", "password": PASSWORD, "admin": True}, "admin"),
    ],
    ids=[
        "invalid-email",
        "email-without-domain-dot",
        "empty-name",
        "whitespace-name",
        "name-over-100",
        "nul-in-name",
        "password-under-8",
        "password-over-72-bytes",
        "password-over-72-bytes-multibyte",
        "nul-in-password",
        "missing-password",
        "unknown-field",
    ],
)
def test_signup_rejects_invalid_bodies(
    client: Client, db: Database, body: dict[str, Any], field: str
) -> None:
    response = client.post("/api/auth/signup", json_body=body)
    assert response.status == 422, response.body
    errors = response.json()["detail"]
    assert isinstance(errors, list)
    assert any(error["loc"][-1] == field for error in errors), errors
    assert count(db, "user") == 0


@pytest.mark.parametrize("path", ["/api/auth/signup", "/api/auth/login"])
def test_a_lone_surrogate_in_the_password_is_422(client: Client, db: Database, path: str) -> None:
    body = '{"email": "ada@example.com", "name": "Ada", "password": "pass\\ud800word"}'
    if path.endswith("login"):
        body = body.replace('"name": "Ada", ', "")
    response = client.post(path, body=body, headers={"content-type": "application/json"})
    assert response.status == 422
    assert count(db, "user") == 0


def test_signup_rejects_a_body_that_is_not_json(client: Client, db: Database) -> None:
    response = client.post(
        "/api/auth/signup", body="email=ada", headers={"content-type": "application/json"}
    )
    assert response.status == 422
    assert count(db, "user") == 0


def test_signup_accepts_the_limits(client: Client, db: Database) -> None:
    """100 characters of name and 72 bytes of password (36 two-byte characters) fit."""
    password = "é" * 36
    response = signup(client, name="n" * 100, password=password)
    assert response.status == 201
    assert response.json()["user"]["name"] == "n" * 100
    assert login(client, password=password).status == 200
    # bcrypt ignores bytes past 72: had a longer password been accepted, a prefix would match.
    assert login(client, password="é" * 35 + "e").status == 401


# ---------------------------------------------------------------------------------------
# Login


def test_login_starts_a_new_session_and_sets_last_login(client: Client, db: Database) -> None:
    signed_up = signup(client).json()
    before = datetime.now(UTC)
    response = login(client, email="  ADA@example.com ")
    assert response.status == 200
    body = response.json()
    assert set(body) == AUTH_RESPONSE_KEYS
    assert (body["token_type"], body["expires_in"]) == ("bearer", 900)
    user = body["user"]
    assert user["id"] == signed_up["user"]["id"]
    last_login = parse_time(user["last_login_at"])
    assert before - timedelta(seconds=1) <= last_login <= datetime.now(UTC)
    # Logging in is not an edit of the profile.
    assert user["updated_at"] == signed_up["user"]["updated_at"]

    row = user_row(db, "ada@example.com")
    assert row.last_login_at == last_login
    sessions = auth_sessions(db, row.id)
    assert len(sessions) == 2
    assert session_id(body["access_token"]) in sessions
    assert session_id(body["access_token"]) != session_id(signed_up["access_token"])
    assert row.hashed_password not in response.body
    assert client.get(ME, token=body["access_token"]).json()["last_login_at"] is not None


def test_wrong_password_and_unknown_email_look_the_same(client: Client, db: Database) -> None:
    signup(client)
    wrong = login(client, password="wrong password")
    unknown = login(client, email="nobody@example.com")
    for response in (wrong, unknown):
        assert_unauthorized(response, "Invalid email or password")
    assert wrong.headers == unknown.headers
    assert count(db, "auth_session") == 1
    assert user_row(db, "ada@example.com").last_login_at is None
    # Both count towards throttling, so a lockout does not reveal whether the account exists.
    for email in ("ada@example.com", "nobody@example.com"):
        attempt = login_attempt(db, email)
        assert attempt is not None
        assert attempt.failed_count == 1


def test_unknown_email_spends_a_bcrypt_check_like_a_wrong_password(
    client: Client, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The time of a login is the bcrypt check: both failures must run one at full cost."""
    signup(client)
    checked = record_bcrypt_checks(monkeypatch)
    login(client, password="wrong password")
    login(client, email="nobody@example.com")
    assert len(checked) == 2
    real_hash, dummy_hash = checked
    assert real_hash == user_row(db, "ada@example.com").hashed_password
    assert dummy_hash != real_hash
    assert dummy_hash[:7] == real_hash[:7] == "$2b$04$"  # same algorithm, same cost


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "ada@example.com"}, "password"),
        ({"password": PASSWORD}, "email"),
        ({"email": "ada@example.com", "password": PASSWORD, "remember": True}, "remember"),
        ({"email": "ada@example.com", "password": "p" * 73}, "password"),
        ({"email": "ada@example.com", "password": "é" * 37}, "password"),
        ({"email": "", "password": PASSWORD}, "email"),
        ({"email": "a\x00@example.com", "password": PASSWORD}, "email"),
    ],
    ids=["no-password", "no-email", "unknown-field", "long-password", "long-utf8", "empty", "nul"],
)
def test_login_rejects_invalid_bodies(
    client: Client, db: Database, body: dict[str, Any], field: str
) -> None:
    response = client.post("/api/auth/login", json_body=body)
    assert response.status == 422, response.body
    assert any(error["loc"][-1] == field for error in response.json()["detail"])
    assert count(db, "login_attempt") == 0


def test_inactive_account_gets_403_with_the_right_password_only(
    client: Client, db: Database
) -> None:
    access, refresh = tokens(signup(client))
    set_active(db, "ada@example.com", active=False)
    response = login(client)
    assert (response.status, response.json()) == (403, {"detail": "This account is inactive"})
    assert_unauthorized(login(client, password="wrong password"), "Invalid email or password")
    assert count(db, "auth_session") == 1
    # Tokens handed out before the account was deactivated stop working at once.
    assert_unauthorized(client.get(ME, token=access), "Account is inactive")
    assert_unauthorized(client.post(REFRESH, json_body={"refresh_token": refresh}))
    set_active(db, "ada@example.com", active=True)
    assert client.post(REFRESH, json_body={"refresh_token": refresh}).status == 200


# ---------------------------------------------------------------------------------------
# Login throttling


@pytest.fixture
def three_attempts(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, login_max_attempts="3", login_lockout_minutes="15")


def age_attempts(db: Database, email: str, by: timedelta) -> None:
    """Move an email's failures into the past, as if time had passed."""
    with rows(db) as session:
        attempts = session.exec(select(LoginAttempt).where(LoginAttempt.email == email)).all()
        assert attempts
        for attempt in attempts:
            attempt.first_failed_at -= by
            attempt.last_failed_at -= by
            session.add(attempt)
        session.commit()


@pytest.mark.usefixtures("three_attempts")
def test_lockout_after_consecutive_failures_even_with_the_right_password(
    client: Client, db: Database
) -> None:
    signup(client)
    for _ in range(3):
        assert_unauthorized(login(client, password="wrong password"))
    response = login(client)
    assert response.status == 429
    assert response.json() == {"detail": "Too many failed login attempts; try again later"}
    retry_after = int(response.headers["retry-after"])
    assert 15 * 60 - 60 <= retry_after <= 15 * 60  # a minute's slack for a slow machine
    # Refused attempts are not checked, counted, or allowed to extend the lockout.
    assert login(client, password="wrong password").status == 429
    attempt = login_attempt(db, "ada@example.com")
    assert attempt is not None
    assert attempt.failed_count == 3
    assert count(db, "auth_session") == 1
    # The email is matched as stored: another case is the same account.
    assert login(client, email="ADA@EXAMPLE.COM").status == 429

    age_attempts(db, "ada@example.com", timedelta(minutes=10))
    retry_after = int(login(client).headers["retry-after"])
    assert 5 * 60 - 60 <= retry_after <= 5 * 60

    age_attempts(db, "ada@example.com", timedelta(minutes=5, seconds=1))
    response = login(client)
    assert response.status == 200
    assert login_attempt(db, "ada@example.com") is None
    assert user_row(db, "ada@example.com").last_login_at is not None


@pytest.mark.usefixtures("three_attempts")
def test_unknown_emails_are_locked_out_too(client: Client, db: Database) -> None:
    for _ in range(3):
        assert_unauthorized(login(client, email="nobody@example.com"))
    response = login(client, email="nobody@example.com")
    assert response.status == 429
    assert int(response.headers["retry-after"]) > 0
    # Other emails are not affected.
    signup(client)
    assert login(client).status == 200


@pytest.mark.usefixtures("three_attempts")
def test_a_successful_login_resets_the_count(client: Client, db: Database) -> None:
    signup(client)
    for _ in range(2):
        assert_unauthorized(login(client, password="wrong password"))
    assert login(client).status == 200
    assert login_attempt(db, "ada@example.com") is None
    for _ in range(2):
        assert_unauthorized(login(client, password="wrong password"))
    assert login(client).status == 200


@pytest.mark.usefixtures("three_attempts")
def test_failures_spread_beyond_the_window_start_a_new_count(client: Client, db: Database) -> None:
    signup(client)
    for _ in range(2):
        login(client, password="wrong password")
    age_attempts(db, "ada@example.com", timedelta(minutes=15, seconds=1))
    # Only one failure lies inside the window now: no lockout.
    assert_unauthorized(login(client, password="wrong password"))
    attempt = login_attempt(db, "ada@example.com")
    assert attempt is not None
    assert attempt.failed_count == 1
    assert datetime.now(UTC) - attempt.first_failed_at < timedelta(minutes=1)
    assert login(client).status == 200


# ---------------------------------------------------------------------------------------
# Refresh


def test_refresh_rotates_the_refresh_token(client: Client, db: Database) -> None:
    access, refresh = tokens(signup(client))
    response = client.post(REFRESH, json_body={"refresh_token": refresh})
    assert response.status == 200
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert (body["token_type"], body["expires_in"]) == ("bearer", 900)
    new_access, new_refresh = body["access_token"], body["refresh_token"]
    assert new_refresh != refresh
    assert new_access != access
    # Same session, now holding the new refresh token.
    sid = session_id(access)
    assert session_id(new_access) == session_id(new_refresh, "refresh") == sid
    (row,) = auth_sessions(db, user_row(db, "ada@example.com").id).values()
    assert row.id == sid
    assert row.revoked_at is None
    assert client.get(ME, token=new_access).status == 200
    # The new refresh token can be used in turn.
    assert client.post(REFRESH, json_body={"refresh_token": new_refresh}).status == 200


def test_reusing_a_rotated_refresh_token_revokes_the_session(client: Client, db: Database) -> None:
    signup(client)
    other_access, other_refresh = tokens(login(client))
    access, refresh = tokens(login(client))
    newest_access, newest_refresh = tokens(
        client.post(REFRESH, json_body={"refresh_token": refresh})
    )

    reused = client.post(REFRESH, json_body={"refresh_token": refresh})
    assert_unauthorized(reused, "Refresh token already used; the session has been revoked")

    # Every token descended from that login is dead, the newest ones included...
    assert_unauthorized(client.get(ME, token=newest_access), "Session expired or revoked")
    assert_unauthorized(client.get(ME, token=access))
    assert_unauthorized(
        client.post(REFRESH, json_body={"refresh_token": newest_refresh}),
        "Session expired or revoked",
    )
    sessions = auth_sessions(db, user_row(db, "ada@example.com").id)
    assert sessions[session_id(access)].revoked_at is not None
    # ... while the user's other sessions carry on.
    assert client.get(ME, token=other_access).status == 200
    assert client.post(REFRESH, json_body={"refresh_token": other_refresh}).status == 200
    assert sum(row.revoked_at is None for row in sessions.values()) == 2  # signup's and other


def test_refresh_refuses_an_access_token(client: Client, db: Database) -> None:
    access, refresh = tokens(signup(client))
    response = client.post(REFRESH, json_body={"refresh_token": access})
    assert_unauthorized(response, "Invalid or expired refresh token")
    # Nothing was revoked by the mistake.
    assert client.post(REFRESH, json_body={"refresh_token": refresh}).status == 200


def test_refresh_after_the_session_expired(client: Client, db: Database) -> None:
    _, refresh = tokens(signup(client))
    with rows(db) as session:
        (row,) = auth_sessions(db, user_row(db, "ada@example.com").id).values()
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        session.add(row)
        session.commit()
    assert_unauthorized(
        client.post(REFRESH, json_body={"refresh_token": refresh}), "Session expired or revoked"
    )


@pytest.mark.parametrize(
    "body",
    [{}, {"refresh_token": None}, {"refresh_token": 42}, {"refresh_token": "x", "extra": 1}],
    ids=["missing", "null", "number", "unknown-field"],
)
def test_refresh_rejects_invalid_bodies(client: Client, body: dict[str, Any]) -> None:
    assert client.post(REFRESH, json_body=body).status == 422


# ---------------------------------------------------------------------------------------
# Logout


def test_logout_ends_only_its_own_session(client: Client, db: Database) -> None:
    signup(client)
    access, refresh = tokens(login(client))
    other_access, other_refresh = tokens(login(client))

    response = client.post(LOGOUT, token=access)
    assert (response.status, response.json()) == (200, {"detail": "Logged out"})

    assert_unauthorized(client.get(ME, token=access), "Session expired or revoked")
    assert_unauthorized(
        client.post(REFRESH, json_body={"refresh_token": refresh}), "Session expired or revoked"
    )
    assert_unauthorized(client.post(LOGOUT, token=access))
    sessions = auth_sessions(db, user_row(db, "ada@example.com").id)
    assert sessions[session_id(access)].revoked_at is not None
    assert sessions[session_id(other_access)].revoked_at is None

    assert client.get(ME, token=other_access).status == 200
    assert client.post(REFRESH, json_body={"refresh_token": other_refresh}).status == 200
    assert login(client).status == 200


def test_logout_takes_an_empty_body(client: Client) -> None:
    access, _ = tokens(signup(client))
    response = client.post(
        LOGOUT, body="{}", headers={"content-type": "application/json"}, token=access
    )
    assert (response.status, response.json()) == (200, {"detail": "Logged out"})
    assert_unauthorized(client.get(ME, token=access))


def test_logout_with_the_refresh_token_of_the_same_session(client: Client, db: Database) -> None:
    access, refresh = tokens(signup(client))
    response = client.post(LOGOUT, json_body={"refresh_token": refresh}, token=access)
    assert (response.status, response.json()) == (200, {"detail": "Logged out"})
    assert_unauthorized(client.get(ME, token=access))
    assert_unauthorized(client.post(REFRESH, json_body={"refresh_token": refresh}))


def test_logout_with_another_sessions_refresh_token_ends_both(client: Client, db: Database) -> None:
    access, _ = tokens(signup(client))
    other_access, other_refresh = tokens(login(client))
    third_access, _ = tokens(login(client))
    response = client.post(LOGOUT, json_body={"refresh_token": other_refresh}, token=access)
    assert response.status == 200
    assert_unauthorized(client.get(ME, token=access))
    assert_unauthorized(client.get(ME, token=other_access))
    assert client.get(ME, token=third_access).status == 200


def test_logout_with_a_bad_refresh_token_changes_nothing(client: Client, db: Database) -> None:
    access, _ = tokens(signup(client))
    stranger_access, stranger_refresh = tokens(signup(client, email="eve@example.com"))
    for refresh_token in ("not a token", access, stranger_refresh):
        response = client.post(LOGOUT, json_body={"refresh_token": refresh_token}, token=access)
        assert_unauthorized(response, "Invalid or expired refresh token")
    assert client.get(ME, token=access).status == 200
    assert client.get(ME, token=stranger_access).status == 200
    assert db.scalar("SELECT count(*) FROM auth_session WHERE revoked_at IS NOT NULL") == 0
    response = client.post(
        LOGOUT, json_body={"refresh_token": stranger_refresh, "all": True}, token=access
    )
    assert response.status == 422


def test_logout_needs_an_access_token(client: Client, db: Database) -> None:
    access, refresh = tokens(signup(client))
    assert_unauthorized(client.post(LOGOUT), "Not authenticated")
    # A refresh token alone, in the body or the header, is not enough.
    assert_unauthorized(client.post(LOGOUT, json_body={"refresh_token": refresh}))
    assert_unauthorized(client.post(LOGOUT, token=refresh))
    assert client.get(ME, token=access).status == 200


# ---------------------------------------------------------------------------------------
# The current user and the Authorization header


def test_me_returns_the_user_without_secrets(client: Client, db: Database) -> None:
    body = signup(client).json()
    response = client.get(ME, token=body["access_token"])
    assert (response.status, response.json()) == (200, body["user"])
    assert "password" not in response.body
    assert "$2b$" not in response.body


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic YWRhOnB3",
        "Token abc",
        "Bearer not.a.jwt",
        "Bearer x y",
    ],
    ids=[
        "absent",
        "empty",
        "scheme-only",
        "scheme-space",
        "basic",
        "other-scheme",
        "garbage",
        "two-parts",
    ],
)
def test_me_refuses_a_missing_or_malformed_header(
    client: Client, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    assert_unauthorized(client.get(ME, headers=headers))


def test_unknown_routes_are_404(client: Client) -> None:
    assert client.get("/api/auth/nowhere").status == 404
    assert client.get("/api/auth/login").status == 405
