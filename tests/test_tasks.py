"""The tasks function through its real handler, on SQLite and PostgreSQL."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import Session

from taskapi.db import get_engine
from taskapi.models import AuthSession, Task, User, utcnow
from tests.support.client import Client, Response
from tests.support.database import Database
from tests.support.tasks import Account, create, insert_task, make_account


def stored(task_id: int) -> Task:
    """The task's row as the database now holds it."""
    with Session(get_engine()) as session:
        task = session.get(Task, task_id)
        assert task is not None
        return task


def parse_time(value: str) -> datetime:
    """An API timestamp: ISO 8601 in UTC with an explicit offset (pydantic writes `Z`)."""
    assert value.endswith(("Z", "+00:00")), value
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0)
    return parsed


def assert_validation_error(response: Response) -> None:
    assert response.status == 422, response.body
    detail = response.json()["detail"]
    assert isinstance(detail, list)
    assert detail


# ---------------------------------------------------------------------------------------
# POST /api/tasks


def test_create_answers_201_with_location_etag_and_the_stored_task(
    client: Client, ada: Account
) -> None:
    before = utcnow()
    response = client.post(
        "/api/tasks",
        json_body={"title": "  Write report  ", "description": "Q3 numbers", "priority": "High"},
        token=ada.token,
    )
    assert response.status == 201, response.body
    assert type(response.status) is int  # a plain int for the Lambda runtime's JSON
    body = response.json()
    task_id = body["id"]
    assert isinstance(task_id, int)
    assert response.headers["location"] == f"/api/tasks/{task_id}"
    assert response.headers["etag"] == f'"{task_id}-1"'
    assert response.headers["content-type"] == "application/json"
    assert body == {
        "id": task_id,
        "user_id": str(ada.user_id),
        "title": "Write report",
        "description": "Q3 numbers",
        "status": "Pending",
        "priority": "High",
        "created_at": body["created_at"],
        "updated_at": body["created_at"],
        "completed_at": None,
        "due_at": None,
        "remind_at": None,
    }
    assert before <= parse_time(body["created_at"]) <= utcnow()

    row = stored(task_id)
    assert (row.user_id, row.title, row.description) == (ada.user_id, "Write report", "Q3 numbers")
    assert (row.status, row.priority, row.version) == ("Pending", "High", 1)
    assert row.created_at == parse_time(body["created_at"])
    assert (row.completed_at, row.deleted_at) == (None, None)


def test_create_uses_the_defaults(client: Client, ada: Account) -> None:
    body = create(client, ada, title="Minimal").json()
    assert (body["description"], body["status"], body["priority"]) == (None, "Pending", "Medium")


def test_create_completed_sets_completed_at(client: Client, ada: Account) -> None:
    body = create(client, ada, title="Done already", status="Completed").json()
    assert body["status"] == "Completed"
    assert parse_time(body["completed_at"]) == parse_time(body["created_at"])
    assert stored(body["id"]).completed_at == parse_time(body["completed_at"])


def test_create_accepts_the_longest_title_and_description(client: Client, ada: Account) -> None:
    body = create(client, ada, title=" " + "t" * 200 + " ", description="d" * 5000).json()
    assert (len(body["title"]), len(body["description"])) == (200, 5000)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="no-title"),
        pytest.param({"title": ""}, id="empty-title"),
        pytest.param({"title": "   "}, id="blank-title"),
        pytest.param({"title": None}, id="null-title"),
        pytest.param({"title": 42}, id="number-title"),
        pytest.param({"title": "t" * 201}, id="long-title"),
        pytest.param({"title": "ok", "description": "d" * 5001}, id="long-description"),
        pytest.param({"title": "ok", "status": "Done"}, id="unknown-status"),
        pytest.param({"title": "ok", "status": "pending"}, id="lower-case-status"),
        pytest.param({"title": "ok", "status": None}, id="null-status"),
        pytest.param({"title": "ok", "priority": "Urgent"}, id="unknown-priority"),
        pytest.param({"title": "ok", "priority": None}, id="null-priority"),
        pytest.param({"title": "ok", "owner": "me"}, id="unknown-field"),
        pytest.param({"title": "ok", "user_id": "x"}, id="user-id-field"),
        pytest.param({"title": "ok", "completed_at": None}, id="completed-at-field"),
        pytest.param({"title": "nul\x00byte"}, id="nul-in-title"),
        pytest.param({"title": "ok", "description": "nul\x00"}, id="nul-in-description"),
        pytest.param(["title"], id="array-body"),
    ],
)
def test_create_rejects_invalid_bodies(
    client: Client, ada: Account, db: Database, body: Any
) -> None:
    response = client.post("/api/tasks", json_body=body, token=ada.token)
    assert_validation_error(response)
    assert db.scalar("SELECT count(*) FROM task") == 0


