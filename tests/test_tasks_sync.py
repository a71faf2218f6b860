"""Tasks for real clients, through the real handler on SQLite and PostgreSQL: emptying the
trash, conditional reads (ETag, If-None-Match, 304), the changes feed, and `remind_at`.
(The feed under concurrent writers: tests/test_tasks_changes_concurrency.py; the batch:
tests/test_tasks_batch.py; sending reminders: tests/test_reminders.py.)"""

import base64
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from taskapi.changes import TASKS, TOMBSTONES
from taskapi.models import utcnow
from tests.support.client import Client, Response
from tests.support.database import Database
from tests.support.environment import configure
from tests.support.functions import load_function
from tests.support.tasks import Account, create

# ---------------------------------------------------------------------------------------
# Emptying the trash


def trashed(client: Client, owner: Account, title: str) -> int:
    task_id: int = create(client, owner, title=title).json()["id"]
    assert client.delete(f"/api/tasks/{task_id}", token=owner.token).status == 204
    return task_id


def trash_ids(client: Client, owner: Account) -> list[int]:
    return [
        item["id"] for item in client.get("/api/tasks/trash", token=owner.token).json()["items"]
    ]


def test_emptying_the_trash_removes_the_callers_deleted_tasks_for_good(
    client: Client, ada: Account, bob: Account, db: Database
) -> None:
    gone = [trashed(client, ada, f"old {n}") for n in range(3)]
    live = create(client, ada, title="live").json()["id"]
    bobs = trashed(client, bob, "bob's")

    response = client.delete("/api/tasks/trash", token=ada.token)

    assert (response.status, response.body) == (204, "")
    assert trash_ids(client, ada) == []
    remaining = {row[0] for row in db.rows("SELECT id FROM task")}
    assert remaining == {live, bobs}
    # Each removed task left its tombstone for the changes feed, and only those.
    tombstones = {row[0] for row in db.rows("SELECT task_id FROM task_tombstone")}
    assert tombstones == set(gone)
    assert client.post(f"/api/tasks/{gone[0]}/restore", token=ada.token).status == 404
    # Nothing left: emptying again is still 204.
    assert client.delete("/api/tasks/trash", token=ada.token).status == 204
    assert trash_ids(client, bob) == [bobs]


def test_one_task_is_removed_from_the_trash(client: Client, ada: Account, bob: Account) -> None:
    first, second = trashed(client, ada, "first"), trashed(client, ada, "second")
    live = create(client, ada, title="live").json()["id"]
    bobs = trashed(client, bob, "bob's")

    assert client.delete(f"/api/tasks/trash/{first}", token=ada.token).status == 204
    assert trash_ids(client, ada) == [second]

    again = client.delete(f"/api/tasks/trash/{first}", token=ada.token)
    assert (again.status, again.json()) == (404, {"detail": "Task not found in the trash"})
    not_trashed = client.delete(f"/api/tasks/trash/{live}", token=ada.token)
    assert (not_trashed.status, not_trashed.json()) == (
        404,
        {"detail": "Task not found in the trash"},
    )
    others = client.delete(f"/api/tasks/trash/{bobs}", token=ada.token)
    assert (others.status, others.json()) == (403, {"detail": "This task belongs to another user"})
    assert trash_ids(client, bob) == [bobs]
    for bad in ("0", "abc", str(2**31)):
        assert client.delete(f"/api/tasks/trash/{bad}", token=ada.token).status == 422
    assert client.delete("/api/tasks/trash").status == 401
    assert client.delete(f"/api/tasks/trash/{second}").status == 401


def test_at_the_quota_emptying_the_trash_frees_room(
    client: Client, ada: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, max_tasks_per_user="2")
    create(client, ada, title="one")
    trashed(client, ada, "two")

    full = client.post("/api/tasks", json_body={"title": "three"}, token=ada.token)

    assert full.status == 409
    detail = full.json()["detail"]
    assert "You hold 2 tasks" in detail
    assert "empty the trash (DELETE /api/tasks/trash)" in detail
    assert client.delete("/api/tasks/trash", token=ada.token).status == 204
    assert client.post("/api/tasks", json_body={"title": "three"}, token=ada.token).status == 201


# ---------------------------------------------------------------------------------------
# Conditional reads


