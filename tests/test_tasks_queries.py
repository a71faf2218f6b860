"""The tasks function's SQL: statements per request, concurrent writers, the OpenAPI it declares."""

import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from taskapi.db import get_engine
from tests.support.client import Client
from tests.support.concurrency import at_once
from tests.support.database import Database
from tests.support.environment import configure
from tests.support.functions import load_function
from tests.support.tasks import Account, create, insert_task


@contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL statements the app's engine sends while the block runs."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    engine = get_engine()
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def test_a_list_request_costs_one_statement(client: Client, ada: Account) -> None:
    for n in range(30):
        insert_task(ada, f"task {n}", priority="High" if n % 2 else "Low")
    # Warm up: the first connection runs the dialect's own set-up queries.
    assert client.get("/api/tasks", token=ada.token).status == 200

    def count(query: dict[str, Any]) -> tuple[int, int, int]:
        with statements() as sent:
            response = client.get("/api/tasks", query=query, token=ada.token)
        assert response.status == 200, response.body
        return len(sent), response.json()["total"], len(response.json()["items"])

    filtered = {"q": "TASK", "priority": "High", "sort": "-priority"}
    # The page, which checks the session and carries the total.
    assert count({**filtered, "limit": 20}) == (1, 15, 15)
    assert count({**filtered, "limit": 10, "skip": 10}) == (1, 15, 5)
    assert count({**filtered, "limit": 5, "skip": 5}) == (1, 15, 5)
    # A page without rows cannot tell an empty page from a dead session: the session's
    # own check follows.
    assert count({"status": "Completed"}) == (2, 0, 0)
    # Only a page past the end has no row to carry the total: a COUNT follows too.
    assert count({"skip": 100}) == (3, 30, 0)
    assert count({**filtered, "skip": 15}) == (3, 15, 0)


def test_reading_a_task_costs_one_statement(client: Client, ada: Account) -> None:
    task_id = insert_task(ada, "t")
    assert client.get(f"/api/tasks/{task_id}", token=ada.token).status == 200
    with statements() as sent:
        assert client.get(f"/api/tasks/{task_id}", token=ada.token).status == 200
    assert len(sent) == 1, sent
    # No such task: the session's own check tells a 404 from a 401.
    with statements() as sent:
        assert client.get(f"/api/tasks/{task_id + 1}", token=ada.token).status == 404
    assert len(sent) == 2, sent


def test_reads_and_writes_write_a_task_alike(client: Client, ada: Account) -> None:
    """One serialisation (`taskapi.models.task_json`): what a create answers is, byte for
    byte, what the read by id answers and what the list holds."""
    due = "2026-12-24T18:30:00.123456Z"
    body = {"title": 'Quotes " and \\ and üñí 😀', "description": "a\nb", "due_at": due}
    created = create(client, ada, **body)
    read = client.get(f"/api/tasks/{created.json()['id']}", token=ada.token)
    assert (read.status, read.body) == (200, created.body)
    assert read.headers["content-type"] == created.headers["content-type"] == "application/json"
    listed = client.get("/api/tasks", token=ada.token).json()["items"]
    assert listed == [json.loads(created.body)]
    assert listed[0]["due_at"] == due


def run_together(count: int, call: Any) -> list[int]:
    """Run `call` from `count` threads released at the same moment; their statuses."""
    return [response.status for response in at_once(count, call)]


