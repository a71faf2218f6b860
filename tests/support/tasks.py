"""Accounts for the tasks tests, made directly in the database (not through the auth function)."""

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlmodel import Session

from taskapi.db import get_engine
from taskapi.models import AuthSession, Task, User, utcnow
from taskapi.tokens import issue_token
from tests.support.client import Client, Response


@dataclass(frozen=True)
class Account:
    user_id: uuid.UUID
    session_id: uuid.UUID
    token: str


def make_account(email: str, *, token_type: str = "access") -> Account:
    """A user with a live login session and an access token for it."""
    with Session(get_engine()) as session:
        user = User(email=email, name=email.split("@")[0], hashed_password="not-a-real-hash")
        login = AuthSession(
            user_id=user.id, refresh_jti=uuid.uuid4().hex, expires_at=utcnow() + timedelta(days=7)
        )
        session.add(user)
        session.flush()
        session.add(login)
        session.commit()
        user_id, session_id = user.id, login.id
    issued = issue_token(
        user_id=user_id,
        session_id=session_id,
        token_type="refresh" if token_type == "refresh" else "access",
        lifetime=timedelta(minutes=15),
    )
    return Account(user_id=user_id, session_id=session_id, token=issued.token)


def insert_task(owner: Account, title: str, **fields: Any) -> int:
    """A task row written straight to the database, with timestamps of the test's choosing
    (`created_at` defaults to now, `updated_at` to `created_at`)."""
    fields.setdefault("created_at", utcnow())
    fields.setdefault("updated_at", fields["created_at"])
    with Session(get_engine()) as session:
        task = Task(user_id=owner.user_id, title=title, **fields)
        session.add(task)
        session.commit()
        assert task.id is not None
        return task.id


def create(client: Client, owner: Account, **body: Any) -> Response:
    response = client.post("/api/tasks", json_body=body, token=owner.token)
    assert response.status == 201, response.body
    return response
