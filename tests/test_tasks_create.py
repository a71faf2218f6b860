"""Creates that are safe to retry (`Idempotency-Key`) and the per-user quota, through the
real handler on SQLite and PostgreSQL, with real threads on PostgreSQL."""

import json
from collections import Counter
from datetime import timedelta
from itertools import count
from typing import Any

import pytest
import sqlalchemy as sa

from taskapi.models import IdempotencyKey, utcnow
from tests.support.client import Client, Response
from tests.support.concurrency import at_once
from tests.support.database import Database
from tests.support.environment import configure
from tests.support.tasks import Account, create, insert_task


def post(
    client: Client, owner: Account, body: Any, key: str | None = None, raw: str | None = None
) -> Response:
    headers = {} if key is None else {"idempotency-key": key}
    if raw is not None:
        headers["content-type"] = "application/json"
        return client.post("/api/tasks", body=raw, headers=headers, token=owner.token)
    return client.post("/api/tasks", json_body=body, headers=headers, token=owner.token)


def tasks_of(db: Database, owner: Account) -> int:
    return int(db.scalar("SELECT count(*) FROM task WHERE user_id = :u", u=owner.user_id.hex))


def task_count(db: Database) -> int:
    return int(db.scalar("SELECT count(*) FROM task"))


# ---------------------------------------------------------------------------------------
# Idempotency-Key


def test_a_retry_with_the_same_key_gets_the_first_answer_and_no_second_task(
    client: Client, ada: Account, db: Database
) -> None:
    body = {"title": "Pay rent", "due_at": "2026-07-01T09:00:00+02:00", "priority": "High"}
    first = post(client, ada, body, key="rent-2026-07")
    assert first.status == 201, first.body
    assert "idempotent-replayed" not in first.headers
    again = post(client, ada, body, key="rent-2026-07")

    assert again.status == first.status
    assert again.body == first.body
    assert again.headers["idempotent-replayed"] == "true"
    for header in ("location", "etag", "content-type", "content-length"):
        assert again.headers[header] == first.headers[header], header
    extra = set(again.headers) - set(first.headers)
    assert extra == {"idempotent-replayed"}
    assert task_count(db) == 1
    row = db.rows("SELECT user_id, key, status_code, location, etag FROM idempotency_key")
    assert [tuple(r)[1:] for r in row] == [
        ("rent-2026-07", 201, first.headers["location"], first.headers["etag"])
    ]


def test_the_same_task_spelled_differently_is_the_same_request(
    client: Client, ada: Account, db: Database
) -> None:
    first = post(client, ada, {"title": "Walk"}, key="k1")
    spelled = '{ "priority": "Medium", "title": "  Walk ", "status": "Pending" }'
    again = post(client, ada, None, key="k1", raw=spelled)
    assert (again.status, again.body) == (201, first.body)
    assert task_count(db) == 1


def test_the_same_key_with_another_body_is_422(client: Client, ada: Account, db: Database) -> None:
    post(client, ada, {"title": "One"}, key="same")
    response = post(client, ada, {"title": "Two"}, key="same")
    assert response.status == 422, response.body
    (error,) = response.json()["detail"]
    assert error["type"] == "idempotency_key_reused"
    assert error["loc"] == ["header", "Idempotency-Key"]
    assert "different body" in error["msg"]
    assert task_count(db) == 1


def test_keys_of_different_users_never_collide(
    client: Client, ada: Account, bob: Account, db: Database
) -> None:
    ada_task = post(client, ada, {"title": "Ada's"}, key="shared-key")
    bob_task = post(client, bob, {"title": "Bob's"}, key="shared-key")
    assert (ada_task.status, bob_task.status) == (201, 201)
    assert ada_task.json()["id"] != bob_task.json()["id"]
    assert post(client, ada, {"title": "Ada's"}, key="shared-key").body == ada_task.body
    assert post(client, bob, {"title": "Bob's"}, key="shared-key").body == bob_task.body
    assert (tasks_of(db, ada), tasks_of(db, bob)) == (1, 1)


def test_the_replay_is_the_first_answer_even_after_the_task_changed(
    client: Client, ada: Account
) -> None:
    first = post(client, ada, {"title": "Draft"}, key="draft")
    client.put(first.headers["location"], json_body={"title": "Final"}, token=ada.token)
    again = post(client, ada, {"title": "Draft"}, key="draft")
    assert (again.json()["title"], again.headers["etag"]) == ("Draft", first.headers["etag"])


def test_a_key_older_than_24_hours_creates_afresh(
    client: Client, ada: Account, db: Database
) -> None:
    first = post(client, ada, {"title": "Daily"}, key="daily")
    with db.engine.begin() as connection:
        # Through the model's column type: Python 3.12+ deprecates sqlite3's own adapter.
        connection.execute(
            sa.update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=24, seconds=1))
        )
    # Even with another body: the old record no longer holds the key.
    second = post(client, ada, {"title": "Daily, again"}, key="daily")
    assert second.status == 201, second.body
    assert "idempotent-replayed" not in second.headers
    assert second.json()["id"] != first.json()["id"]
    assert task_count(db) == 2
    assert db.scalar("SELECT count(*) FROM idempotency_key") == 1
    assert post(client, ada, {"title": "Daily, again"}, key="daily").body == second.body