@pytest.mark.parametrize(
    "raw",
    [
        "{",
        "",
        "not json",
        '{"title": "x",}',
        '{"title": "lone \\ud800 surrogate"}',
    ],
)
def test_create_rejects_malformed_json(
    client: Client, ada: Account, db: Database, raw: str
) -> None:
    response = client.post(
        "/api/tasks", body=raw, headers={"content-type": "application/json"}, token=ada.token
    )
    assert_validation_error(response)
    assert db.scalar("SELECT count(*) FROM task") == 0


# ---------------------------------------------------------------------------------------
# GET /api/tasks/{id}


def test_read_returns_the_task_with_its_etag(client: Client, ada: Account) -> None:
    created = create(client, ada, title="Read me", description="text").json()
    response = client.get(f"/api/tasks/{created['id']}", token=ada.token)
    assert response.status == 200
    assert response.json() == created
    assert response.headers["etag"] == f'"{created["id"]}-1"'


def test_read_a_missing_task_is_404(client: Client, ada: Account) -> None:
    response = client.get("/api/tasks/999999", token=ada.token)
    assert (response.status, response.json()) == (404, {"detail": "Task not found"})


@pytest.mark.parametrize(
    "task_id",
    ["abc", "1.5", "0", "-1", str(2**31), str(2**63), str(2**64 + 1), "1e3", "%20"],
)
def test_ids_that_cannot_exist_are_422(client: Client, ada: Account, task_id: str) -> None:
    for method, suffix in (("GET", ""), ("PUT", ""), ("DELETE", ""), ("PATCH", "/complete")):
        response = client.request(
            method, f"/api/tasks/{task_id}{suffix}", json_body={"title": "x"}, token=ada.token
        )
        assert_validation_error(response)
        assert response.json()["detail"][0]["loc"] == ["path", "task_id"]


def test_the_largest_id_is_a_plain_404(client: Client, ada: Account) -> None:
    response = client.get(f"/api/tasks/{2**31 - 1}", token=ada.token)
    assert (response.status, response.json()) == (404, {"detail": "Task not found"})


# ---------------------------------------------------------------------------------------
# Ownership, deletion and authentication, for every route that takes an id

ID_ROUTES = [
    pytest.param("GET", "", None, id="get"),
    pytest.param("PUT", "", {"title": "Stolen"}, id="put"),
    pytest.param("DELETE", "", None, id="delete"),
    pytest.param("PATCH", "/complete", None, id="complete"),
]


@pytest.mark.parametrize(("method", "suffix", "body"), ID_ROUTES)
def test_another_users_task_is_403_and_left_alone(
    client: Client, ada: Account, bob: Account, method: str, suffix: str, body: Any
) -> None:
    task_id = create(client, ada, title="Ada's").json()["id"]
    response = client.request(
        method, f"/api/tasks/{task_id}{suffix}", json_body=body, token=bob.token
    )
    assert (response.status, response.json()) == (
        403,
        {"detail": "This task belongs to another user"},
    )
    row = stored(task_id)
    assert (row.title, row.status, row.deleted_at, row.version) == ("Ada's", "Pending", None, 1)