def test_a_task_answers_304_to_its_current_etag(client: Client, ada: Account) -> None:
    created = create(client, ada, title="Cached")
    path, tag = created.headers["location"], created.headers["etag"]

    for header in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        response = client.get(path, headers={"If-None-Match": header}, token=ada.token)
        assert (response.status, response.body) == (304, ""), header
        assert response.headers["etag"] == tag

    assert client.put(path, json_body={"title": "Changed"}, token=ada.token).status == 200
    fresh = client.get(path, headers={"If-None-Match": tag}, token=ada.token)
    assert fresh.status == 200
    assert fresh.json()["title"] == "Changed"
    assert fresh.headers["etag"] != tag


def test_a_304_needs_the_owner_and_a_live_task(client: Client, ada: Account, bob: Account) -> None:
    created = create(client, ada, title="Mine")
    path, tag = created.headers["location"], created.headers["etag"]
    assert client.get(path, headers={"If-None-Match": tag}, token=bob.token).status == 403
    assert client.get(path, headers={"If-None-Match": "*"}).status == 401
    assert client.delete(path, token=ada.token).status == 204
    assert client.get(path, headers={"If-None-Match": "*"}, token=ada.token).status == 404


def test_the_list_has_an_etag_of_its_query_and_content(
    client: Client, ada: Account, bob: Account
) -> None:
    first = create(client, ada, title="first")
    listed = client.get("/api/tasks", token=ada.token)
    tag = listed.headers["etag"]

    same = client.get("/api/tasks", headers={"If-None-Match": tag}, token=ada.token)
    assert (same.status, same.body, same.headers["etag"]) == (304, "", tag)
    # Another query, another page: another tag.
    other_query = client.get("/api/tasks", query={"limit": 5}, token=ada.token)
    assert other_query.headers["etag"] != tag
    assert client.get("/api/tasks", token=bob.token).headers["etag"] != tag

    # Any change to a listed task, a new task or a deletion changes the tag.
    tags = {tag}
    path = first.headers["location"]
    changes: list[Callable[[], Response]] = [
        lambda: client.put(path, json_body={"priority": "High"}, token=ada.token),
        lambda: create(client, ada, title="second"),
        lambda: client.delete(path, token=ada.token),
    ]
    for change in changes:
        change()
        response = client.get("/api/tasks", headers={"If-None-Match": tag}, token=ada.token)
        assert response.status == 200
        assert response.headers["etag"] not in tags
        tags.add(response.headers["etag"])
        tag = response.headers["etag"]


# ---------------------------------------------------------------------------------------
# The changes feed


def changes(client: Client, owner: Account, **query: Any) -> dict[str, Any]:
    response = client.get("/api/tasks/changes", query=query, token=owner.token)
    assert response.status == 200, response.body
    body: dict[str, Any] = response.json()
    return body


def follow(
    client: Client, owner: Account, cursor: str | None, state: dict[int, dict[str, Any]], limit: int
) -> str:
    """Apply the feed's pages from `cursor` to `state` until `has_more` is false."""
    while True:
        page = changes(client, owner, limit=limit, **({"cursor": cursor} if cursor else {}))
        for item in page["items"]:
            state[item["id"]] = item
        for task_id in page["deleted"]:
            state.pop(task_id, None)
        cursor = page["cursor"]
        if not page["has_more"]:
            return cursor


def server_list(client: Client, owner: Account) -> dict[int, dict[str, Any]]:
    items = client.get("/api/tasks", query={"limit": 100}, token=owner.token).json()["items"]
    return {item["id"]: item for item in items}


def test_the_feed_from_the_beginning_lists_every_task_in_change_order(
    client: Client, ada: Account, bob: Account
) -> None:
    ids = [create(client, ada, title=f"t{n}").json()["id"] for n in range(3)]
    create(client, bob, title="bob's")
    client.put(f"/api/tasks/{ids[0]}", json_body={"title": "t0 again"}, token=ada.token)

    page = changes(client, ada)

    # The first task changed last: it comes last, once, as it is now.
    assert [item["id"] for item in page["items"]] == [ids[1], ids[2], ids[0]]
    assert page["items"][2]["title"] == "t0 again"
    assert (page["deleted"], page["has_more"]) == ([], False)
    assert set(page["items"][0]) == set(client.get(f"/api/tasks/{ids[1]}", token=ada.token).json())
    # Nothing since: an empty page with a cursor that stays usable.
    again = changes(client, ada, cursor=page["cursor"])
    assert (again["items"], again["deleted"], again["has_more"]) == ([], [], False)