def test_errors_are_not_stored_so_a_corrected_retry_goes_through(
    client: Client, ada: Account, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert post(client, ada, {"title": ""}, key="fix-me").status == 422
    assert post(client, ada, {"title": "Fixed"}, key="fix-me").status == 201
    configure(monkeypatch, max_tasks_per_user="1")
    assert post(client, ada, {"title": "Over"}, key="over").status == 409
    assert db.scalar("SELECT count(*) FROM idempotency_key") == 1
    configure(monkeypatch, max_tasks_per_user="2")
    assert post(client, ada, {"title": "Over"}, key="over").status == 201


def test_creates_without_a_key_store_nothing(client: Client, ada: Account, db: Database) -> None:
    create(client, ada, title="Plain")
    create(client, ada, title="Plain")
    assert (task_count(db), db.scalar("SELECT count(*) FROM idempotency_key")) == (2, 0)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("", id="empty"),
        pytest.param("k" * 256, id="256-characters"),
        pytest.param("caf\u00e9", id="not-ascii"),
        pytest.param("tab\there", id="control-character"),
    ],
)
def test_keys_outside_1_to_255_printable_ascii_are_422(
    client: Client, ada: Account, db: Database, key: str
) -> None:
    response = post(client, ada, {"title": "T"}, key=key)
    assert response.status == 422, response.body
    [error] = response.json()["detail"]
    assert error["loc"] == ["header", "Idempotency-Key"]
    assert error["msg"] == (
        "Idempotency-Key must be 1 to 255 printable ASCII characters (a UUID will do);"
        " leave the header out to create without one"
    )
    assert task_count(db) == 0


@pytest.mark.parametrize("key", ["k" * 255, "x", '"8e03978e-40d5-43e8-bc93-6894a57f9324"', "a b ~"])
def test_keys_of_1_to_255_printable_ascii_are_taken(client: Client, ada: Account, key: str) -> None:
    first = post(client, ada, {"title": "T"}, key=key)
    assert first.status == 201, first.body
    assert post(client, ada, {"title": "T"}, key=key).headers["idempotent-replayed"] == "true"


@pytest.mark.postgres_only
def test_ten_simultaneous_creates_with_one_key_make_one_task(
    client: Client, ada: Account, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One process plays ten containers: each needs a connection of its own.
    configure(monkeypatch, database_pool_size="10")
    body = {"title": "Only once"}
    responses = at_once(10, lambda: post(client, ada, body, key="once"))
    statuses = Counter(response.status for response in responses)
    assert set(statuses) <= {201, 409}, statuses
    created = [r for r in responses if r.status == 201]
    assert len([r for r in created if "idempotent-replayed" not in r.headers]) == 1
    assert {r.body for r in created} == {created[0].body}
    assert task_count(db) == 1
    assert db.scalar("SELECT count(*) FROM idempotency_key") == 1


# ---------------------------------------------------------------------------------------
# Quota


def test_the_quota_counts_the_trash_and_stops_at_its_edge(
    client: Client, ada: Account, bob: Account, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, max_tasks_per_user="3")
    first = create(client, ada, title="1").json()
    create(client, ada, title="2")
    insert_task(ada, "in the trash", deleted_at=utcnow())
    over = post(client, ada, {"title": "4"})
    assert over.status == 409, over.body
    assert over.json() == {"detail": over.json()["detail"]}
    assert "3 tasks, the most allowed" in over.json()["detail"]
    assert "trash" in over.json()["detail"]
    assert tasks_of(db, ada) == 3
    # Deleting moves a task to the trash: it still counts.
    assert client.delete(f"/api/tasks/{first['id']}", token=ada.token).status == 204
    assert post(client, ada, {"title": "4"}).status == 409
    # Another user's quota is their own.
    assert post(client, bob, {"title": "bob's"}).status == 201
    # Removed for good (the maintenance run's purge), the trash frees room.
    with db.engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM task WHERE deleted_at IS NOT NULL"))
    assert post(client, ada, {"title": "4"}).status == 201
    assert post(client, ada, {"title": "5"}).status == 201
    assert post(client, ada, {"title": "6"}).status == 409
    assert tasks_of(db, ada) == 3


def test_the_default_quota_is_10000(db: Database) -> None:
    from taskapi.settings import get_settings

    assert get_settings().max_tasks_per_user == 10000


@pytest.mark.postgres_only
def test_twenty_simultaneous_creates_one_below_the_quota_let_exactly_one_through(
    client: Client, ada: Account, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, max_tasks_per_user="5", database_pool_size="20")
    for n in range(4):
        insert_task(ada, f"seed {n}")
    numbers = count()
    responses = at_once(20, lambda: post(client, ada, {"title": f"racer {next(numbers)}"}))
    statuses = Counter(response.status for response in responses)
    assert statuses == {201: 1, 409: 19}, [json.loads(r.body) for r in responses]
    assert tasks_of(db, ada) == 5


def test_a_users_keys_go_with_the_user(
    client: Client, ada: Account, bob: Account, db: Database
) -> None:
    """Account deletion relies on the foreign key's ON DELETE CASCADE."""
    post(client, ada, {"title": "Ada's"}, key="k")
    post(client, bob, {"title": "Bob's"}, key="k")
    with db.engine.begin() as connection:
        connection.execute(sa.text('DELETE FROM "user" WHERE id = :id'), {"id": ada.user_id.hex})
    assert db.scalar("SELECT count(*) FROM idempotency_key") == 1
    assert db.scalar("SELECT count(*) FROM task") == 1
