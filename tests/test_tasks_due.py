"""Due dates, the overdue view and the list's repeated filters, through the real handler on
SQLite and PostgreSQL."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskapi.models import utcnow
from tests.support.client import Client, Response
from tests.support.database import Database
from tests.support.tasks import Account, create, insert_task


def ids(response: Response) -> list[int]:
    assert response.status == 200, response.body
    return [item["id"] for item in response.json()["items"]]


def listed(client: Client, owner: Account, query: Any) -> list[int]:
    return ids(client.get("/api/tasks", query=query, token=owner.token))


def assert_422(response: Response) -> None:
    assert response.status == 422, response.body
    assert isinstance(response.json()["detail"], list)


START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


# ---------------------------------------------------------------------------------------
# due_at on create, read and update


def test_due_at_is_stored_and_answered_in_utc(client: Client, ada: Account, db: Database) -> None:
    created = create(client, ada, title="Call", due_at="2026-06-01T14:30:00+02:00")
    body = created.json()
    assert body["due_at"] == "2026-06-01T12:30:00Z"
    stored = db.scalar("SELECT due_at FROM task WHERE id = :id", id=body["id"])
    assert stored is not None
    read = client.get(f"/api/tasks/{body['id']}", token=ada.token)
    assert (read.status, read.json()) == (200, body)


def test_due_at_defaults_to_null(client: Client, ada: Account) -> None:
    assert create(client, ada, title="Someday").json()["due_at"] is None


def test_put_sets_moves_and_clears_the_due_date(client: Client, ada: Account) -> None:
    created = create(client, ada, title="T").json()
    path = f"/api/tasks/{created['id']}"
    moved = client.put(path, json_body={"due_at": "2026-07-01T09:00:00Z"}, token=ada.token)
    assert (moved.status, moved.json()["due_at"]) == (200, "2026-07-01T09:00:00Z")
    assert moved.headers["etag"] == f'"{created["id"]}-2"'
    # The same instant written with another offset is no change: no write, same ETag.
    same = client.put(path, json_body={"due_at": "2026-07-01T11:00:00+02:00"}, token=ada.token)
    assert (same.status, same.headers["etag"]) == (200, moved.headers["etag"])
    cleared = client.put(path, json_body={"due_at": None}, token=ada.token)
    assert (cleared.status, cleared.json()["due_at"]) == (200, None)
    assert cleared.headers["etag"] == f'"{created["id"]}-3"'
    untouched = client.put(path, json_body={"title": "renamed"}, token=ada.token)
    assert untouched.json()["due_at"] is None


BAD_TIMESTAMPS = [
    pytest.param("2026-06-01T12:00:00", id="no-offset"),
    pytest.param("2026-06-01 12:00:00", id="no-offset-space"),
    pytest.param("2026-06-01", id="date-only"),
    pytest.param("tomorrow", id="words"),
    pytest.param("1780000000", id="digits"),
    pytest.param("0001-01-01T00:00:00+01:00", id="before-year-1-in-utc"),
    pytest.param("9999-12-31T23:59:59-01:00", id="after-year-9999-in-utc"),
    pytest.param("2026-02-30T00:00:00Z", id="no-such-day"),
]


@pytest.mark.parametrize("value", [*BAD_TIMESTAMPS, pytest.param(1780000000, id="number")])
def test_create_and_put_refuse_a_timestamp_without_an_offset_or_out_of_range(
    client: Client, ada: Account, db: Database, value: Any
) -> None:
    assert_422(
        client.post("/api/tasks", json_body={"title": "T", "due_at": value}, token=ada.token)
    )
    assert db.scalar("SELECT count(*) FROM task") == 0
    task_id = create(client, ada, title="T").json()["id"]
    put = client.put(f"/api/tasks/{task_id}", json_body={"due_at": value}, token=ada.token)
    assert_422(put)
    assert db.scalar("SELECT due_at FROM task WHERE id = :id", id=task_id) is None


# ---------------------------------------------------------------------------------------
# Filters


def test_due_before_and_due_after_make_a_half_open_window(client: Client, ada: Account) -> None:
    at = {
        hours: insert_task(ada, f"h{hours}", due_at=START + timedelta(hours=hours))
        for hours in range(4)
    }
    insert_task(ada, "no due date")
    window = {"due_after": "2026-06-01T13:00:00Z", "due_before": "2026-06-01T15:00:00Z"}
    assert listed(client, ada, {**window, "sort": "due_at"}) == [at[1], at[2]]
    # The same instants with an offset.
    shifted = {"due_after": "2026-06-01T15:00:00+02:00", "due_before": "2026-06-01T17:00:00+02:00"}
    assert listed(client, ada, {**shifted, "sort": "due_at"}) == [at[1], at[2]]
    assert listed(client, ada, {"due_before": "2026-06-01T13:00:00Z"}) == [at[0]]
    after = listed(client, ada, {"due_after": "2026-06-01T13:00:00Z", "sort": "due_at"})
    assert after == [at[1], at[2], at[3]]
    response = client.get("/api/tasks", query=window, token=ada.token)
    assert response.json()["total"] == 2


def test_overdue_is_past_due_and_not_completed(client: Client, ada: Account, bob: Account) -> None:
    now = utcnow()
    late = insert_task(ada, "late", due_at=now - timedelta(days=1))
    late_started = insert_task(
        ada, "late, started", due_at=now - timedelta(minutes=1), status="In Progress"
    )
    done_late = insert_task(ada, "done late", due_at=now - timedelta(days=2), status="Completed")
    future = insert_task(ada, "future", due_at=now + timedelta(days=1))
    undated = insert_task(ada, "undated")
    insert_task(ada, "deleted", due_at=now - timedelta(days=1), deleted_at=now)
    insert_task(bob, "bob's late", due_at=now - timedelta(days=1))

    overdue = client.get("/api/tasks", query={"overdue": "true", "sort": "due_at"}, token=ada.token)
    assert (ids(overdue), overdue.json()["total"]) == ([late, late_started], 2)
    rest = listed(client, ada, {"overdue": "false", "sort": "due_at"})
    assert rest == [done_late, future, undated]
    only_started = listed(client, ada, {"overdue": "true", "status": "In Progress"})
    assert only_started == [late_started]


@pytest.mark.parametrize(
    "query",
    [
        *({"due_before": value.values[0]} for value in BAD_TIMESTAMPS),
        *({"due_after": value.values[0]} for value in BAD_TIMESTAMPS),
        {"overdue": "maybe"},
        {"overdue": ""},
        {"sort": "due"},
        {"sort": "+due_at"},
        {"q": "x" * 201},
    ],
    ids=str,
)
def test_list_refuses_bad_due_filters(client: Client, ada: Account, query: Any) -> None:
    assert_422(client.get("/api/tasks", query=query, token=ada.token))


def test_q_takes_up_to_200_characters(client: Client, ada: Account) -> None:
    task_id = insert_task(ada, "x" * 200)
    assert listed(client, ada, {"q": "x" * 200}) == [task_id]


def test_status_and_priority_repeat_meaning_any_of_them(
    client: Client, ada: Account, bob: Account
) -> None:
    pending = insert_task(ada, "p", status="Pending", priority="Low")
    started = insert_task(ada, "s", status="In Progress", priority="High")
    done = insert_task(ada, "d", status="Completed", priority="High")
    insert_task(bob, "bob's", status="Pending")
    query = "status=Pending&status=Completed&sort=created_at"
    response = client.get("/api/tasks", query=query, token=ada.token)
    assert (ids(response), response.json()["total"]) == ([pending, done], 2)
    both = "status=Pending&status=In%20Progress&status=Completed&sort=created_at"
    assert ids(client.get("/api/tasks", query=both, token=ada.token)) == [pending, started, done]
    repeated = "status=Pending&status=Pending"
    assert ids(client.get("/api/tasks", query=repeated, token=ada.token)) == [pending]
    priorities = "priority=High&priority=Low&status=In%20Progress&status=Completed&sort=created_at"
    assert ids(client.get("/api/tasks", query=priorities, token=ada.token)) == [started, done]
    assert_422(client.get("/api/tasks", query="status=Pending&status=Done", token=ada.token))


def test_the_openapi_document_shows_the_repeatable_filters_as_arrays(db: Database) -> None:
    # The document clients read (health's /openapi.json, made by `make openapi`).
    document = Client("health").get("/openapi.json").json()
    parameters = {p["name"]: p for p in document["paths"]["/api/tasks"]["get"]["parameters"]}

    def schema_of(name: str) -> dict[str, Any]:
        # Optional parameters are documented without a null alternative.
        schema: dict[str, Any] = parameters[name]["schema"]
        assert "anyOf" not in schema, schema
        if "$ref" in schema:
            schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
        return schema

    for name in ("status", "priority"):
        schema = schema_of(name)
        assert schema["type"] == "array", schema
        assert "$ref" in schema["items"]
    assert schema_of("q")["maxLength"] == 200
    for name in ("due_before", "due_after"):
        assert schema_of(name)["format"] == "date-time"
    assert {"due_at", "-due_at"} <= set(schema_of("sort")["enum"])


# ---------------------------------------------------------------------------------------
# Sorting by due date


def due_tasks(owner: Account) -> tuple[list[int], list[int]]:
    """Five dated tasks (two sharing a due date) and three undated ones, inserted in an
    order that matches neither sort: the ids in ascending due order, and the undated."""
    hours = [3, 0, 2, 0, 1]
    dated = {insert_task(owner, f"due {h}", due_at=START + timedelta(hours=h)): h for h in hours}
    undated = [insert_task(owner, f"undated {n}") for n in range(3)]
    ascending = sorted(dated, key=lambda task_id: (dated[task_id], task_id))
    return ascending, undated


def test_sort_by_due_date_puts_tasks_without_one_last_either_way(
    client: Client, ada: Account
) -> None:
    ascending, undated = due_tasks(ada)
    assert listed(client, ada, {"sort": "due_at"}) == ascending + undated
    # Descending: latest due first, ties by id descending, and still the undated last.
    descending = sorted(ascending, key=lambda i: ascending.index(i), reverse=True)
    assert listed(client, ada, {"sort": "-due_at"}) == descending + undated[::-1]


@pytest.mark.parametrize("sort", ["due_at", "-due_at"])
@pytest.mark.parametrize("limit", [1, 2, 3, 5])
def test_due_date_pages_never_overlap_or_skip(
    client: Client, ada: Account, sort: str, limit: int
) -> None:
    due_tasks(ada)
    everything = listed(client, ada, {"sort": sort, "limit": 100})
    assert len(everything) == 8
    paged: list[int] = []
    for skip in range(0, 10, limit):
        response = client.get(
            "/api/tasks", query={"sort": sort, "skip": skip, "limit": limit}, token=ada.token
        )
        assert response.json()["total"] == 8
        paged += ids(response)
    assert paged == everything