@pytest.mark.parametrize(("method", "suffix", "body"), ID_ROUTES)
def test_a_deleted_task_is_404(
    client: Client, ada: Account, method: str, suffix: str, body: Any
) -> None:
    task_id = create(client, ada, title="Gone").json()["id"]
    assert client.delete(f"/api/tasks/{task_id}", token=ada.token).status == 204
    response = client.request(
        method, f"/api/tasks/{task_id}{suffix}", json_body=body, token=ada.token
    )
    assert (response.status, response.json()) == (404, {"detail": "Task not found"})
    assert stored(task_id).title == "Gone"


ALL_ROUTES = [
    pytest.param("GET", "/api/tasks", None, id="list"),
    pytest.param("POST", "/api/tasks", {"title": "x"}, id="create"),
    pytest.param("GET", "/api/tasks/1", None, id="get"),
    pytest.param("PUT", "/api/tasks/1", {"title": "x"}, id="put"),
    pytest.param("DELETE", "/api/tasks/1", None, id="delete"),
    pytest.param("PATCH", "/api/tasks/1/complete", None, id="complete"),
]


@pytest.mark.parametrize(("method", "path", "body"), ALL_ROUTES)
@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="no-header"),
        pytest.param("Bearer not-a-jwt", id="garbage"),
        pytest.param("Basic YWRhOnNlY3JldA==", id="basic"),
        pytest.param("Bearer ", id="empty"),
        pytest.param("refresh", id="refresh-token"),
        pytest.param("tampered", id="tampered"),
        pytest.param("revoked", id="revoked-session"),
    ],
)
def test_routes_refuse_requests_without_a_valid_access_token(
    client: Client,
    ada: Account,
    db: Database,
    method: str,
    path: str,
    body: Any,
    authorization: str | None,
) -> None:
    insert_task(ada, "Ada's", id=1)
    headers = {}
    if authorization == "refresh":
        refresh = make_account("r@example.com", token_type="refresh")
        headers["authorization"] = f"Bearer {refresh.token}"
    elif authorization == "tampered":
        headers["authorization"] = f"Bearer {ada.token[:-2]}xx"
    elif authorization == "revoked":
        with Session(get_engine()) as session:
            login = session.get(AuthSession, ada.session_id)
            assert login is not None
            login.revoked_at = utcnow()
            session.add(login)
            session.commit()
        headers["authorization"] = f"Bearer {ada.token}"
    elif authorization is not None:
        headers["authorization"] = authorization
    response = client.request(method, path, json_body=body, headers=headers)
    assert response.status == 401, response.body
    assert response.headers["www-authenticate"] == "Bearer"
    assert isinstance(response.json()["detail"], str)
    row = stored(1)
    assert (row.title, row.version, row.deleted_at) == ("Ada's", 1, None)
    assert db.scalar("SELECT count(*) FROM task") == 1


# The reads that check the session inside their own statement (`LIVE_SESSION`): each
# way a session or user can fail, with and without a row for the statement to find.
SESSION_CHECKED_READS = [
    pytest.param("/api/tasks", {}, id="list"),
    pytest.param("/api/tasks", {"status": "Completed"}, id="list-without-rows"),
    pytest.param("/api/tasks", {"skip": "50"}, id="list-past-the-end"),
    pytest.param("/api/tasks/trash", {}, id="trash"),
    pytest.param("/api/tasks/{own}", {}, id="own-task"),
    pytest.param("/api/tasks/{other}", {}, id="another-users-task"),
    pytest.param("/api/tasks/999999", {}, id="no-such-task"),
]


