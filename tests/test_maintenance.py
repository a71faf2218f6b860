"""The scheduled maintenance run, through MaintenanceFunction's real handler, on databases
seeded with old and new rows of every kind (SQLite and PostgreSQL)."""

import hashlib
import json
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col

from localapi.events import LambdaContext
from taskapi.db import get_engine
from taskapi.models import (
    AccountToken,
    AccountTokenPurpose,
    AuthSession,
    IdempotencyKey,
    LoginAttempt,
    LoginDevice,
    SecurityEvent,
    SecurityEventType,
    Task,
    User,
    utcnow,
)
from tests.support.auth import PASSWORD, login, signup
from tests.support.client import Client
from tests.support.database import (
    BACKENDS,
    Database,
    create_database,
    drop_database,
    migrate,
    pooler_for,
)
from tests.support.emf import emf_lines
from tests.support.environment import configure
from tests.support.functions import ROOT, load_function
from tests.support.tasks import insert_task, make_account

SCHEDULED_EVENT = json.loads((ROOT / "events" / "schedule-maintenance.json").read_text())
BATCH_SIZE = 2
# Old rows of each kind: more than two batches' worth, so the run must loop.
OLD_PER_KIND = 5
# The tables that `seed` gives OLD_PER_KIND old rows (auth_session gets twice as many).
FIVE_OLD_ROWS = (
    "login_attempt",
    "idempotency_key",
    "task",
    "security_event",
    "account_token",
    "login_device",
)


def run(context: Any = None) -> dict[str, Any]:
    result: dict[str, Any] = load_function("maintenance").handler(
        SCHEDULED_EVENT, context or LambdaContext()
    )
    return result


