"""`POST /api/tasks/batch` through the real handler on SQLite and PostgreSQL: each result is
what the operation's single route answers (status, body, ETag), in order, in one
transaction, with the quota and If-Match per operation and Idempotency-Key as on a create."""

from typing import Any

import pytest

from taskapi.models import BATCH_MAX_OPERATIONS, DESCRIPTION_MAX_LENGTH, TITLE_MAX_LENGTH
from tests.support.client import Client, Response
from tests.support.database import Database
from tests.support.environment import configure
from tests.support.tasks import Account, create


def batch(client: Client, owner: Account, *operations: dict[str, Any], **headers: str) -> Response:
    return client.post(
        "/api/tasks/batch",
        json_body={"operations": list(operations)},
        headers=headers,
        token=owner.token,
    )


def results(response: Response) -> list[dict[str, Any]]:
    assert response.status == 200, response.body
    found: list[dict[str, Any]] = response.json()["results"]
    return found


def as_result(response: Response) -> dict[str, Any]:
    """A single route's answer as a batch result: status, body (if any), ETag (if any)."""
    return {
        "status": response.status,
        "body": response.json() if response.body else None,
        "etag": response.headers.get("etag"),
    }


def test_creates_answer_as_the_single_route(client: Client, ada: Account, db: Database) -> None:
    found = results(
        batch(
            client,
            ada,
            {"op": "create", "body": {"title": "one", "remind_at": "2030-01-01T09:00:00Z"}},
            {"op": "create", "body": {"title": "two", "status": "Completed"}},
        )
    )
    assert [result["status"] for result in found] == [201, 201]
    for result in found:
        read = client.get(f"/api/tasks/{result['body']['id']}", token=ada.token)
        assert result == {**as_result(read), "status": 201}
    assert found[0]["body"]["remind_at"] == "2030-01-01T09:00:00Z"
    assert found[1]["body"]["completed_at"] is not None
    assert db.scalar("SELECT count(*) FROM task") == 2


def test_each_operation_answers_what_its_single_route_answers(
    client: Client, ada: Account, bob: Account
) -> None:
    """The same requests, once in a batch on one task and once through the single routes
    on its twin (a task in the same state), get the same statuses and bodies."""

    def twins(title: str) -> tuple[int, int]:
        return create(client, ada, title=title).json()["id"], create(
            client, ada, title=title
        ).json()["id"]

    renamed, stale, matching, done, deleted = (
        twins(name) for name in ("update", "stale", "if-match", "complete", "delete")
    )
    for task_id in stale:
        client.put(f"/api/tasks/{task_id}", json_body={"priority": "High"}, token=ada.token)
    bobs = create(client, bob, title="bob's").json()["id"]
    missing = (999999, 999999)

    # (op, the twins, If-Match as a version (None: none), body)
    cases: list[tuple[str, tuple[int, int], int | None, Any]] = [
        ("update", renamed, None, {"title": " renamed "}),
        ("update", stale, 1, {"title": "x"}),
        ("update", matching, 1, {"title": "x"}),
        ("update", renamed, None, {"title": ""}),
        ("update", renamed, None, {"title": None, "due_at": "soon"}),
        ("update", renamed, None, {"colour": "red"}),
        ("update", missing, None, {"title": "x"}),
        ("update", (bobs, bobs), None, {"title": "x"}),
        ("complete", done, None, None),
        ("complete", done, None, None),
        ("delete", deleted, None, None),
        ("delete", deleted, None, None),
        ("delete", (bobs, bobs), None, None),
        ("create", (0, 0), None, {"title": "   "}),
        ("create", (0, 0), None, {"title": "x", "due_at": "2030-01-01T00:00:00"}),
    ]
    operations = []
    for op, (task_id, _), version, body in cases:
        operation: dict[str, Any] = {"op": op}
        if op != "create":
            operation["id"] = task_id
        if version is not None:
            operation["if_match"] = f'"{task_id}-{version}"'
        if body is not None:
            operation["body"] = body
        operations.append(operation)
    found = results(batch(client, ada, *operations))

    single_routes = {"update": "PUT", "complete": "PATCH", "delete": "DELETE", "create": "POST"}
    assert len(found) == len(cases)
    for result, (op, (_, twin), version, body) in zip(found, cases, strict=True):
        path = "/api/tasks" if op == "create" else f"/api/tasks/{twin}"
        path += "/complete" if op == "complete" else ""
        headers = {"If-Match": f'"{twin}-{version}"'} if version is not None else {}
        single = as_result(
            client.request(
                single_routes[op], path, json_body=body, headers=headers, token=ada.token
            )
        )
        if "id" in (result["body"] or {}):
            # The twin differs in its id, timestamps and ETag's id, and nothing else.
            for key in ("id", "created_at", "updated_at", "completed_at"):
                assert (result["body"].pop(key) is None) == (single["body"].pop(key) is None)
            assert result.pop("etag").split("-")[1] == single.pop("etag").split("-")[1]
        assert result == single, (op, body)