@pytest.mark.parametrize(("path", "query"), SESSION_CHECKED_READS)
@pytest.mark.parametrize(
    ("failure", "detail"),
    [
        pytest.param("revoked", "Session expired or revoked", id="revoked"),
        pytest.param("expired", "Session expired or revoked", id="expired"),
        pytest.param("deleted", "Session expired or revoked", id="session-deleted"),
        pytest.param("inactive", "Account is inactive", id="inactive-user"),
    ],
)
def test_reads_refuse_a_dead_session_or_an_inactive_user(
    client: Client, ada: Account, path: str, query: dict[str, str], failure: str, detail: str
) -> None:
    own = insert_task(ada, "Ada's")
    trashed = create(client, ada, title="Trashed").json()["id"]
    assert client.delete(f"/api/tasks/{trashed}", token=ada.token).status == 204
    other = insert_task(make_account("bob@example.com"), "Bob's")
    path = path.format(own=own, other=other)
    assert client.get(path, query=query, token=ada.token).status in (200, 403, 404)
    with Session(get_engine()) as session:
        login = session.get(AuthSession, ada.session_id)
        assert login is not None
        if failure == "revoked":
            login.revoked_at = utcnow()
        elif failure == "expired":
            login.expires_at = utcnow() - timedelta(seconds=1)
        elif failure == "deleted":
            session.delete(login)
        else:
            user = session.get(User, ada.user_id)
            assert user is not None
            user.is_active = False
            session.add(user)
        if failure != "deleted":
            session.add(login)
        session.commit()
    response = client.get(path, query=query, token=ada.token)
    assert (response.status, response.json()) == (401, {"detail": detail})
    assert response.headers["www-authenticate"] == "Bearer"


# ---------------------------------------------------------------------------------------
# PUT /api/tasks/{id}


def test_put_changes_only_the_given_fields(client: Client, ada: Account) -> None:
    created = create(client, ada, title="Old", description="keep me", priority="Low").json()
    response = client.put(
        f"/api/tasks/{created['id']}", json_body={"title": " New "}, token=ada.token
    )
    assert response.status == 200, response.body
    body = response.json()
    assert body == {
        **created,
        "title": "New",
        "updated_at": body["updated_at"],
    }
    assert parse_time(body["updated_at"]) > parse_time(created["updated_at"])
    assert response.headers["etag"] == f'"{created["id"]}-2"'
    row = stored(created["id"])
    assert (row.title, row.description, row.priority, row.version) == ("New", "keep me", "Low", 2)
    assert row.updated_at == parse_time(body["updated_at"])
    assert row.created_at == parse_time(created["created_at"])


def test_put_can_clear_the_description(client: Client, ada: Account) -> None:
    task_id = create(client, ada, title="T", description="text").json()["id"]
    response = client.put(f"/api/tasks/{task_id}", json_body={"description": None}, token=ada.token)
    assert (response.status, response.json()["description"]) == (200, None)
    assert stored(task_id).description is None


def test_status_drives_completed_at(client: Client, ada: Account) -> None:
    task_id = create(client, ada, title="T").json()["id"]
    path = f"/api/tasks/{task_id}"

    done = client.put(path, json_body={"status": "Completed"}, token=ada.token).json()
    completed_at = parse_time(done["completed_at"])
    assert completed_at == parse_time(done["updated_at"])

    # Setting Completed again (with another change) keeps the first completion time.
    again = client.put(
        path, json_body={"status": "Completed", "priority": "High"}, token=ada.token
    ).json()
    assert parse_time(again["completed_at"]) == completed_at
    assert parse_time(again["updated_at"]) > completed_at

    reopened = client.put(path, json_body={"status": "In Progress"}, token=ada.token).json()
    assert (reopened["status"], reopened["completed_at"]) == ("In Progress", None)
    row = stored(task_id)
    assert (row.status, row.completed_at, row.version) == ("In Progress", None, 4)


