"""Helpers for the auth tests: sign-ups and logins through the real handler, forged tokens,
and direct access to the rows behind them."""

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from taskapi.models import AuthSession, LoginAttempt, User
from taskapi.tokens import decode_token
from tests.conftest import Client, Database, Response

SECRET = "test-secret-key-that-is-long-enough-for-hs256"  # the `db` fixture's JWT_SECRET_KEY
PASSWORD = "correct horse battery"


def signup(
    client: Client, email: str = "ada@example.com", password: str = PASSWORD, name: str = "Ada"
) -> Response:
    return client.post(
        "/api/auth/signup", json_body={"email": email, "name": name, "password": password}
    )


def login(client: Client, email: str = "ada@example.com", password: str = PASSWORD) -> Response:
    return client.post("/api/auth/login", json_body={"email": email, "password": password})


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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(
    payload: dict[str, Any],
    *,
    secret: str = SECRET,
    alg: str = "HS256",
    header: dict[str, Any] | None = None,
) -> str:
    """A JWT built by hand (not by the layer), so tests can make any token an attacker could."""
    head = _b64(json.dumps(header or {"alg": alg, "typ": "JWT"}).encode())
    body = _b64(json.dumps(payload).encode())
    signing_input = f"{head}.{body}".encode()
    if alg == "none":
        return f"{head}.{body}."
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    signature = hmac.new(secret.encode(), signing_input, digest).digest()
    return f"{head}.{body}.{_b64(signature)}"


def payload_of(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return result


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


def login_attempt(db: Database, email: str) -> LoginAttempt | None:
    with rows(db) as session:
        return session.get(LoginAttempt, email)


def count(db: Database, table: str) -> int:
    return int(db.scalar(f'SELECT count(*) FROM "{table}"'))


def set_active(db: Database, email: str, *, active: bool) -> None:
    with rows(db) as session:
        session.exec(sa.update(User).where(col(User.email) == email).values(is_active=active))
        session.commit()