@pytest.mark.postgres_only
def test_concurrent_puts_with_the_same_if_match_have_one_winner(
    client: Client, ada: Account, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One process plays ten containers: each needs a connection of its own.
    configure(monkeypatch, database_pool_size="10")
    task_id = create(client, ada, title="Contested").json()["id"]
    etag = client.get(f"/api/tasks/{task_id}", token=ada.token).headers["etag"]

    statuses = run_together(
        10,
        lambda: client.put(
            f"/api/tasks/{task_id}",
            json_body={"title": f"writer {threading.get_ident()}"},
            headers={"if-match": etag},
            token=ada.token,
        ),
    )
    assert Counter(statuses) == {200: 1, 412: 9}
    assert db.scalar("SELECT version FROM task WHERE id = :id", id=task_id) == 2
    assert db.scalar("SELECT title FROM task WHERE id = :id", id=task_id).startswith("writer ")


@pytest.mark.postgres_only
def test_concurrent_writes_without_if_match_all_count(
    client: Client, ada: Account, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, database_pool_size="10")
    task_id = create(client, ada, title="Busy").json()["id"]
    counter = iter(range(1000))

    statuses = run_together(
        10,
        lambda: client.put(
            f"/api/tasks/{task_id}", json_body={"title": f"write {next(counter)}"}, token=ada.token
        ),
    )
    assert statuses == [200] * 10
    # Every write bumped the version atomically: none was lost.
    assert db.scalar("SELECT version FROM task WHERE id = :id", id=task_id) == 11


@pytest.mark.postgres_only
def test_concurrent_deletes_with_the_same_if_match_have_one_winner(
    client: Client, ada: Account, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, database_pool_size="10")
    task_id = create(client, ada, title="Once").json()["id"]
    etag = f'"{task_id}-1"'
    statuses = run_together(
        10,
        lambda: client.delete(f"/api/tasks/{task_id}", headers={"if-match": etag}, token=ada.token),
    )
    # The losers see either the changed version (412) or, if they read after the winner
    # committed, a deleted task (404).
    counts = Counter(statuses)
    assert counts[204] == 1
    assert counts[412] + counts[404] == 9
    assert db.scalar("SELECT version FROM task WHERE id = :id", id=task_id) == 2


# ---------------------------------------------------------------------------------------
# OpenAPI: the statuses declared are the ones the routes answer (schemathesis relies on it)

EXPECTED_RESPONSES = {
    ("/api/tasks", "get"): {"200", "304", "401", "422", "503"},
    ("/api/tasks", "post"): {"201", "401", "409", "422", "503"},
    ("/api/tasks/{task_id}", "get"): {"200", "304", "401", "403", "404", "422", "503"},
    ("/api/tasks/{task_id}", "put"): {"200", "401", "403", "404", "412", "422", "503"},
    ("/api/tasks/{task_id}", "delete"): {"204", "401", "403", "404", "412", "422", "503"},
    ("/api/tasks/trash", "get"): {"200", "401", "422", "503"},
    ("/api/tasks/trash", "delete"): {"204", "401", "503"},
    ("/api/tasks/trash/{task_id}", "delete"): {"204", "401", "403", "404", "422", "503"},
    ("/api/tasks/changes", "get"): {"200", "401", "410", "422", "503"},
    ("/api/tasks/batch", "post"): {"200", "401", "409", "422", "503"},
    ("/api/tasks/{task_id}/restore", "post"): {
        "200",
        "401",
        "403",
        "404",
        "412",
        "422",
        "503",
    },
    ("/api/tasks/{task_id}/complete", "patch"): {
        "200",
        "401",
        "403",
        "404",
        "412",
        "422",
        "503",
    },
}


def test_openapi_declares_every_status_and_header(db: Database) -> None:
    document = load_function("tasks").app.openapi()
    operations = {
        (path, method): operation
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }
    assert set(operations) == set(EXPECTED_RESPONSES)
    for key, expected in EXPECTED_RESPONSES.items():
        responses = operations[key]["responses"]
        assert set(responses) == expected, key
        for status in expected - {"200", "201", "204", "304", "422"}:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Detail"}, (key, status)
        assert "security" in operations[key]
    assert set(operations[("/api/tasks", "post")]["responses"]["201"]["headers"]) == {
        "ETag",
        "Location",
        "Idempotent-Replayed",
    }
    for key in (("/api/tasks/{task_id}", "get"), ("/api/tasks/{task_id}", "put")):
        assert set(operations[key]["responses"]["200"]["headers"]) == {"ETag"}
    task_id = operations[("/api/tasks/{task_id}", "get")]["parameters"][0]
    assert task_id["schema"]["maximum"] == 2**31 - 1
    assert document["components"]["schemas"]["Detail"]["properties"] == {
        "detail": {"type": "string", "title": "Detail"}
    }
