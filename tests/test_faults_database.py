"""PostgreSQL goes away under a warm container, and comes back.

A TCP proxy of the test's own (`tests/support/tcp_proxy.py`) sits between the handlers and
PostgreSQL. Cutting it either resets every connection (a crashed server) or leaves new
ones hanging (a host that accepts and never answers). Every database route must then
answer 503 JSON within a few seconds, nothing half-written may remain, and the same
imported handlers must serve again once the proxy is restored: no new container, no cache
reset.
"""

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

from taskapi.db import get_engine
from tests.support.auth import PASSWORD, signup, tokens
from tests.support.client import Client, Response
from tests.support.database import Database, statement_timeout
from tests.support.environment import configure
from tests.support.functions import ROOT
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres_only

CONNECT_TIMEOUT = 1  # seconds, DATABASE_CONNECT_TIMEOUT for these tests
# What "within a few seconds" means here: the connect timeout plus a generous margin for
# a shared, busy machine.
ANSWER_WITHIN = 5.0


@dataclass
class Setup:
    db: Database
    proxy: TcpProxy
    auth: Client
    tasks: Client
    health: Client


@pytest.fixture
def setup(db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    url = make_url(db.url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    configure(
        monkeypatch,
        database_url=proxied,
        database_connect_timeout=str(CONNECT_TIMEOUT),
        # The in-flight test runs a second request beside the trapped one.
        database_pool_size="2",
    )
    try:
        yield Setup(db, proxy, Client("auth"), Client("tasks"), Client("health"))
    finally:
        proxy.close()


@dataclass
class Account:
    access: str
    refresh: str
    task_id: int


def new_account(setup: "Setup | Direct", email: str) -> Account:
    access, refresh = tokens(signup(setup.auth, email=email))
    created = setup.tasks.post("/api/tasks", json_body={"title": "before"}, token=access)
    assert created.status == 201, created.body
    return Account(access, refresh, created.json()["id"])


def database_routes(setup: "Setup | Direct", account: Account) -> dict[str, Any]:
    """Every route that needs the database, as a zero-argument call (logout, which ends
    the account's session, last but one)."""
    tasks, auth, token = setup.tasks, setup.auth, account.access
    path = f"/api/tasks/{account.task_id}"
    return {
        "GET /api/tasks": lambda: tasks.get("/api/tasks", token=token),
        "POST /api/tasks": lambda: tasks.post("/api/tasks", json_body={"title": "x"}, token=token),
        "GET /api/tasks/{task_id}": lambda: tasks.get(path, token=token),
        "PUT /api/tasks/{task_id}": lambda: tasks.put(path, json_body={"title": "y"}, token=token),
        "PATCH /api/tasks/{task_id}/complete": lambda: tasks.patch(f"{path}/complete", token=token),
        "DELETE /api/tasks/{task_id}": lambda: tasks.delete(path, token=token),
        "POST /api/auth/signup": lambda: signup(auth, email=f"{uuid.uuid4().hex}@example.com"),
        "POST /api/auth/login": lambda: auth.post(
            "/api/auth/login", json_body={"email": "ada@example.com", "password": PASSWORD}
        ),
        "POST /api/auth/refresh": lambda: auth.post(
            "/api/auth/refresh", json_body={"refresh_token": account.refresh}
        ),
        "GET /api/auth/me": lambda: auth.get("/api/auth/me", token=token),
        "POST /api/auth/logout": lambda: auth.post("/api/auth/logout", token=token),
        "GET /health/db": lambda: setup.health.get("/health/db"),
    }


SUCCESS = {
    "POST /api/tasks": 201,
    "DELETE /api/tasks/{task_id}": 204,
    "POST /api/auth/signup": 201,
}


def timed(call: Any) -> tuple[Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


@pytest.mark.parametrize("mode", ["reset", "blackhole"])
def test_every_database_route_answers_503_quickly_and_the_warm_handler_recovers(
    setup: Setup, mode: Literal["reset", "blackhole"]
) -> None:
    account = new_account(setup, "ada@example.com")
    handlers = (setup.auth.handler, setup.tasks.handler, setup.health.handler)
    engine = get_engine()

    document = json.loads((ROOT / "functions" / "health" / "openapi.json").read_text())
    setup.proxy.cut(mode)
    for route, call in database_routes(setup, account).items():
        response, elapsed = timed(call)
        assert response.status == 503, (route, response.body)
        method, path = route.split(" ")
        assert "503" in document["paths"][path][method.lower()]["responses"], (
            f"{route}: undocumented"
        )
        assert response.headers["content-type"] == "application/json", route
        assert response.json()["detail"], route
        assert elapsed < ANSWER_WITHIN, (route, elapsed)

    setup.proxy.restore()
    # The same container: the handlers and the engine are the objects from before the cut.
    assert (setup.auth.handler, setup.tasks.handler, setup.health.handler) == handlers
    assert get_engine() is engine
    path = f"/api/tasks/{account.task_id}"
    assert setup.health.get("/health/db").status == 200
    assert setup.auth.get("/api/auth/me", token=account.access).status == 200
    listed = setup.tasks.get("/api/tasks", token=account.access)
    assert listed.status == 200
    # Nothing the failed calls sent was written: the one task is as it was created.
    assert [task["title"] for task in listed.json()["items"]] == ["before"]
    assert setup.tasks.put(path, json_body={"title": "after"}, token=account.access).status == 200
    assert setup.tasks.patch(f"{path}/complete", token=account.access).status == 200
    assert setup.tasks.delete(path, token=account.access).status == 204
    assert setup.auth.post("/api/auth/logout", token=account.access).status == 200
    assert setup.db.scalar('SELECT count(*) FROM "user"') == 1


# Where the cut lands in a create: before the INSERT reaches the server, after it (before
# COMMIT), or once the server has committed but before the client hears so.
IN_FLIGHT = {
    "before-insert": (b"INSERT INTO task", False),
    "before-commit": (b"COMMIT", False),
    "commit-unacknowledged": (b"COMMIT\x00", True),
}


@pytest.mark.parametrize("where", list(IN_FLIGHT))
def test_a_create_cut_mid_request_is_all_there_or_absent(setup: Setup, where: str) -> None:
    account = new_account(setup, "ada@example.com")
    pattern, to_client = IN_FLIGHT[where]
    title = f"in flight {uuid.uuid4().hex}"

    setup.proxy.cut_on(pattern, to_client=to_client)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(
            setup.tasks.post,
            "/api/tasks",
            json_body={"title": title, "description": "d", "priority": "High"},
            token=account.access,
        )
        response = future.result(timeout=ANSWER_WITHIN * 2)
    assert setup.proxy.sprung.is_set()
    assert response.status == 503, response.body
    setup.proxy.restore()

    rows = setup.db.rows(
        "SELECT title, description, priority, user_id, created_at, updated_at, version "
        "FROM task WHERE title = :title",
        title=title,
    )
    if where == "commit-unacknowledged":
        # The server committed: the client got 503 but the task is there, whole.
        assert len(rows) == 1
        assert rows[0].description == "d"
        assert rows[0].priority == "High"
        assert rows[0].created_at is not None
    else:
        assert rows == []
    # The same handler carries on.
    assert setup.tasks.get("/api/tasks", token=account.access).status == 200


@pytest.mark.parametrize("pattern", [b"INSERT INTO auth_session", b"COMMIT"])
def test_a_signup_cut_mid_request_leaves_no_user_without_a_session(
    setup: Setup, pattern: bytes
) -> None:
    setup.proxy.cut_on(pattern)
    email = "grace@example.com"
    response = signup(setup.auth, email=email)
    assert setup.proxy.sprung.is_set()
    assert response.status == 503, response.body
    setup.proxy.restore()
    assert setup.db.scalar('SELECT count(*) FROM "user" WHERE email = :email', email=email) == 0
    assert setup.db.scalar("SELECT count(*) FROM auth_session") == 0
    # Signing up again works: no half-made account holds the email.
    assert signup(setup.auth, email=email).status == 201


def test_requests_in_flight_when_the_database_dies_all_get_503(setup: Setup) -> None:
    """Several containers' requests (threads) are cut together; none hangs or gets a 500."""
    account = new_account(setup, "ada@example.com")
    stop = threading.Event()
    statuses: list[int] = []

    def keep_listing() -> None:
        while not stop.is_set():
            statuses.append(setup.tasks.get("/api/tasks", token=account.access).status)

    with ThreadPoolExecutor(2) as pool:
        workers = [pool.submit(keep_listing) for _ in range(2)]
        time.sleep(0.3)
        setup.proxy.cut("reset")
        time.sleep(0.5)
        setup.proxy.restore()
        time.sleep(0.5)
        stop.set()
        for worker in workers:
            worker.result(timeout=ANSWER_WITHIN * 2)
    assert set(statuses) <= {200, 503}, statuses
    assert 503 in statuses
    assert statuses[-1] == 200


def test_connections_give_up_on_a_silent_peer(db: Database) -> None:
    """A peer that vanishes mid-query (packets dropped, no reset) cannot be staged on
    127.0.0.1, where the kernel acknowledges everything; libpq's tcp_user_timeout and
    keepalives bound it on a real network. Check that every connection carries them."""
    with get_engine().connect() as connection:
        parameters = connection.connection.dbapi_connection.get_dsn_parameters()  # type: ignore[union-attr]
    assert parameters["tcp_user_timeout"] == "6000"  # twice the 3 s connect timeout
    assert parameters["connect_timeout"] == "3"
    assert parameters["keepalives"] == "1"


# ---------------------------------------------------------------------------------------
# The server ends the connections (pg_terminate_backend): a failover, an RDS Proxy restart,
# an idle-connection reaper. PostgreSQL itself is up, so no request need fail but a write
# whose statements were already on a connection that died.


@dataclass
class Direct:
    """The real handlers on the test database, without a proxy in between."""

    db: Database
    auth: Client
    tasks: Client
    health: Client

    def app_backends(self) -> list[int]:
        return [
            row[0]
            for row in self.db.rows(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
        ]

    def terminate(self, pids: list[int] | None = None) -> int:
        """End the given server processes (default: all of the handlers'), and wait until
        they are gone; how many there were."""
        pids = self.app_backends() if pids is None else pids
        for pid in pids:
            self.db.scalar("SELECT pg_terminate_backend(:pid)", pid=pid)
        deadline = time.monotonic() + 5
        while set(pids) & set(self.app_backends()):
            assert time.monotonic() < deadline, "backends still alive"
            time.sleep(0.01)
        return len(pids)


@pytest.fixture
def direct(db: Database) -> Direct:
    return Direct(db, Client("auth"), Client("tasks"), Client("health"))


def test_every_route_answers_after_the_server_ended_the_warm_connection(direct: Direct) -> None:
    """Killed between two requests of a warm container: the next request succeeds, on a
    connection handed out without a ping (it was checked in moments ago)."""
    account = new_account(direct, "ada@example.com")
    for route, call in database_routes(direct, account).items():
        assert direct.terminate() >= 1, route
        response = call()
        assert response.status == SUCCESS.get(route, 200), (route, response.body)
    # Nothing ran twice: one sign-up, one create (and the account's first task, deleted).
    assert direct.db.scalar('SELECT count(*) FROM "user"') == 2
    assert direct.db.rows("SELECT title, deleted_at IS NOT NULL FROM task ORDER BY id") == [
        ("y", True),
        ("x", False),
    ]


@contextmanager
def on_statement(
    engine: Engine, when: Literal["before", "after"], starting: str, action: Callable[[int], object]
) -> Iterator[list[int]]:
    """Call `action(backend pid)` once, before or after the first statement of the app's
    engine that starts with `starting`; the pids it was called with."""
    called: list[int] = []

    def listener(connection: sa.Connection, _cursor: Any, statement: str, *_: Any) -> None:
        if not called and statement.startswith(starting):
            pid = connection.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
            called.append(pid)
            action(pid)

    name = f"{when}_cursor_execute"
    event.listen(engine, name, listener)
    try:
        yield called
    finally:
        event.remove(engine, name, listener)


# The server process is named by the connection's backend pid, which PgBouncer hides.
@pytest.mark.direct_only
@pytest.mark.parametrize("path", ["/api/tasks", "/api/tasks/{task_id}"])
def test_a_read_whose_connection_dies_mid_request_is_read_again(direct: Direct, path: str) -> None:
    """The user was loaded on the connection; it dies before the task query: 200."""
    account = new_account(direct, "ada@example.com")
    url = path.format(task_id=account.task_id)
    with on_statement(
        get_engine(), "before", "SELECT task.", lambda pid: direct.terminate([pid])
    ) as killed:
        response = direct.tasks.get(url, token=account.access)
    assert killed, "the task query never ran"
    assert response.status == 200, response.body
    body = response.json()
    titles = [task["title"] for task in body["items"]] if "items" in body else [body["title"]]
    assert titles == ["before"]


# The server process is named by the connection's backend pid, which PgBouncer hides.
@pytest.mark.direct_only
@pytest.mark.parametrize(
    ("when", "starting", "status", "rows"),
    [
        # Under its first statement, a read: nothing was written, so the request runs
        # again on a new connection.
        pytest.param("before", "SELECT", 201, 1, id="before-it-wrote"),
        # The INSERT reached the server; the connection dies before COMMIT.
        pytest.param("after", "INSERT INTO task", 503, 0, id="after-the-insert"),
    ],
)
def test_a_create_whose_connection_dies_is_done_once_or_absent(
    direct: Direct, when: Literal["before", "after"], starting: str, status: int, rows: int
) -> None:
    account = new_account(direct, "ada@example.com")
    with on_statement(get_engine(), when, starting, lambda pid: direct.terminate([pid])) as killed:
        response = direct.tasks.post("/api/tasks", json_body={"title": "t"}, token=account.access)
    assert killed
    assert response.status == status, response.body
    if status == 503:
        assert response.headers["retry-after"]
    assert direct.db.scalar("SELECT count(*) FROM task WHERE title = 't'") == rows
    assert direct.tasks.get("/api/tasks", token=account.access).status == 200


def test_a_create_killed_while_its_insert_runs_is_absent(direct: Direct) -> None:
    """An INSERT is on the server, waiting for a lock, when its process is ended: 503 and
    no row; not run again on another connection.

    The INSERT that waits is the create's second, its idempotency record's, behind
    another transaction's uncommitted record with the same key (the task's own INSERT
    has run by then; the user's row locks that come before it are no INSERT)."""
    account = new_account(direct, "ada@example.com")
    user_id = direct.db.scalar('SELECT id FROM "user"')
    with direct.db.engine.connect() as blocker:
        blocker.execute(
            sa.text(
                "INSERT INTO idempotency_key (user_id, key, fingerprint, status_code, body,"
                " location, etag, created_at)"
                " VALUES (:id, 'in-flight', 'x', 201, '{}', '/x', 'x', now())"
            ),
            {"id": user_id},
        )
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(
                direct.tasks.post,
                "/api/tasks",
                json_body={"title": "in flight"},
                token=account.access,
                headers={"Idempotency-Key": "in-flight"},
            )
            waiting = (
                "SELECT pid FROM pg_stat_activity"
                " WHERE query LIKE 'INSERT INTO idempotency_key%%' AND wait_event_type = 'Lock'"
            )
            deadline = time.monotonic() + ANSWER_WITHIN
            while (pid := direct.db.scalar(waiting)) is None:
                assert time.monotonic() < deadline, "the INSERT never reached the server"
                time.sleep(0.01)
            direct.terminate([pid])
            blocker.rollback()
            response = future.result(timeout=ANSWER_WITHIN)
    assert response.status == 503, response.body
    assert direct.db.scalar("SELECT count(*) FROM task WHERE title = 'in flight'") == 0
    assert direct.tasks.get("/api/tasks", token=account.access).status == 200


# ---------------------------------------------------------------------------------------
# Statements that run too long: statement_timeout ends them on the server.

STATEMENT_TIMEOUT_MS = 300


@pytest.fixture
def slow(db: Database) -> Iterator[Direct]:
    with statement_timeout(db, STATEMENT_TIMEOUT_MS):
        yield Direct(db, Client("auth"), Client("tasks"), Client("health"))


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_statement_past_the_timeout_is_503_and_the_connection_serves_on(
    slow: Direct, method: str
) -> None:
    """The task table is locked, so the task query waits until statement_timeout ends it:
    503 with Retry-After within about the timeout, and the same pooled connection (the
    same server process, when no pooler is between) answers the next request. Through
    PgBouncer the timeout is the database's default, which the migrate function set."""
    account = new_account(slow, "ada@example.com")
    pids = slow.app_backends()
    with slow.db.engine.connect() as blocker:
        blocker.execute(sa.text("LOCK TABLE task IN ACCESS EXCLUSIVE MODE"))
        response, elapsed = timed(
            lambda: slow.tasks.request(
                method,
                "/api/tasks",
                json_body={"title": "x"} if method == "POST" else None,
                token=account.access,
            )
        )
        blocker.rollback()
    assert response.status == 503, response.body
    assert response.headers["retry-after"] == "5"
    assert response.json()["detail"] == "The database took too long to answer; try again shortly."
    assert STATEMENT_TIMEOUT_MS / 1000 <= elapsed < STATEMENT_TIMEOUT_MS / 1000 + 1.0
    listed = slow.tasks.get("/api/tasks", token=account.access)
    assert listed.status == 200
    assert [task["title"] for task in listed.json()["items"]] == ["before"]
    if slow.db.pooler is None:
        assert slow.app_backends() == pids


def test_every_connection_carries_the_statement_timeout(db: Database) -> None:
    with get_engine().connect() as connection:
        assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == "5s"