def test_put_without_changes_writes_nothing(client: Client, ada: Account) -> None:
    created = create(client, ada, title="Same", priority="High").json()
    path = f"/api/tasks/{created['id']}"
    for body in ({}, {"title": "Same", "priority": "High"}, {"description": None}):
        response = client.put(path, json_body=body, token=ada.token)
        assert (response.status, response.json()) == (200, created)
        assert response.headers["etag"] == f'"{created["id"]}-1"'
    stale = client.put(path, json_body={}, headers={"if-match": '"0-0"'}, token=ada.token)
    assert stale.status == 412
    assert stored(created["id"]).version == 1


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"title": None}, id="null-title"),
        pytest.param({"title": ""}, id="empty-title"),
        pytest.param({"title": "  "}, id="blank-title"),
        pytest.param({"title": "t" * 201}, id="long-title"),
        pytest.param({"description": "d" * 5001}, id="long-description"),
        pytest.param({"status": None}, id="null-status"),
        pytest.param({"status": "Archived"}, id="unknown-status"),
        pytest.param({"priority": None}, id="null-priority"),
        pytest.param({"priority": "Critical"}, id="unknown-priority"),
        pytest.param({"title": "ok", "version": 7}, id="unknown-field"),
        pytest.param({"deleted_at": None}, id="deleted-at-field"),
        pytest.param({"title": "nul\x00"}, id="nul-in-title"),
        pytest.param("title", id="string-body"),
    ],
)
def test_put_rejects_invalid_bodies(client: Client, ada: Account, body: Any) -> None:
    created = create(client, ada, title="Untouched").json()
    response = client.put(f"/api/tasks/{created['id']}", json_body=body, token=ada.token)
    assert_validation_error(response)
    row = stored(created["id"])
    assert (row.title, row.status, row.priority, row.version) == (
        "Untouched",
        "Pending",
        "Medium",
        1,
    )


# ---------------------------------------------------------------------------------------
# If-Match and ETags


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        pytest.param("PUT", "", {"title": "Changed"}, id="put"),
        pytest.param("DELETE", "", None, id="delete"),
        pytest.param("PATCH", "/complete", None, id="complete"),
    ],
)
def test_a_stale_if_match_is_412_and_changes_nothing(
    client: Client, ada: Account, method: str, suffix: str, body: Any
) -> None:
    task_id = create(client, ada, title="Original").json()["id"]
    old_etag = f'"{task_id}-1"'
    assert client.put(f"/api/tasks/{task_id}", json_body={"priority": "Low"}, token=ada.token)
    for if_match in (old_etag, f"W/{old_etag}", '"something-else"', "2", f'"{task_id}-3"'):
        response = client.request(
            method,
            f"/api/tasks/{task_id}{suffix}",
            json_body=body,
            headers={"if-match": if_match},
            token=ada.token,
        )
        assert response.status == 412, (if_match, response.body)
        assert response.json() == {
            "detail": "The task has changed: If-Match does not match its current ETag"
        }
    row = stored(task_id)
    assert (row.title, row.status, row.priority, row.deleted_at, row.version) == (
        "Original",
        "Pending",
        "Low",
        None,
        2,
    )


@pytest.mark.parametrize(
    ("method", "suffix", "body", "status"),
    [
        pytest.param("PUT", "", {"title": "Changed"}, 200, id="put"),
        pytest.param("DELETE", "", None, 204, id="delete"),
        pytest.param("PATCH", "/complete", None, 200, id="complete"),
    ],
)
@pytest.mark.parametrize("form", ["exact", "star", "list"])
def test_a_matching_if_match_lets_the_write_through(
    client: Client, ada: Account, method: str, suffix: str, body: Any, status: int, form: str
) -> None:
    task_id = create(client, ada, title="Original").json()["id"]
    current = client.get(f"/api/tasks/{task_id}", token=ada.token).headers["etag"]
    if_match = {"exact": current, "star": "*", "list": f'"{task_id}-9", {current}'}[form]
    response = client.request(
        method,
        f"/api/tasks/{task_id}{suffix}",
        json_body=body,
        headers={"if-match": if_match},
        token=ada.token,
    )
    assert response.status == status, response.body
    assert stored(task_id).version == 2
    if status == 200:
        assert response.headers["etag"] == f'"{task_id}-2"'
        assert client.get(f"/api/tasks/{task_id}", token=ada.token).headers["etag"] == (
            f'"{task_id}-2"'
        )


