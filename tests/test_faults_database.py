"""PostgreSQL goes away under a warm container, and comes back.

A TCP proxy of the test's own (`tests/tcp_proxy.py`) sits between the handlers and
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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from sqlalchemy.engine import make_url

from taskapi.db import get_engine
from tests.auth_helpers import PASSWORD, signup, tokens
from tests.conftest import ROOT, Client, Database, Response, configure
from tests.tcp_proxy import TcpProxy

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


def new_account(setup: Setup, email: str) -> Account:
    access, refresh = tokens(signup(setup.auth, email=email))
    created = setup.tasks.post("/api/tasks", json_body={"title": "before"}, token=access)
    assert created.status == 201, created.body
    return Account(access, refresh, created.json()["id"])


def database_routes(setup: Setup, account: Account) -> dict[str, Any]:
    """Every route that needs the database, as a zero-argument call."""
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
        "POST /api/auth/logout": lambda: auth.post("/api/auth/logout", token=token),
        "GET /api/auth/me": lambda: auth.get("/api/auth/me", token=token),
        "GET /health/db": lambda: setup.health.get("/health/db"),
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
