"""Account changes racing the user's other requests on PostgreSQL: threads, each calling
the real handlers, as concurrent Lambda containers would. (SQLite has one writer at a
time; tests/test_account.py covers the one interleaving that matters there.)"""

import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from tests.support.auth import (
    ME,
    NEW_PASSWORD,
    PASSWORD,
    change_password,
    delete_account,
    login,
    signup,
    tokens,
    user_row,
)
from tests.support.client import Client, Response
from tests.support.concurrency import at_once
from tests.support.database import Database, rows_naming

pytestmark = pytest.mark.postgres_only

ROUNDS = 5
CREATES = 10


def test_account_deletion_racing_task_creates_leaves_no_task(pg: Database) -> None:
    auth, tasks = Client("auth"), Client("tasks")
    statuses: Counter[int] = Counter()
    for round_number in range(ROUNDS):
        email = f"race{round_number}@example.com"
        access, _ = tokens(signup(auth, email=email))
        user = user_row(pg, email)
        calls = iter(range(CREATES + 1))

        def request(access: str = access, calls: Iterator[int] = calls) -> Response:
            # One thread deletes, the others create (which one is which varies).
            if next(calls) == CREATES // 2:
                return delete_account(auth, access)
            return tasks.post("/api/tasks", json_body={"title": "racing"}, token=access)

        responses = at_once(CREATES + 1, request)

        deletions = [r for r in responses if r.status == 204]
        assert len(deletions) == 1, [(r.status, r.body) for r in responses]
        others = Counter(r.status for r in responses if r.status != 204)
        assert set(others) <= {201, 401}, [(r.status, r.body) for r in responses]
        statuses.update(others)
        assert rows_naming(pg, user.id, user.email) == {}
        assert pg.scalar("SELECT count(*) FROM task WHERE user_id = :id", id=user.id) == 0
    # Both outcomes are allowed; no 5xx is the point. (Which ones happened is printed.)
    print(f"creates racing a deletion: {dict(statuses)}")


def test_simultaneous_password_changes_let_one_session_win(pg: Database) -> None:
    """Two sessions change the password at once: each would revoke the other, so one of
    them must fail (401) rather than both answer 200 with their sessions ended."""
    client = Client("auth")
    first, _ = tokens(signup(client))
    second, _ = tokens(login(client))
    changes = {first: NEW_PASSWORD, second: "the other new password"}
    queue = iter(changes.items())

    responses = at_once(2, lambda: change_password(client, *next_change(queue)))

    assert sorted(r.status for r in responses) == [200, 401], [r.body for r in responses]
    alive = [token for token in changes if client.get(ME, token=token).status == 200]
    assert len(alive) == 1
    assert login(client, password=changes[alive[0]]).status == 200
    assert login(client, password=PASSWORD).status == 401


def next_change(queue: Iterator[tuple[str, str]]) -> tuple[str, str, str]:
    token, new_password = next(queue)
    return token, PASSWORD, new_password


WRITES: dict[str, Callable[[Client, str, int], Response]] = {
    "update": lambda tasks, token, task: tasks.put(
        f"/api/tasks/{task}", json_body={"title": "renamed"}, token=token
    ),
    "complete": lambda tasks, token, task: tasks.patch(f"/api/tasks/{task}/complete", token=token),
    "delete": lambda tasks, token, task: tasks.delete(f"/api/tasks/{task}", token=token),
    "list": lambda tasks, token, task: tasks.get("/api/tasks", token=token),
}


@pytest.mark.parametrize("kind", WRITES)
def test_task_requests_racing_a_deletion_complete_first_or_get_401(
    pg: Database,
    kind: str,
) -> None:
    """Never a 404 for a task that the deletion removed under a request that had already
    passed the token check: such a request finishes before the deletion, or waits for it."""
    auth, tasks = Client("auth"), Client("tasks")
    statuses: Counter[int] = Counter()
    for round_number in range(ROUNDS):
        email = f"{kind}{round_number}@example.com"
        access, _ = tokens(signup(auth, email=email))
        ids = [
            tasks.post("/api/tasks", json_body={"title": "t"}, token=access).json()["id"]
            for _ in range(CREATES)
        ]
        user = user_row(pg, email)
        calls = iter(range(CREATES + 1))

        def request(
            access: str = access, ids: list[int] = ids, calls: Iterator[int] = calls
        ) -> Response:
            call = next(calls)
            if call == CREATES:
                return delete_account(auth, access)
            # Spread over the deletion's few milliseconds, so that some requests start
            # before it locks the user and some while it holds the lock.
            time.sleep(call * 0.004)
            return WRITES[kind](tasks, access, ids[call])

        responses = at_once(CREATES + 1, request)

        others = Counter(r.status for r in responses)
        others[204] -= 1  # the deletion's
        assert set(+others) <= {200, 204, 401}, [(r.status, r.body) for r in responses]
        statuses.update(+others)
        assert rows_naming(pg, user.id, user.email) == {}
    print(f"{kind} racing a deletion: {dict(statuses)}")


def test_two_deletions_at_once_delete_once(pg: Database) -> None:
    client = Client("auth")
    access, _ = tokens(signup(client))
    responses = at_once(2, lambda: delete_account(client, access))
    assert sorted(r.status for r in responses) == [204, 401], [r.body for r in responses]
    assert signup(client).status == 201