def test_every_write_bumps_the_version_and_the_etag(client: Client, ada: Account) -> None:
    task_id = create(client, ada, title="v1").json()["id"]
    path = f"/api/tasks/{task_id}"
    etags = [client.get(path, token=ada.token).headers["etag"]]
    etags.append(client.put(path, json_body={"title": "v2"}, token=ada.token).headers["etag"])
    etags.append(client.patch(f"{path}/complete", token=ada.token).headers["etag"])
    etags.append(client.put(path, json_body={"status": "Pending"}, token=ada.token).headers["etag"])
    assert etags == [f'"{task_id}-{version}"' for version in (1, 2, 3, 4)]
    assert client.delete(path, token=ada.token).status == 204
    assert stored(task_id).version == 5


# ---------------------------------------------------------------------------------------
# DELETE /api/tasks/{id}


def test_delete_is_soft(client: Client, ada: Account, db: Database) -> None:
    created = create(client, ada, title="Soon gone").json()
    keep = create(client, ada, title="Stays").json()
    before = utcnow()
    response = client.delete(f"/api/tasks/{created['id']}", token=ada.token)
    assert (response.status, response.body) == (204, "")
    assert "content-type" not in response.headers

    row = stored(created["id"])
    assert row.deleted_at is not None
    assert before <= row.deleted_at <= utcnow()
    assert row.deleted_at.utcoffset() == timedelta(0)
    assert (row.title, row.version, row.updated_at) == ("Soon gone", 2, row.deleted_at)
    assert db.scalar("SELECT count(*) FROM task") == 2

    assert client.get(f"/api/tasks/{created['id']}", token=ada.token).status == 404
    listed = client.get("/api/tasks", token=ada.token).json()
    assert ([item["id"] for item in listed["items"]], listed["total"]) == ([keep["id"]], 1)
    again = client.delete(f"/api/tasks/{created['id']}", token=ada.token)
    assert (again.status, again.json()) == (404, {"detail": "Task not found"})


# ---------------------------------------------------------------------------------------
# PATCH /api/tasks/{id}/complete


def test_complete_is_idempotent(client: Client, ada: Account) -> None:
    created = create(client, ada, title="Finish me", status="In Progress").json()
    path = f"/api/tasks/{created['id']}/complete"
    first = client.patch(path, token=ada.token)
    assert first.status == 200, first.body
    body = first.json()
    assert body == {
        **created,
        "status": "Completed",
        "completed_at": body["completed_at"],
        "updated_at": body["completed_at"],
    }
    assert parse_time(body["completed_at"]) > parse_time(created["updated_at"])
    assert first.headers["etag"] == f'"{created["id"]}-2"'

    second = client.patch(path, token=ada.token)
    assert (second.status, second.json()) == (200, body)
    assert second.headers["etag"] == first.headers["etag"]
    row = stored(created["id"])
    assert (row.status, row.completed_at, row.version) == (
        "Completed",
        parse_time(body["completed_at"]),
        2,
    )


def test_complete_ignores_a_body(client: Client, ada: Account) -> None:
    task_id = create(client, ada, title="T").json()["id"]
    response = client.patch(
        f"/api/tasks/{task_id}/complete", json_body={"status": "Pending"}, token=ada.token
    )
    assert (response.status, response.json()["status"]) == (200, "Completed")


# ---------------------------------------------------------------------------------------
# GET /api/tasks


def ids(response: Response) -> list[int]:
    assert response.status == 200, response.body
    return [item["id"] for item in response.json()["items"]]