def test_the_feed_reports_deletions_trash_restores_and_removals(
    client: Client, ada: Account, db: Database
) -> None:
    kept, trashed_id, restored, removed = (
        create(client, ada, title=title).json()["id"]
        for title in ("kept", "trashed", "restored", "removed")
    )
    cursor = changes(client, ada)["cursor"]
    for task_id in (trashed_id, restored, removed):
        assert client.delete(f"/api/tasks/{task_id}", token=ada.token).status == 204
    assert client.post(f"/api/tasks/{restored}/restore", token=ada.token).status == 200
    assert client.delete(f"/api/tasks/trash/{removed}", token=ada.token).status == 204

    page = changes(client, ada, cursor=cursor)

    assert [item["id"] for item in page["items"]] == [restored]
    assert sorted(page["deleted"]) == sorted([trashed_id, removed])
    assert kept not in page["deleted"]


def test_following_the_feed_in_small_pages_reproduces_the_list(
    client: Client, ada: Account
) -> None:
    state: dict[int, dict[str, Any]] = {}
    cursor = follow(client, ada, None, state, limit=2)
    ids = [create(client, ada, title=f"t{n}").json()["id"] for n in range(7)]
    client.delete(f"/api/tasks/{ids[1]}", token=ada.token)
    client.patch(f"/api/tasks/{ids[2]}/complete", token=ada.token)
    client.delete(f"/api/tasks/{ids[3]}", token=ada.token)
    client.post(f"/api/tasks/{ids[3]}/restore", token=ada.token)
    client.delete(f"/api/tasks/{ids[4]}", token=ada.token)
    client.delete("/api/tasks/trash", token=ada.token)

    first = changes(client, ada, cursor=cursor, limit=2)
    assert first["has_more"] is True
    assert len(first["items"]) + len(first["deleted"]) <= 2
    cursor = follow(client, ada, cursor, state, limit=2)

    assert state == server_list(client, ada)
    assert changes(client, ada, cursor=cursor) == {
        "items": [],
        "deleted": [],
        "cursor": cursor,
        "has_more": False,
    }
    # From the beginning, in one page, the same.
    fresh: dict[int, dict[str, Any]] = {}
    follow(client, ada, None, fresh, limit=500)
    assert fresh == state


def encoded(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    ["not-a-cursor", "", "!!!", encoded("1"), encoded("x.0"), encoded("-1.0"), encoded(" 1.0")],
)
def test_a_malformed_cursor_is_422(client: Client, ada: Account, cursor: str) -> None:
    response = client.get("/api/tasks/changes", query={"cursor": cursor}, token=ada.token)
    assert response.status == 422, response.body
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", "cursor"]


def test_a_cursor_past_the_users_changes_is_422(client: Client, ada: Account, bob: Account) -> None:
    for n in range(3):
        create(client, ada, title=f"t{n}")
    adas = changes(client, ada)["cursor"]
    # Bob has made no change: Ada's cursor names changes he never had.
    response = client.get("/api/tasks/changes", query={"cursor": adas}, token=bob.token)
    assert response.status == 422
    assert response.json()["detail"][0]["type"] == "cursor_unknown"
    far = client.get("/api/tasks/changes", query={"cursor": encoded("99.0")}, token=ada.token)
    assert far.status == 422


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 501}, {"cursor": "x" * 201}])
def test_the_feed_refuses_bad_pages(client: Client, ada: Account, query: Any) -> None:
    assert client.get("/api/tasks/changes", query=query, token=ada.token).status == 422


def test_the_feed_needs_a_live_session(client: Client, ada: Account) -> None:
    assert client.get("/api/tasks/changes").status == 401


