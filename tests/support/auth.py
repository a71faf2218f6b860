"""Helpers for the auth tests: sign-ups and logins through the real handler, and direct
access to the rows behind them."""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import bcrypt
import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select

from taskapi.models import AuthSession, LoginAttempt, User
from taskapi.tokens import decode_token
from tests.support.client import LOCAL_SOURCE, Client, Response
from tests.support.database import Database

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a new password, longer"
ME = "/api/auth/me"
PASSWORD_PATH = "/api/auth/password"


def signup(
    client: Client, email: str = "ada@example.com", password: str = PASSWORD, name: str = "Ada"
) -> Response:
    return client.post(
        "/api/auth/signup", json_body={"email": email, "name": name, "password": password}
    )


def login(
    client: Client,
    email: str = "ada@example.com",
    password: str = PASSWORD,
    *,
    source_ip: str = LOCAL_SOURCE,
) -> Response:
    """POST /api/auth/login through the real handler, from the given source address."""
    return client.post(
        "/api/auth/login", json_body={"email": email, "password": password}, source_ip=source_ip
    )


def assert_unauthorized(response: Response, detail: str | None = None) -> None:
    assert response.status == 401, response.body
    assert response.headers["www-authenticate"] == "Bearer"
    if detail is not None:
        assert response.json() == {"detail": detail}


def parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), f"{value} is not explicit UTC"
    return parsed


def tokens(response: Response) -> tuple[str, str]:
    """The access and refresh token of a successful signup, login or refresh."""
    assert response.status in (200, 201), response.body
    body = response.json()
    return body["access_token"], body["refresh_token"]


def session_id(token: str, token_type: str = "access") -> uuid.UUID:
    claims = decode_token(token, expected_type="refresh" if token_type == "refresh" else "access")
    return claims.session_id


@contextmanager
def rows(db: Database) -> Iterator[Session]:
    """An ORM session on the test database, for checking and adjusting rows."""
    with Session(db.engine, expire_on_commit=False) as session:
        yield session


def user_row(db: Database, email: str) -> User:
    with rows(db) as session:
        user = session.exec(select(User).where(User.email == email)).one()
        return user


def auth_sessions(db: Database, user_id: uuid.UUID | str) -> dict[uuid.UUID, AuthSession]:
    with rows(db) as session:
        found = session.exec(
            select(AuthSession).where(AuthSession.user_id == uuid.UUID(str(user_id)))
        ).all()
        return {row.id: row for row in found}


def login_attempt(db: Database, email: str, source: str = LOCAL_SOURCE) -> LoginAttempt | None:
    """The failure count of an email from one source (`ANY_SOURCE`: from all of them)."""
    with rows(db) as session:
        return session.get(LoginAttempt, (email, source))


def count(db: Database, table: str) -> int:
    return int(db.scalar(f'SELECT count(*) FROM "{table}"'))


def set_active(db: Database, email: str, *, active: bool) -> None:
    with rows(db) as session:
        session.exec(sa.update(User).where(col(User.email) == email).values(is_active=active))
        session.commit()


def record_bcrypt_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every password check that runs from now on, from any thread: the hashes checked."""
    checked: list[str] = []
    real_checkpw = bcrypt.checkpw

    def recording(password: bytes, hashed: bytes) -> bool:
        checked.append(hashed.decode())
        return real_checkpw(password, hashed)

    # `taskapi.passwords` calls `bcrypt.checkpw` through the module at every check.
    monkeypatch.setattr(bcrypt, "checkpw", recording)
    return checked


def change_password(
    client: Client, token: str, current: str = PASSWORD, new: str = NEW_PASSWORD
) -> Response:
    return client.post(
        PASSWORD_PATH, json_body={"current_password": current, "new_password": new}, token=token
    )


def delete_account(client: Client, token: str, password: str = PASSWORD) -> Response:
    return client.delete(ME, json_body={"password": password}, token=token)