def test_list_shows_only_the_callers_live_tasks_newest_first(
    client: Client, ada: Account, bob: Account
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    first = insert_task(ada, "first", created_at=start)
    second = insert_task(ada, "second", created_at=start + timedelta(hours=1))
    insert_task(ada, "deleted", created_at=start + timedelta(hours=2), deleted_at=start)
    insert_task(bob, "bob's", created_at=start + timedelta(hours=3))
    response = client.get("/api/tasks", token=ada.token)
    body = response.json()
    assert (body["total"], body["skip"], body["limit"]) == (2, 0, 20)
    assert ids(response) == [second, first]
    assert body["items"][1] == {
        "id": first,
        "user_id": str(ada.user_id),
        "title": "first",
        "description": None,
        "status": "Pending",
        "priority": "Medium",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "completed_at": None,
        "due_at": None,
        "remind_at": None,
    }


def test_an_empty_list(client: Client, ada: Account) -> None:
    response = client.get("/api/tasks", token=ada.token)
    assert response.json() == {"items": [], "total": 0, "skip": 0, "limit": 20}


@pytest.mark.parametrize("status", ["Pending", "In Progress", "Completed"])
def test_filter_by_status(client: Client, ada: Account, bob: Account, status: str) -> None:
    expected = {
        value: insert_task(ada, value, status=value)
        for value in ("Pending", "In Progress", "Completed")
    }
    insert_task(bob, "bob's", status=status)
    response = client.get("/api/tasks", query={"status": status}, token=ada.token)
    assert ids(response) == [expected[status]]
    assert response.json()["total"] == 1


@pytest.mark.parametrize("priority", ["Low", "Medium", "High"])
def test_filter_by_priority(client: Client, ada: Account, priority: str) -> None:
    expected = {value: insert_task(ada, value, priority=value) for value in SORT_CASES["priority"]}
    response = client.get("/api/tasks", query={"priority": priority}, token=ada.token)
    assert ids(response) == [expected[priority]]


def test_filters_combine(client: Client, ada: Account) -> None:
    wanted = insert_task(ada, "report draft", status="In Progress", priority="High")
    insert_task(ada, "report final", status="Pending", priority="High")
    insert_task(ada, "report notes", status="In Progress", priority="Low")
    insert_task(ada, "groceries", status="In Progress", priority="High")
    query = {"status": "In Progress", "priority": "High", "q": "REPORT"}
    response = client.get("/api/tasks", query=query, token=ada.token)
    assert (ids(response), response.json()["total"]) == ([wanted], 1)


def test_search_is_case_insensitive_in_title_and_description(
    client: Client, ada: Account, bob: Account
) -> None:
    in_title = insert_task(ada, "Buy MILK")
    in_description = insert_task(ada, "Shopping", description="oat milk, bread")
    insert_task(ada, "Unrelated", description="nothing here")
    insert_task(bob, "bob's milk")
    response = client.get("/api/tasks", query={"q": "Milk", "sort": "title"}, token=ada.token)
    assert ids(response) == [in_title, in_description]
    assert response.json()["total"] == 2
    assert ids(client.get("/api/tasks", query={"q": "cheese"}, token=ada.token)) == []


def test_an_empty_search_matches_everything(client: Client, ada: Account) -> None:
    task_id = insert_task(ada, "anything")
    assert ids(client.get("/api/tasks", query="q=", token=ada.token)) == [task_id]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("100%", ["100% done"]),
        ("%", ["100% done"]),
        ("a_b", ["a_b"]),
        ("_", ["a_b"]),
        ("\\", ["back\\slash"]),
        ("/", ["for/ward"]),
        ("'", ["it's"]),
        # PostgreSQL matches with a literal regex: its metacharacters are text too.
        (".", ["a.b"]),
        ("A.B", ["a.b"]),
        ("*", ["***=x"]),
        ("***=", ["***=x"]),
        ("(", ["(x|y)"]),
        ("x|y", ["(x|y)"]),
        ("[a]", ["[a]^$"]),
        ("^$", ["[a]^$"]),
    ],
)
def test_search_treats_wildcards_literally(
    client: Client, ada: Account, q: str, expected: list[str]
) -> None:
    titles = ("100% done", "1000 done", "a_b", "axb", "back\\slash", "for/ward", "it's")
    for title in (*titles, "a.b", "***=x", "(x|y)", "[a]^$"):
        insert_task(ada, title)
    response = client.get("/api/tasks", query={"q": q}, token=ada.token)
    assert [item["title"] for item in response.json()["items"]] == expected