@contextmanager
def deleted_per_statement() -> Iterator[list[tuple[str, int]]]:
    """(table, rows) of every DELETE the app's engine runs while the block runs. A DELETE
    ... RETURNING (the trash's, whose rows leave tombstones) counts its rows as they are
    fetched, so its count is read from the tombstones written after it."""
    seen: list[tuple[str, int]] = []

    def record(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        words = statement.split()
        if words[0].upper() == "DELETE" and "RETURNING" not in statement.upper():
            seen.append((words[2].strip('"'), cursor.rowcount))
        elif words[0].upper() == "DELETE":
            seen.append((words[2].strip('"'), 0))
        elif words[:3] == ["INSERT", "INTO", "task_tombstone"] and seen[-1][0] == "task":
            seen[-1] = ("task", cursor.rowcount)

    engine = get_engine()
    sa.event.listen(engine, "after_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "after_cursor_execute", record)


@pytest.fixture
def seeded(db: Database, monkeypatch: pytest.MonkeyPatch) -> dict[str, set[Any]]:
    """Old and new rows of every kind; the keys of the rows that must survive the run."""
    configure(
        monkeypatch,
        maintenance_batch_size=str(BATCH_SIZE),
        trash_retention_days="30",
        login_lockout_minutes="15",
        security_event_days="90",
    )
    return seed(get_engine())


def seed(engine: sa.Engine) -> dict[str, set[Any]]:
    now = utcnow()
    keep: dict[str, set[Any]] = {"sessions": set(), "login_attempts": set(), "keys": set()}
    keep["tasks"] = set()
    with Session(engine) as session:

        def new_user() -> User:
            row = User(email=f"{uuid.uuid4().hex[:8]}@example.com", name="u", hashed_password="x")
            session.add(row)
            session.flush()
            return row

        user = new_user()

        def login(expires: timedelta, revoked: timedelta | None = None) -> AuthSession:
            row = AuthSession(
                user_id=user.id,
                refresh_jti=uuid.uuid4().hex,
                created_at=now - timedelta(days=10),
                expires_at=now + expires,
                revoked_at=None if revoked is None else now + revoked,
            )
            session.add(row)
            return row

        def attempt(email: str, last: timedelta) -> None:
            session.add(
                LoginAttempt(
                    email=email,
                    source="127.0.0.1",
                    failed_count=3,
                    first_failed_at=now + last,
                    last_failed_at=now + last,
                )
            )

        def key(name: str, age: timedelta) -> None:
            session.add(
                IdempotencyKey(
                    user_id=user.id,
                    key=name,
                    fingerprint="0" * 64,
                    status_code=201,
                    body="{}",
                    location="/api/tasks/1",
                    etag='"1-1"',
                    created_at=now - age,
                )
            )

        def event(age: timedelta) -> SecurityEvent:
            row = SecurityEvent(user_id=user.id, type=SecurityEventType.LOGIN, created_at=now - age)
            session.add(row)
            return row

        def token(expires: timedelta) -> AccountToken:
            # One token per user and purpose: each gets a user of its own.
            row = AccountToken(
                user_id=new_user().id,
                purpose=AccountTokenPurpose.PASSWORD_RESET,
                token_hash=uuid.uuid4().hex,
                created_at=now - timedelta(minutes=30),
                expires_at=now + expires,
            )
            session.add(row)
            return row

        def device(unused: timedelta) -> LoginDevice:
            row = LoginDevice(
                user_id=user.id,
                token_hash=uuid.uuid4().hex,
                created_at=now - timedelta(days=400),
                last_used_at=now - unused,
            )
            session.add(row)
            return row

        def task(title: str, deleted: timedelta | None) -> Task:
            row = Task(
                user_id=user.id,
                title=title,
                deleted_at=None if deleted is None else now - deleted,
            )
            session.add(row)
            return row

        # Old: expired or revoked over a day ago; failures older than the window; keys
        # over 24 hours old; tasks deleted over 30 days ago; events over 90 days old;
        # tokens past their expiry; devices unused for over 90 days.
        for n in range(OLD_PER_KIND):
            login(expires=-timedelta(days=1, minutes=1 + n))
            login(expires=timedelta(days=3), revoked=-timedelta(days=2, minutes=n))
            attempt(f"old{n}@example.com", -timedelta(minutes=16 + n))
            key(f"old-{n}", timedelta(hours=24, minutes=1 + n))
            task(f"old {n}", deleted=timedelta(days=30, minutes=1 + n))
            event(timedelta(days=90, minutes=1 + n))
            token(-timedelta(seconds=1 + n))
            device(timedelta(days=90, minutes=1 + n))
        # New: each just inside its limit.
        new_rows = [
            login(expires=-timedelta(hours=23)),
            login(expires=timedelta(days=3), revoked=-timedelta(hours=23)),
            login(expires=timedelta(days=7)),
        ]
        attempt("recent@example.com", -timedelta(minutes=14))
        key("recent", timedelta(hours=23))
        new_tasks = [
            task("live", deleted=None),
            task("recently deleted", deleted=timedelta(days=29)),
        ]
        new_event = event(timedelta(days=89, hours=23))
        new_token = token(timedelta(minutes=1))
        # Created long ago, used lately: kept.
        new_device = device(timedelta(days=89, hours=23))
        session.commit()
        keep["devices"] = {new_device.id}
        keep["events"] = {new_event.id}
        keep["tokens"] = {new_token.user_id}
        keep["sessions"] = {row.id for row in new_rows}
        keep["login_attempts"] = {"recent@example.com"}
        keep["keys"] = {"recent"}
        keep["tasks"] = {row.id for row in new_tasks}
    return keep


def remaining(database_engine: sa.Engine) -> dict[str, set[Any]]:
    with database_engine.connect() as connection:

        def column(sql: str) -> set[Any]:
            return {row[0] for row in connection.execute(sa.text(sql))}

        sessions = {uuid.UUID(str(value)) for value in column("SELECT id FROM auth_session")}
        return {
            "sessions": sessions,
            "login_attempts": column("SELECT email FROM login_attempt"),
            "keys": column("SELECT key FROM idempotency_key"),
            "tasks": column("SELECT id FROM task"),
            "events": {uuid.UUID(str(v)) for v in column("SELECT id FROM security_event")},
            "tokens": {uuid.UUID(str(v)) for v in column("SELECT user_id FROM account_token")},
            "devices": {uuid.UUID(str(v)) for v in column("SELECT id FROM login_device")},
        }


def test_the_run_deletes_exactly_the_old_rows_in_bounded_batches(
    seeded: dict[str, set[Any]], db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    with deleted_per_statement() as deletes:
        result = run()

    assert result["deleted"] == {
        "sessions": 2 * OLD_PER_KIND,
        "login_attempts": OLD_PER_KIND,
        "idempotency_keys": OLD_PER_KIND,
        "trash": OLD_PER_KIND,
        "security_events": OLD_PER_KIND,
        "account_tokens": OLD_PER_KIND,
        "login_devices": OLD_PER_KIND,
        # The trash's tombstones are new: the changes feed keeps them for 90 days.
        "tombstones": 0,
    }
    assert (result["failed"], result["complete"]) == ([], True)
    assert remaining(db.engine) == seeded
    # No batch is larger than configured; each purge ran until a batch came up short.
    assert deletes, "no DELETE ran"
    assert all(rows <= BATCH_SIZE for _, rows in deletes), deletes
    per_table = {table: [rows for t, rows in deletes if t == table] for table, _ in deletes}
    assert per_table["auth_session"] == [2, 2, 2, 2, 2, 0]
    for table in FIVE_OLD_ROWS:
        assert per_table[table] == [2, 2, 1], table

    output = capsys.readouterr().out
    (emf,) = emf_lines(output)
    directive = emf["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "TaskApi"
    assert directive["Dimensions"] == [["Stage"]]
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {
        "SessionsDeleted": "Count",
        "LoginAttemptsDeleted": "Count",
        "IdempotencyKeysDeleted": "Count",
        "TrashedTasksDeleted": "Count",
        "SecurityEventsDeleted": "Count",
        "AccountTokensDeleted": "Count",
        "LoginDevicesDeleted": "Count",
        "TombstonesDeleted": "Count",
        "MaintenanceFailures": "Count",
        "MaintenanceDuration": "Milliseconds",
    }
    assert (emf["Stage"], emf["SessionsDeleted"], emf["TrashedTasksDeleted"]) == ("test", 10, 5)
    assert (emf["LoginAttemptsDeleted"], emf["IdempotencyKeysDeleted"]) == (5, 5)
    assert (emf["SecurityEventsDeleted"], emf["AccountTokensDeleted"]) == (5, 5)
    assert emf["LoginDevicesDeleted"] == 5
    assert emf["MaintenanceFailures"] == 0
    (log,) = [
        json.loads(line)
        for line in output.splitlines()
        if line.startswith("{") and json.loads(line).get("message") == "maintenance run"
    ]
    assert log["maintenance"] == result
    assert log["trigger"] == "schedule"

    # A second run finds nothing left to do.
    again = run()
    assert set(again["deleted"].values()) == {0}


def test_a_trashed_task_is_restorable_until_the_retention_ends(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, trash_retention_days="7")
    ada = make_account("ada@example.com")
    now = utcnow()
    kept = insert_task(ada, "six days", deleted_at=now - timedelta(days=6, hours=23))
    purged = insert_task(ada, "seven days", deleted_at=now - timedelta(days=7, seconds=1))
    assert run()["deleted"]["trash"] == 1
    client = Client("tasks")
    assert client.post(f"/api/tasks/{purged}/restore", token=ada.token).status == 404
    assert client.post(f"/api/tasks/{kept}/restore", token=ada.token).status == 200


def test_a_spent_time_budget_starts_no_batch(
    seeded: dict[str, set[Any]], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = remaining(db.engine)
    # Less than the 5-second margin left before the function's timeout.
    result = run(LambdaContext(timeout_seconds=4))
    assert result["complete"] is False
    assert set(result["deleted"].values()) == {0}
    assert remaining(db.engine) == before
    configure(monkeypatch, maintenance_time_budget_seconds="0", maintenance_batch_size="2")
    assert run()["complete"] is False


@pytest.fixture(params=BACKENDS)
def broken_database(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Database]:
    """A migrated database of its own, seeded, whose idempotency_key table is then dropped."""
    database = create_database(request.param, tmp_path, pooler_for(request, request.param))
    migrate(database.url)
    configure(monkeypatch, stage="test", database_url=database.url, maintenance_batch_size="2")
    seed(get_engine())
    with database.engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE idempotency_key"))
    yield database
    drop_database(database)


def test_a_failing_purge_does_not_stop_the_others(
    broken_database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run()
    assert result["failed"] == ["idempotency_keys"]
    assert result["deleted"] == {
        "sessions": 2 * OLD_PER_KIND,
        "login_attempts": OLD_PER_KIND,
        "idempotency_keys": 0,
        "trash": OLD_PER_KIND,
        "security_events": OLD_PER_KIND,
        "account_tokens": OLD_PER_KIND,
        "login_devices": OLD_PER_KIND,
        "tombstones": 0,
    }
    output = capsys.readouterr().out
    (emf,) = emf_lines(output)
    assert emf["MaintenanceFailures"] == 1
    errors = [
        json.loads(line)
        for line in output.splitlines()
        if line.startswith("{") and json.loads(line).get("message") == "maintenance purge failed"
    ]
    assert [(e["purge"], e["level"]) for e in errors] == [("idempotency_keys", "ERROR")]


def test_purges_cover_every_table_that_only_grows() -> None:
    load_function("maintenance")
    purges = sys.modules["maintenance_jobs"].PURGES
    assert {purge.table.name for purge in purges} == {
        "auth_session",
        "task_tombstone",
        *FIVE_OLD_ROWS,
    }
    # Keyed by primary key, however many columns it has (login_attempt may gain one).
    assert all(purge.table.primary_key.columns for purge in purges)


def test_a_device_is_forgotten_90_days_after_its_last_login(db: Database) -> None:
    auth = Client("auth")
    device = signup(auth).json()["device_token"]
    used_again = auth.post(
        "/api/auth/login",
        json_body={"email": "ada@example.com", "password": PASSWORD, "device_token": device},
    )
    assert used_again.json()["device_token"] == device
    # Signed up 100 days ago, last presented 89 days ago: kept; a login without the token
    # 91 days ago added a device that goes.
    tokenless = login(auth).json()["device_token"]
    with db.engine.begin() as connection:
        for token, unused in ((device, 89), (tokenless, 91)):
            # Typed columns: Python 3.12's sqlite3 deprecates its own datetime adapter.
            connection.execute(
                sa.update(LoginDevice)
                .where(col(LoginDevice.token_hash) == hashlib.sha256(token.encode()).hexdigest())
                .values(
                    created_at=utcnow() - timedelta(days=100),
                    last_used_at=utcnow() - timedelta(days=unused),
                )
            )
    assert run()["deleted"]["login_devices"] == 1
    assert db.scalar("SELECT count(*) FROM login_device") == 1
    # The forgotten token counts as none: the login gets a new one; the kept one is kept.
    for token, answer in ((tokenless, "new"), (device, "same")):
        response = auth.post(
            "/api/auth/login",
            json_body={"email": "ada@example.com", "password": PASSWORD, "device_token": token},
        )
        assert (response.json()["device_token"] == token) == (answer == "same"), answer
