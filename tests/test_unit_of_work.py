"""One unit of work per request (`taskapi.db`): the session dependency commits when the
route returns and rolls back when it raises, before the response is sent; through a real
Mangum handler on both databases."""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import HTTPException
from sqlalchemy import event
from sqlmodel import select

from localapi.events import http_event
from taskapi.db import SessionDep, get_engine
from taskapi.factory import LambdaHandler, create_app, make_handler
from taskapi.models import Task, User
from tests.support.client import invoke
from tests.support.database import Database


def build_handler() -> LambdaHandler:
    app = create_app(title="unit of work test")

    @app.post("/users/{name}", status_code=201)
    async def add(name: str, session: SessionDep) -> str:
        session.add(User(email=f"{name}@example.com", name=name, hashed_password="x"))
        return name

    @app.post("/refused/{name}")
    async def refuse(name: str, session: SessionDep) -> None:
        session.add(User(email=f"{name}@example.com", name=name, hashed_password="x"))
        session.flush()
        raise HTTPException(status_code=409, detail="refused after writing")

    @app.post("/orphan", status_code=201)
    async def orphan(session: SessionDep) -> str:
        # Not flushed: the foreign key breaks at the dependency's commit, after the route
        # returned its 201.
        session.add(Task(user_id=uuid.uuid4(), title="nobody's"))
        return "created"

    @app.get("/users")
    async def count(session: SessionDep) -> int:
        return len(session.exec(select(User)).all())

    @app.post("/counted")
    async def count_for_update(session: SessionDep) -> int:
        # A request that may write but only reads (and locks), as a no-op PATCH does.
        return len(session.exec(select(User).with_for_update()).all())

    return make_handler(app)


def emails(db: Database) -> list[str]:
    return [row.email for row in db.rows('SELECT email FROM "user" ORDER BY email')]


def test_a_route_that_returns_is_committed_without_committing(db: Database) -> None:
    handler = build_handler()
    response = invoke(handler, http_event("POST", "/users/ada"))
    assert (response.status, response.json()) == (201, "ada")
    assert emails(db) == ["ada@example.com"]
    assert invoke(handler, http_event("GET", "/users")).json() == 1


def test_a_route_that_raises_is_rolled_back(db: Database) -> None:
    handler = build_handler()
    response = invoke(handler, http_event("POST", "/refused/bob"))
    assert (response.status, response.json()) == (409, {"detail": "refused after writing"})
    assert emails(db) == []


def test_a_commit_that_fails_is_the_answer_not_a_201(db: Database) -> None:
    """The commit runs before the response is sent: its error (here a foreign key that
    names no user, which the layer answers 401) replaces the route's 201."""
    response = invoke(build_handler(), http_event("POST", "/orphan"))
    assert (response.status, response.json()) == (401, {"detail": "Session expired or revoked"})
    assert db.scalar("SELECT count(*) FROM task") == 0
    assert emails(db) == []


def test_the_next_request_starts_clean_after_a_rollback(db: Database) -> None:
    handler = build_handler()
    assert invoke(handler, http_event("POST", "/refused/bob")).status == 409
    assert invoke(handler, http_event("POST", "/users/bob")).status == 201
    assert emails(db) == ["bob@example.com"]


@contextmanager
def transaction_ends() -> Iterator[list[str]]:
    """How the app's engine ends transactions meanwhile: "commit" or "rollback" each."""
    ends: list[str] = []
    engine = get_engine()
    listeners = {name: lambda _connection, name=name: ends.append(name) for name in ENDS}
    for name, listener in listeners.items():
        event.listen(engine, name, listener)
    try:
        yield ends
    finally:
        for name, listener in listeners.items():
            event.remove(engine, name, listener)


ENDS = ("commit", "rollback")


def test_a_request_that_wrote_nothing_rolls_back_instead_of_committing(db: Database) -> None:
    """A COMMIT after row locks alone would make PostgreSQL flush its WAL for nothing."""
    handler = build_handler()
    assert invoke(handler, http_event("POST", "/users/ada")).status == 201
    with transaction_ends() as ends:
        response = invoke(handler, http_event("POST", "/counted"))
    assert (response.status, response.json()) == (200, 1)
    assert ends == ["rollback"]
    with transaction_ends() as ends:
        assert invoke(handler, http_event("POST", "/users/bob")).status == 201
    assert ends == ["commit"]
    assert emails(db) == ["ada@example.com", "bob@example.com"]
