"""The trash: listing deleted tasks and restoring them, through the real handler on SQLite
and PostgreSQL. (Their removal after TRASH_RETENTION_DAYS: tests/test_maintenance.py.)"""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.client import Client, Response
from tests.support.database import Database
from tests.support.tasks import Account, create, insert_task


def trash(client: Client, owner: Account, **query: Any) -> dict[str, Any]:
    response = client.get("/api/tasks/trash", query=query, token=owner.token)
    assert response.status == 200, response.body
    body: dict[str, Any] = response.json()
    return body


def trash_ids(client: Client, owner: Account, **query: Any) -> list[int]:
    return [item["id"] for item in trash(client, owner, **query)["items"]]


def restore(client: Client, owner: Account, task_id: int, **headers: str) -> Response:
    return client.post(f"/api/tasks/{task_id}/restore", headers=headers, token=owner.token)


START = datetime(2026, 5, 1, tzinfo=UTC)


def test_the_trash_lists_the_callers_deleted_tasks_newest_deletion_first(
    client: Client, ada: Account, bob: Account
) -> None:
    old = insert_task(ada, "old", deleted_at=START)
    newest = insert_task(ada, "newest", deleted_at=START + timedelta(days=2))
    middle = insert_task(ada, "middle", deleted_at=START + timedelta(days=1))
    insert_task(ada, "live")
    insert_task(bob, "bob's", deleted_at=START + timedelta(days=3))
    body = trash(client, ada)
    assert [item["id"] for item in body["items"]] == [newest, middle, old]
    assert (body["total"], body["skip"], body["limit"]) == (3, 0, 20)
    first = body["items"][0]
    assert first["deleted_at"] == "2026-05-03T00:00:00Z"
    assert first["etag"] == f'"{newest}-1"'
    assert {"title", "status", "priority", "due_at", "completed_at"} <= set(first)


def test_trash_pages_break_ties_by_id(client: Client, ada: Account) -> None:
    same = [insert_task(ada, f"t{n}", deleted_at=START) for n in range(5)]
    newest_first = same[::-1]
    assert trash_ids(client, ada, limit=2) == newest_first[:2]
    assert trash_ids(client, ada, skip=2, limit=2) == newest_first[2:4]
    last = trash(client, ada, skip=4, limit=2)
    assert ([i["id"] for i in last["items"]], last["total"]) == (newest_first[4:], 5)
    past = trash(client, ada, skip=5, limit=2)
    assert (past["items"], past["total"]) == ([], 5)


def test_an_empty_trash(client: Client, ada: Account) -> None:
    insert_task(ada, "live")
    assert trash(client, ada) == {"items": [], "total": 0, "skip": 0, "limit": 20}


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 101}, {"skip": -1}, {"skip": 2**31}])
def test_the_trash_refuses_bad_pages(client: Client, ada: Account, query: Any) -> None:
    response = client.get("/api/tasks/trash", query=query, token=ada.token)
    assert response.status == 422, response.body


def test_delete_then_restore_brings_the_task_back_with_a_new_version(
    client: Client, ada: Account, db: Database
) -> None:
    created = create(client, ada, title="Oops", due_at="2026-09-01T00:00:00Z")
    task = created.json()
    path = created.headers["location"]
    assert client.delete(path, token=ada.token).status == 204
    # In the trash, and nowhere else.
    assert client.get(path, token=ada.token).status == 404
    assert client.get("/api/tasks", token=ada.token).json()["total"] == 0
    assert trash_ids(client, ada) == [task["id"]]

    restored = restore(client, ada, task["id"])
    assert restored.status == 200, restored.body
    body = restored.json()
    assert restored.headers["etag"] == f'"{task["id"]}-3"'  # created 1, deleted 2, restored 3
    assert body == {**task, "updated_at": body["updated_at"]}
    assert body["updated_at"] > task["updated_at"]
    assert db.scalar("SELECT deleted_at FROM task WHERE id = :id", id=task["id"]) is None
    read = client.get(path, token=ada.token)
    assert (read.status, read.json(), read.headers["etag"]) == (200, body, restored.headers["etag"])
    assert trash_ids(client, ada) == []
    # Not in the trash any more: a second restore is 404.
    again = restore(client, ada, task["id"])
    assert (again.status, again.json()) == (404, {"detail": "Task not found in the trash"})


def test_restore_honours_if_match(client: Client, ada: Account, db: Database) -> None:
    created = create(client, ada, title="Guarded")
    task_id = created.json()["id"]
    client.delete(created.headers["location"], token=ada.token)
    # The ETag from before the deletion is stale: deleting was a write.
    stale = restore(client, ada, task_id, **{"if-match": created.headers["etag"]})
    assert stale.status == 412, stale.body
    assert trash_ids(client, ada) == [task_id]
    assert db.scalar("SELECT version FROM task WHERE id = :id", id=task_id) == 2
    # The trash lists the ETag that matches.
    (item,) = trash(client, ada)["items"]
    matching = restore(client, ada, task_id, **{"if-match": item["etag"]})
    assert matching.status == 200, matching.body
    assert matching.headers["etag"] == f'"{task_id}-3"'


def test_restore_with_if_match_any(client: Client, ada: Account) -> None:
    task_id = insert_task(ada, "any", deleted_at=START)
    assert restore(client, ada, task_id, **{"if-match": "*"}).status == 200


def test_restore_of_what_is_not_in_the_callers_trash(
    client: Client, ada: Account, bob: Account, db: Database
) -> None:
    live = insert_task(ada, "live")
    bobs_trashed = insert_task(bob, "bob's", deleted_at=START)
    missing = restore(client, ada, 2**31 - 1)
    assert (missing.status, missing.json()) == (404, {"detail": "Task not found in the trash"})
    assert restore(client, ada, live).status == 404
    foreign = restore(client, ada, bobs_trashed)
    assert (foreign.status, foreign.json()) == (
        403,
        {"detail": "This task belongs to another user"},
    )
    assert db.scalar("SELECT deleted_at FROM task WHERE id = :id", id=bobs_trashed) is not None
    assert restore(client, ada, 0).status == 422
    assert client.post(f"/api/tasks/{live}/restore").status == 401
    assert client.get("/api/tasks/trash").status == 401


def test_trash_in_a_longer_path_is_a_non_integer_id(client: Client, ada: Account) -> None:
    """Only `/api/tasks/trash` itself is the trash (its other methods: tests/test_allow.py);
    in a longer path `trash` stands where a task id does, and is no integer."""
    for method, path in (
        ("POST", "/api/tasks/trash/restore"),
        ("PATCH", "/api/tasks/trash/complete"),
    ):
        response = client.request(method, path, token=ada.token)
        assert response.status == 422, response.body
        assert response.json()["detail"][0]["loc"] == ["path", "task_id"]


def test_trashed_tasks_cannot_be_changed(client: Client, ada: Account) -> None:
    task_id = insert_task(ada, "trashed", deleted_at=START)
    path = f"/api/tasks/{task_id}"
    assert client.put(path, json_body={"title": "x"}, token=ada.token).status == 404
    assert client.patch(f"{path}/complete", token=ada.token).status == 404
    assert client.delete(path, token=ada.token).status == 404