def test_a_cursor_older_than_the_kept_history_is_410(
    client: Client, ada: Account, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, changes_retention_days="30")
    old, young = create(client, ada, title="old").json()["id"], create(client, ada, title="y")
    young_id = young.json()["id"]
    before = changes(client, ada)["cursor"]
    client.delete(f"/api/tasks/{old}", token=ada.token)
    client.delete("/api/tasks/trash", token=ada.token)
    between = changes(client, ada, cursor=before)
    assert between["deleted"] == [old]
    # The tombstone ages past the retention; the maintenance run removes it.
    with db.engine.begin() as connection:
        connection.execute(sa.update(TOMBSTONES).values(removed_at=utcnow() - timedelta(days=31)))
    summary = load_function("maintenance").handler({}, None)
    assert summary["deleted"]["tombstones"] == 1

    expired = client.get("/api/tasks/changes", query={"cursor": before}, token=ada.token)
    assert expired.status == 410
    assert "start again without a cursor" in expired.json()["detail"]
    # A cursor from after the deletion is still good, and so is starting again.
    assert changes(client, ada, cursor=between["cursor"])["items"] == []
    state: dict[int, dict[str, Any]] = {}
    cursor = follow(client, ada, None, state, limit=1)
    assert set(state) == {young_id}
    assert changes(client, ada, cursor=cursor)["has_more"] is False


def test_the_maintenance_purge_leaves_tombstones_the_feed_reports(
    client: Client, ada: Account, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, trash_retention_days="7")
    task_id = create(client, ada, title="old").json()["id"]
    cursor = changes(client, ada)["cursor"]
    client.delete(f"/api/tasks/{task_id}", token=ada.token)
    with db.engine.begin() as connection:
        connection.execute(sa.update(TASKS).values(deleted_at=utcnow() - timedelta(days=8)))
    assert load_function("maintenance").handler({}, None)["deleted"]["trash"] == 1
    assert db.scalar("SELECT count(*) FROM task") == 0
    assert changes(client, ada, cursor=cursor)["deleted"] == [task_id]


# ---------------------------------------------------------------------------------------
# remind_at on tasks


def reminder_of(db: Database, task_id: int) -> tuple[Any, Any]:
    rows = db.rows("SELECT remind_at, reminded_at FROM task WHERE id = :id", id=task_id)
    remind_at, reminded_at = tuple(rows[0])
    return remind_at, reminded_at


def test_remind_at_is_set_changed_and_cleared(client: Client, ada: Account, db: Database) -> None:
    created = create(client, ada, title="Call", remind_at="2030-01-01T09:00:00+01:00")
    task = created.json()
    path = created.headers["location"]
    assert task["remind_at"] == "2030-01-01T08:00:00Z"
    # Mark it sent, as a reminders run would: a new time re-arms it.
    db_set(db, "UPDATE task SET reminded_at = remind_at")
    moved = client.put(path, json_body={"remind_at": "2030-01-02T08:00:00Z"}, token=ada.token)
    assert moved.json()["remind_at"] == "2030-01-02T08:00:00Z"
    assert reminder_of(db, task["id"])[1] is None

    assert (
        client.put(path, json_body={"remind_at": None}, token=ada.token).json()["remind_at"] is None
    )
    client.put(path, json_body={"remind_at": "2030-01-03T08:00:00Z"}, token=ada.token)
    completed = client.patch(f"{path}/complete", token=ada.token).json()
    assert completed["remind_at"] is None


@pytest.mark.parametrize(
    "finish",
    [
        lambda c, p, t: c.put(p, json_body={"status": "Completed"}, token=t),
        lambda c, p, t: c.delete(p, token=t),
    ],
    ids=["completed by update", "deleted"],
)
def test_completion_and_deletion_cancel_the_reminder(
    client: Client, ada: Account, db: Database, finish: Any
) -> None:
    created = create(client, ada, title="Call", remind_at="2030-01-01T09:00:00Z")
    finish(client, created.headers["location"], ada.token)
    assert reminder_of(db, created.json()["id"])[0] is None


def test_a_completed_task_is_created_without_a_reminder(client: Client, ada: Account) -> None:
    task = create(client, ada, title="Done", status="Completed", remind_at="2030-01-01T09:00:00Z")
    assert task.json()["remind_at"] is None


@pytest.mark.parametrize("value", ["2030-01-01T09:00:00", "tomorrow", 1767258000])
def test_remind_at_needs_a_timestamp_with_an_offset(
    client: Client, ada: Account, value: Any
) -> None:
    response = client.post(
        "/api/tasks", json_body={"title": "x", "remind_at": value}, token=ada.token
    )
    assert response.status == 422
    assert response.json()["detail"][0]["loc"] == ["body", "remind_at"]


def db_set(db: Database, sql: str) -> None:
    with db.engine.begin() as connection:
        connection.exec_driver_sql(sql)
