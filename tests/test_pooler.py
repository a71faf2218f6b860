"""The production path's pooler: the API behind PgBouncer in transaction mode (RDS Proxy's
stand-in), with no startup parameters and no statement that pins a session, and the
database's defaults (statement timeout, UTC) that replace them."""

import threading

import psycopg2
import pytest
import sqlalchemy as sa

from taskapi.db import get_engine
from tests.support.client import Client
from tests.support.database import (
    POOLED_DATABASE_TIME_ZONE,
    Database,
    postgres_admin_url,
)
from tests.support.environment import configure
from tests.support.pgbouncer import PgBouncer
from tests.support.statement_log import log_statements
from tests.support.tasks import Account, create


@pytest.mark.parametrize("empty_database", ["pgbouncer"], indirect=True)
def test_the_pooler_refuses_startup_options_as_rds_proxy_does(
    empty_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the engine sent before (`options=-c statement_timeout=...`) is refused by the
    tests' PgBouncer, as by RDS Proxy; the API's own connections get through."""
    url = sa.make_url(empty_database.url)
    with pytest.raises(psycopg2.OperationalError, match="unsupported startup parameter: options"):
        psycopg2.connect(
            host=url.host,
            port=url.port,
            user=url.username,
            dbname=url.database,
            options="-c statement_timeout=5000",
        )
    configure(monkeypatch, stage="test", database_url=empty_database.url)
    with get_engine().connect() as connection:
        assert connection.exec_driver_sql("SELECT 1").scalar() == 1


@pytest.mark.postgres_only
def test_every_api_connection_is_utc_with_the_statement_timeout(db: Database) -> None:
    """Through the pooler on a database whose default zone was Asia/Tokyo before the
    migrate function ran (directly: the server's own defaults), the API's connection, and
    each of four in transactions at once (so each on a server connection of its own),
    read UTC and 5 s."""
    if db.pooler is not None:
        assert POOLED_DATABASE_TIME_ZONE != "UTC"
    with get_engine().connect() as connection:
        assert connection.exec_driver_sql("SHOW timezone").scalar() == "UTC"
        assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == "5s"
    # And on the server connections of clients in transactions at once.
    results: list[tuple[str, str]] = []
    barrier = threading.Barrier(4)

    def read_settings() -> None:
        with sa.create_engine(db.url, poolclass=sa.NullPool).connect() as connection:
            connection.begin()
            barrier.wait(timeout=10)
            results.append(
                (
                    connection.exec_driver_sql("SHOW timezone").scalar_one(),
                    connection.exec_driver_sql("SHOW statement_timeout").scalar_one(),
                )
            )
            barrier.wait(timeout=10)

    threads = [threading.Thread(target=read_settings) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [("UTC", "5s")] * 4


def test_the_latest_timestamp_utc_holds_is_served_on_any_zone(
    client: Client, ada: Account, db: Database
) -> None:
    """A task due at 9999-12-31T23:30Z: on a database whose zone was east of UTC it would
    read back as year 10000, which Python cannot hold, and break the owner's list for good
    (issue 29, finding 5). Every route serves it; it can be removed."""
    created = create(client, ada, title="Far", due_at="9999-12-31T23:30:00Z").json()
    path = f"/api/tasks/{created['id']}"
    assert created["due_at"] == "9999-12-31T23:30:00Z"
    listed = client.get("/api/tasks", token=ada.token)
    assert listed.status == 200, listed.body
    assert [task["due_at"] for task in listed.json()["items"]] == ["9999-12-31T23:30:00Z"]
    read = client.get(path, token=ada.token)
    assert (read.status, read.json()["due_at"]) == (200, "9999-12-31T23:30:00Z")
    put = client.put(path, json_body={"title": "Farther"}, token=ada.token)
    assert (put.status, put.json()["due_at"]) == (200, "9999-12-31T23:30:00Z")
    earliest = client.put(path, json_body={"due_at": "0001-01-01T00:00:00Z"}, token=ada.token)
    assert (earliest.status, earliest.json()["due_at"]) == (200, "0001-01-01T00:00:00Z")
    assert client.get("/api/tasks", token=ada.token).status == 200
    assert client.delete(path, token=ada.token).status == 204
    assert client.get("/api/tasks", token=ada.token).json()["items"] == []


@pytest.mark.parametrize(
    ("due_at", "reason"),
    [
        ("0001-01-01T00:30:00+01:00", "outside the years 1 to 9999 once converted to UTC"),
        ("9999-12-31T23:30:00-01:00", "outside the years 1 to 9999 once converted to UTC"),
        ("10000-01-01T00:00:00Z", "datetime"),
    ],
)
def test_a_timestamp_utc_cannot_hold_is_422_with_the_reason(
    client: Client, ada: Account, db: Database, due_at: str, reason: str
) -> None:
    """Refused at the request, with the field and why, before anything is stored: never
    a row that later reads cannot hold."""
    response = client.post(
        "/api/tasks", json_body={"title": "Out of range", "due_at": due_at}, token=ada.token
    )
    assert response.status == 422, response.body
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "due_at"]
    assert reason in error["msg"], error
    assert db.scalar("SELECT count(*) FROM task") == 0


@pytest.mark.parametrize("empty_database", ["pgbouncer"], indirect=True)
def test_the_pinning_check_finds_each_kind_of_pinning_statement(
    empty_database: Database, pgbouncer: PgBouncer
) -> None:
    """The check that every run through the pooler ends with (`migrated_database`) reads
    the server's real log: each statement here that pins is found, with its reason, and
    the transaction-scoped ones are not."""
    log = log_statements(postgres_admin_url() or "", empty_database.name)
    if log is None:
        pytest.skip("the server's log cannot be read")
    pinning = [
        "SET search_path = public",
        "SELECT set_config('search_path', 'public', false)",
        "SELECT pg_advisory_lock(1)",
        "PREPARE p AS SELECT 1",
        "LISTEN channel",
        "CREATE TEMPORARY TABLE t (x int)",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "DISCARD PLANS",
    ]
    harmless = [
        "SET LOCAL statement_timeout = 100",
        "SELECT set_config('statement_timeout', '100', true)",
        "SELECT pg_advisory_xact_lock(1)",
    ]
    # A session of its own on a new server connection, which reads log_statement.
    pgbouncer.reconnect(empty_database.name)
    engine = sa.create_engine(empty_database.url, poolclass=sa.NullPool)
    with engine.connect() as connection:
        for statement in [*harmless, *pinning]:
            connection.exec_driver_sql(statement)
        connection.rollback()
    engine.dispose()
    found = log.pinning()
    assert [sql for _, sql in found] == pinning
    assert {reason for reason, _ in found} >= {
        "session SET",
        "session set_config",
        "session advisory lock",
        "prepared statement",
        "LISTEN or LOAD",
        "temporary object",
        "held cursor",
        "RESET or DISCARD",
    }