SORT_CASES = {
    "title": ["apple", "Banana", "cherry"],
    "priority": ["Low", "Medium", "High"],
    "status": ["Pending", "In Progress", "Completed"],
}


@pytest.mark.parametrize("descending", [False, True], ids=["asc", "desc"])
@pytest.mark.parametrize("field", ["created_at", "updated_at", "title", "priority", "status"])
def test_sort(client: Client, ada: Account, field: str, descending: bool) -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    # Inserted in an order that matches neither direction, so the sort must do the work.
    ascending: list[int] = [0, 0, 0]
    for position in (1, 2, 0):
        fields: dict[str, Any] = {}
        title = f"task {position}"
        if field == "created_at":
            fields["created_at"] = start + timedelta(minutes=position)
        elif field == "updated_at":
            fields["created_at"] = start - timedelta(minutes=position)
            fields["updated_at"] = start + timedelta(minutes=position)
        elif field == "title":
            title = SORT_CASES["title"][position]
        else:
            fields[field] = SORT_CASES[field][position]
        ascending[position] = insert_task(ada, title, **fields)
    sort = f"-{field}" if descending else field
    response = client.get("/api/tasks", query={"sort": sort}, token=ada.token)
    assert ids(response) == (ascending[::-1] if descending else ascending)


@pytest.mark.parametrize(
    ("sort", "expected"),
    [("priority", [0, 1, 2, 3]), ("-priority", [3, 2, 1, 0]), ("-created_at", [3, 2, 1, 0])],
)
def test_ties_are_broken_by_id_in_the_sort_direction(
    client: Client, ada: Account, sort: str, expected: list[int]
) -> None:
    same_time = datetime(2026, 2, 1, tzinfo=UTC)
    created = [insert_task(ada, f"t{n}", created_at=same_time) for n in range(4)]
    response = client.get("/api/tasks", query={"sort": sort}, token=ada.token)
    assert ids(response) == [created[n] for n in expected]


def test_pagination(client: Client, ada: Account) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    created = [insert_task(ada, f"t{n}", created_at=start + timedelta(minutes=n)) for n in range(7)]
    newest_first = created[::-1]

    def page(skip: int, limit: int) -> dict[str, Any]:
        response = client.get("/api/tasks", query={"skip": skip, "limit": limit}, token=ada.token)
        assert response.status == 200, response.body
        body: dict[str, Any] = response.json()
        assert (body["total"], body["skip"], body["limit"]) == (7, skip, limit)
        return body

    assert [item["id"] for item in page(0, 3)["items"]] == newest_first[:3]
    assert [item["id"] for item in page(3, 3)["items"]] == newest_first[3:6]
    assert [item["id"] for item in page(6, 3)["items"]] == newest_first[6:]  # last, partial
    assert page(7, 3)["items"] == []  # just past the end: the total is still right
    assert page(1000, 100)["items"] == []
    assert [item["id"] for item in page(0, 100)["items"]] == newest_first
    assert [item["id"] for item in page(6, 1)["items"]] == [created[0]]


@pytest.mark.parametrize(
    "query",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": -1},
        {"limit": "ten"},
        {"skip": -1},
        {"skip": "x"},
        {"skip": 2**31},
        {"skip": 2**64},
        {"status": "Done"},
        {"status": "pending"},
        {"priority": "Urgent"},
        {"sort": "id"},
        {"sort": "--title"},
        {"sort": "+title"},
        {"sort": "description"},
        {"sort": "Title"},
        {"sort": ""},
        {"q": "x" * 201},
        {"q": "nul\x00"},
    ],
    ids=str,
)
def test_list_rejects_invalid_parameters(client: Client, ada: Account, query: Any) -> None:
    assert_validation_error(client.get("/api/tasks", query=query, token=ada.token))
