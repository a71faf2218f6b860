"""The changes feed under concurrent writers, on PostgreSQL (real threads, the real handler):
a reader that follows the feed in small pages from an old cursor, while writers create,
update, complete, delete, restore and remove tasks, ends with exactly the server's list,
including when a writer's transaction starts first and commits last."""

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from taskapi.db import get_engine
from tests.support.client import Client
from tests.support.database import Database
from tests.support.tasks import Account, create

pytestmark = pytest.mark.postgres_only

ROUNDS = 20
WRITERS = 3
OPERATIONS_PER_WRITER = 3
# How long the slow writer keeps its transaction open after writing, before it commits.
HOLD_SECONDS = 0.3
# Small pages, read a little apart: the changes of a round span several of them.
PAGE = 2
READ_EVERY_SECONDS = 0.1

_slow = threading.local()


@contextmanager
def slow_commits() -> Iterator[None]:
    """In a thread with `_slow.mode` set, the request pauses inside its open transaction:
    "early", after its first statement (the session check, which share-locks the user
    row): it started first, the others write and commit meanwhile, and it commits last;
    "late", after its write: it holds its change number, and the user's other writers
    wait for it (a reader meanwhile must not move past that number)."""

    def pause(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        mode = getattr(_slow, "mode", None)
        text = statement.lstrip()
        early = mode == "early" and "FOR KEY SHARE" in text
        late = mode == "late" and text.startswith(("UPDATE task", "INSERT INTO task "))
        if early or late:
            _slow.mode = None  # once per request
            _slow.started.set()
            time.sleep(HOLD_SECONDS)

    engine = get_engine()
    sa.event.listen(engine, "after_cursor_execute", pause)
    try:
        yield
    finally:
        sa.event.remove(engine, "after_cursor_execute", pause)


class Writer:
    """Random writes of one user's tasks through the real handler."""

    def __init__(self, client: Client, owner: Account, db: Database, seed: int) -> None:
        self.client, self.owner, self.db = client, owner, db
        self.random = random.Random(seed)
        self.statuses: Counter[int] = Counter()

    def ids(self, *, trashed: bool) -> list[int]:
        condition = "IS NOT NULL" if trashed else "IS NULL"
        rows = self.db.rows(
            f"SELECT id FROM task WHERE user_id = :u AND deleted_at {condition}",
            u=self.owner.user_id,
        )
        return [row[0] for row in rows]

    def one(self) -> None:
        live, trashed = self.ids(trashed=False), self.ids(trashed=True)
        kind = self.random.choice(
            ["create", "update", "complete", "delete", "restore", "remove"] if live else ["create"]
        )
        token = self.owner.token
        if kind == "create" or (kind in ("restore", "remove") and not trashed):
            n = self.random.randrange(10**6)
            response = self.client.post("/api/tasks", json_body={"title": f"t{n}"}, token=token)
        elif kind in ("restore", "remove"):
            task_id = self.random.choice(trashed)
            if kind == "restore":
                response = self.client.post(f"/api/tasks/{task_id}/restore", token=token)
            else:
                response = self.client.delete(f"/api/tasks/trash/{task_id}", token=token)
        else:
            path = f"/api/tasks/{self.random.choice(live)}"
            if kind == "update":
                body = {"title": f"u{self.random.randrange(10**6)}"}
                response = self.client.put(path, json_body=body, token=token)
            elif kind == "complete":
                response = self.client.patch(f"{path}/complete", token=token)
            else:
                response = self.client.delete(path, token=token)
        self.statuses[response.status] += 1


class Reader:
    """Follows the feed in small pages and applies them, as an offline client would."""

    def __init__(self, client: Client, owner: Account, cursor: str) -> None:
        self.client, self.owner, self.cursor = client, owner, cursor
        self.state: dict[int, dict[str, Any]] = {}
        self.pages = 0
        self.more = 0  # pages that said has_more

    def page(self) -> bool:
        response = self.client.get(
            "/api/tasks/changes",
            query={"cursor": self.cursor, "limit": PAGE},
            token=self.owner.token,
        )
        assert response.status == 200, response.body
        body = response.json()
        for item in body["items"]:
            self.state[item["id"]] = item
        for task_id in body["deleted"]:
            self.state.pop(task_id, None)
        self.cursor = body["cursor"]
        self.pages += 1
        self.more += body["has_more"]
        return bool(body["has_more"])

    def until_done(self) -> None:
        while self.page():
            pass


def server_list(client: Client, owner: Account) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    skip = 0
    while True:
        page = client.get(
            "/api/tasks", query={"skip": skip, "limit": 100}, token=owner.token
        ).json()
        found.update((item["id"], item) for item in page["items"])
        skip += 100
        if skip >= page["total"]:
            return found


def test_a_reader_following_the_feed_misses_no_change_of_concurrent_writers(
    pg: Database, ada: Account
) -> None:
    client = Client("tasks")
    for n in range(5):
        create(client, ada, title=f"before {n}")
    # The reader's old cursor: it has seen these five.
    reader = Reader(client, ada, cursor="")
    first = client.get("/api/tasks/changes", query={"limit": 500}, token=ada.token).json()
    reader.state = {item["id"]: item for item in first["items"]}
    reader.cursor = first["cursor"]
    writers = [Writer(client, ada, pg, seed) for seed in range(WRITERS + 1)]
    slow = writers[-1]
    stop = threading.Event()
    failures: list[BaseException] = []

    def read_all_along() -> None:
        try:
            while not stop.is_set():
                reader.page()
                time.sleep(READ_EVERY_SECONDS)
        except BaseException as error:  # reported by the test below
            failures.append(error)

    def write_slowly(mode: str, started: threading.Event) -> None:
        _slow.mode, _slow.started = mode, started
        slow.one()
        started.set()  # a write that never reached the pause (a 404) releases the others

    with slow_commits():
        reading = threading.Thread(target=read_all_along)
        reading.start()
        for round_number in range(ROUNDS):
            started = threading.Event()
            mode = "early" if round_number % 2 else "late"
            held = threading.Thread(target=write_slowly, args=(mode, started))
            held.start()
            # The others start once the slow one is inside its open transaction.
            started.wait(timeout=10)
            others = [
                threading.Thread(target=lambda w=w: [w.one() for _ in range(OPERATIONS_PER_WRITER)])
                for w in writers[:-1]
            ]
            for thread in others:
                thread.start()
            for thread in [held, *others]:
                thread.join(timeout=60)
        stop.set()
        reading.join(timeout=60)

    assert not failures, failures
    reader.until_done()
    statuses = sum((w.statuses for w in writers), Counter())
    # Every write was answered; races between writers give 404s and 409s, never a 5xx.
    assert all(status < 500 for status in statuses), statuses
    assert sum(statuses.values()) == ROUNDS * (1 + WRITERS * OPERATIONS_PER_WRITER)
    assert statuses[201] + statuses[200] + statuses[204] > ROUNDS * WRITERS
    assert reader.pages > ROUNDS
    assert reader.more > ROUNDS // 2, "the reader should have needed several pages at times"
    assert reader.state == server_list(client, ada)