def test_a_batch_runs_in_order_and_reads_what_earlier_operations_wrote(
    client: Client, ada: Account
) -> None:
    created = create(client, ada, title="t")
    task_id, tag = created.json()["id"], created.headers["etag"]
    found = results(
        batch(
            client,
            ada,
            {"op": "update", "id": task_id, "if_match": tag, "body": {"priority": "High"}},
            # The first operation changed the version: the same If-Match now fails.
            {"op": "update", "id": task_id, "if_match": tag, "body": {"priority": "Low"}},
            {"op": "delete", "id": task_id},
            {"op": "complete", "id": task_id},
        )
    )
    assert [result["status"] for result in found] == [200, 412, 204, 404]
    assert found[0]["etag"] == f'"{task_id}-2"'
    assert found[2] == {"status": 204, "body": None, "etag": None}
    assert found[3]["body"] == {"detail": "Task not found"}


def test_the_quota_holds_per_operation(
    client: Client, ada: Account, monkeypatch: pytest.MonkeyPatch, db: Database
) -> None:
    configure(monkeypatch, max_tasks_per_user="3")
    create(client, ada, title="existing")
    found = results(
        batch(client, ada, *({"op": "create", "body": {"title": f"n{n}"}} for n in range(4)))
    )
    assert [result["status"] for result in found] == [201, 201, 409, 409]
    assert "empty the trash" in found[2]["body"]["detail"]
    assert db.scalar("SELECT count(*) FROM task") == 3


def test_the_idempotency_key_replays_the_batch(client: Client, ada: Account, db: Database) -> None:
    operations = [{"op": "create", "body": {"title": f"n{n}"}} for n in range(3)]
    first = batch(client, ada, *operations, **{"Idempotency-Key": "sync-42"})
    again = batch(client, ada, *operations, **{"Idempotency-Key": "sync-42"})
    assert (again.status, again.json()) == (200, first.json())
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert db.scalar("SELECT count(*) FROM task") == 3
    other = batch(client, ada, *operations[:1], **{"Idempotency-Key": "sync-42"})
    assert other.status == 422
    assert other.json()["detail"][0]["type"] == "idempotency_key_reused"


@pytest.mark.parametrize(
    "operations",
    [
        [],
        [{"op": "create", "body": {"title": "x"}}] * (BATCH_MAX_OPERATIONS + 1),
        [{"op": "create", "id": 1, "body": {"title": "x"}}],
        [{"op": "create"}],
        [{"op": "create", "if_match": "*", "body": {"title": "x"}}],
        [{"op": "update", "body": {"title": "x"}}],
        [{"op": "update", "id": 1}],
        [{"op": "delete", "id": 1, "body": {}}],
        [{"op": "delete", "id": 0}],
        [{"op": "delete", "id": 2**31}],
        [{"op": "rename", "id": 1}],
        [{"op": "delete", "id": 1, "extra": True}],
        [{"op": "update", "id": 1, "body": ["not", "an", "object"]}],
    ],
)
def test_a_malformed_batch_is_422_and_writes_nothing(
    client: Client, ada: Account, db: Database, operations: list[Any]
) -> None:
    response = client.post(
        "/api/tasks/batch", json_body={"operations": operations}, token=ada.token
    )
    assert response.status == 422, response.body
    assert db.scalar("SELECT count(*) FROM task") == 0


def test_the_batch_needs_a_live_session(client: Client) -> None:
    response = client.post(
        "/api/tasks/batch", json_body={"operations": [{"op": "create", "body": {"title": "x"}}]}
    )
    assert response.status == 401


def test_the_largest_valid_batch_is_taken(client: Client, ada: Account, db: Database) -> None:
    # 100 creates of the longest title and description, in characters that JSON escapes
    # to the most bytes (a character outside the BMP: a 12-byte surrogate pair).
    widest = "\U0001f600"
    body = {"title": widest * TITLE_MAX_LENGTH, "description": widest * DESCRIPTION_MAX_LENGTH}
    operations = [{"op": "create", "body": body}] * BATCH_MAX_OPERATIONS
    response = batch(client, ada, *operations)
    assert [result["status"] for result in results(response)] == [201] * BATCH_MAX_OPERATIONS
    assert db.scalar("SELECT count(*) FROM task") == BATCH_MAX_OPERATIONS
