"""Reminders, on SQLite and PostgreSQL, received on a real SMTP server (aiosmtpd in the test
process): each due reminder is emailed once, however runs overlap or fail half-way, and
a reminder moved before it fires is sent once, at its new time."""

import email
import email.policy
import json
import socket
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from localapi.events import LambdaContext
from taskapi.db import build_engine, get_engine
from taskapi.jobs import ScheduledRun
from taskapi.models import utcnow
from taskapi.settings import get_database_url, get_settings
from tests.support.client import Client
from tests.support.database import Database
from tests.support.emf import emf_lines
from tests.support.environment import configure
from tests.support.functions import ROOT, load_function
from tests.support.tasks import Account, create, insert_task, make_account

SCHEDULED_EVENT = json.loads((ROOT / "events" / "schedule-reminders.json").read_text())
DUE = 200


@dataclass
class Mailbox:
    """What the SMTP server accepted; it refuses every message after `accept_only`."""

    accept_only: int | None = None
    subjects: list[str] = field(default_factory=list)
    recipients: list[str] = field(default_factory=list)
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 (aiosmtpd's name)
        with self.lock:
            if self.accept_only is not None and len(self.subjects) >= self.accept_only:
                self.refused += 1
                return "451 Requested action aborted: local problem in processing"
            message = email.message_from_bytes(
                envelope.original_content or b"", policy=email.policy.default
            )
            self.subjects.append(str(message["Subject"]))
            self.recipients.append(str(message["To"]))
        return "250 OK"


@pytest.fixture
def mailbox(db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[Mailbox]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    configure(
        monkeypatch,
        email_delivery="smtp",
        smtp_server="127.0.0.1",
        smtp_port=str(port),
        smtp_starttls="false",
    )
    try:
        yield box
    finally:
        controller.stop()


def jobs() -> ModuleType:
    load_function("reminders")
    return sys.modules["reminders_jobs"]


def run(
    module: ModuleType | None = None, engine: sa.Engine | None = None, **options: Any
) -> dict[str, Any]:
    job = ScheduledRun(engine or get_engine(), get_settings(), **options)
    result = (module or jobs()).run_reminders(job)
    summary: dict[str, Any] = result.summary()
    return summary


def seed_due(count: int) -> list[Account]:
    """`count` due reminders, spread over four users, each task with its own title."""
    owners = [make_account(f"user{n}@example.com") for n in range(4)]
    past = utcnow() - timedelta(minutes=5)
    for n in range(count):
        insert_task(owners[n % 4], f"task {n}", remind_at=past - timedelta(seconds=n))
    return owners


def expected_subjects(count: int) -> Counter[str]:
    return Counter(f"Reminder: task {n}" for n in range(count))


def test_two_overlapping_runs_send_every_due_reminder_once(mailbox: Mailbox, db: Database) -> None:
    owners = seed_due(DUE)
    # Neither due yet nor due at all: not sent.
    insert_task(owners[0], "later", remind_at=utcnow() + timedelta(hours=1))
    insert_task(owners[0], "none")
    insert_task(owners[0], "trashed", remind_at=utcnow(), deleted_at=utcnow())

    barrier = threading.Barrier(2)
    summaries: list[dict[str, Any]] = []
    module = jobs()  # loaded once, before the threads

    def one_run() -> None:
        # Each run is a container of its own, with its own engine (and connection).
        engine = build_engine(get_database_url(), get_settings())
        barrier.wait(timeout=30)
        summaries.append(run(module, engine))
        engine.dispose()

    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert Counter(mailbox.subjects) == expected_subjects(DUE)
    assert sum(s["sent"] for s in summaries) == DUE
    if db.backend == "postgresql":
        # They did overlap: each claimed a share (SKIP LOCKED). On SQLite a run's claim
        # waits for the other's write lock, and either may end up sending them all.
        assert all(s["sent"] > 0 for s in summaries), summaries
    assert [s["failed"] for s in summaries] == [0, 0]
    if db.backend == "postgresql":
        assert all(s["complete"] for s in summaries)
    else:
        # SQLite's busy handler is not fair: a run that commits and claims again at once can
        # keep the write lock from the other past busy_timeout on a loaded machine, and that
        # run then stops as a database error (incomplete) without having sent anything
        # twice; the other run, or the next, sends the rest.
        assert any(s["complete"] for s in summaries), summaries
    per_owner = Counter(mailbox.recipients)
    assert per_owner == {f"user{n}@example.com": DUE // 4 for n in range(4)}
    assert db.scalar("SELECT count(*) FROM task WHERE reminded_at IS NOT NULL") == DUE
    # Nothing left: a third run sends nothing.
    assert run()["sent"] == 0
    assert len(mailbox.subjects) == DUE


def test_a_run_that_fails_half_way_is_finished_by_the_next(
    mailbox: Mailbox, db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_due(DUE)
    mailbox.accept_only = DUE // 2  # then the mail server refuses every message

    first = run()

    assert (first["sent"], first["failed"], first["complete"]) == (DUE // 2, DUE // 2, True)
    assert mailbox.refused == DUE // 2
    assert db.scalar("SELECT count(*) FROM task WHERE reminded_at IS NULL") == DUE // 2
    capsys.readouterr()
    mailbox.accept_only = None

    second = load_function("reminders").handler(SCHEDULED_EVENT, LambdaContext())

    assert (second["sent"], second["failed"], second["complete"]) == (DUE // 2, 0, True)
    assert Counter(mailbox.subjects) == expected_subjects(DUE)
    output = capsys.readouterr().out
    (metrics,) = [
        json.loads(line)
        for line in output.splitlines()
        if line.startswith('{"_aws"') and "RemindersSent" in line
    ]
    assert (metrics["RemindersSent"], metrics["RemindersFailed"]) == (DUE // 2, 0)
    assert metrics["Stage"] == "test"


def test_a_run_out_of_time_leaves_the_rest_to_the_next(mailbox: Mailbox) -> None:
    seed_due(10)
    stopped = run(remaining_seconds=5)  # less than the margin before the timeout
    assert (stopped["sent"], stopped["complete"]) == (0, False)
    assert run()["sent"] == 10
    assert Counter(mailbox.subjects) == expected_subjects(10)


def test_a_reminder_moved_before_it_fires_is_sent_once_at_the_new_time(
    mailbox: Mailbox, client: Client, ada: Account
) -> None:
    start = utcnow().replace(microsecond=0)
    first, moved = start + timedelta(minutes=10), start + timedelta(minutes=30)
    created = create(client, ada, title="Dentist", remind_at=first.isoformat())
    path = created.headers["location"]
    changed = client.put(path, json_body={"remind_at": moved.isoformat()}, token=ada.token)
    assert changed.status == 200

    assert run(now=first + timedelta(minutes=1))["sent"] == 0
    assert run(now=moved - timedelta(seconds=1))["sent"] == 0
    assert run(now=moved)["sent"] == 1
    assert run(now=moved + timedelta(minutes=5))["sent"] == 0
    assert mailbox.subjects == ["Reminder: Dentist"]
    assert mailbox.recipients == ["ada@example.com"]

    # A new time re-arms it: one more email, at that time.
    later = moved + timedelta(hours=1)
    client.put(path, json_body={"remind_at": later.isoformat()}, token=ada.token)
    assert run(now=later)["sent"] == 1
    assert mailbox.subjects == ["Reminder: Dentist"] * 2


def test_completed_and_deleted_tasks_remind_no_one(
    mailbox: Mailbox, client: Client, ada: Account
) -> None:
    when = (utcnow() + timedelta(minutes=1)).isoformat()
    done = create(client, ada, title="done", remind_at=when).headers["location"]
    gone = create(client, ada, title="gone", remind_at=when).headers["location"]
    create(client, ada, title="kept", remind_at=when)
    client.patch(f"{done}/complete", token=ada.token)
    client.delete(gone, token=ada.token)
    assert run(now=utcnow() + timedelta(minutes=2))["sent"] == 1
    assert mailbox.subjects == ["Reminder: kept"]


def test_an_unreachable_mail_server_fails_the_emails_not_the_run(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    configure(
        monkeypatch,
        email_delivery="smtp",
        smtp_server="127.0.0.1",
        smtp_port=str(closed_port),
        smtp_starttls="false",
    )
    seed_due(3)
    result = run()
    assert (result["sent"], result["failed"], result["complete"]) == (0, 3, True)
    assert db.scalar("SELECT count(*) FROM task WHERE reminded_at IS NULL") == 3


def test_a_reminder_still_failing_a_day_late_is_given_up_once(
    mailbox: Mailbox, db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    owner = make_account("refused@example.com")
    now = utcnow()
    insert_task(owner, "a day late", remind_at=now - timedelta(days=1))
    insert_task(owner, "an hour late", remind_at=now - timedelta(hours=1))
    mailbox.accept_only = 0
    capsys.readouterr()
    result = load_function("reminders").handler(SCHEDULED_EVENT, LambdaContext())
    assert (result["sent"], result["failed"], result["given_up"]) == (0, 2, 1)
    assert db.scalar("SELECT title FROM task WHERE reminded_at IS NULL") == "an hour late"
    (metrics,) = [line for line in emf_lines(capsys.readouterr().out) if "RemindersSent" in line]
    assert (metrics["RemindersFailed"], metrics["RemindersGivenUp"]) == (2, 1)
    # The next run tries the hour-late one alone; once the server takes mail it is sent.
    mailbox.accept_only = None
    assert (run(now=now)["sent"], mailbox.subjects) == (1, ["Reminder: an hour late"])
    assert mailbox.refused == 2


def test_the_owner_of_a_reminder_is_a_live_account(mailbox: Mailbox, db: Database) -> None:
    owner = make_account("gone@example.com")
    insert_task(owner, "inactive's", remind_at=utcnow())
    db_execute(db, 'UPDATE "user" SET is_active = false')
    assert run()["sent"] == 0
    assert mailbox.subjects == []


def db_execute(db: Database, sql: str) -> None:
    with db.engine.begin() as connection:
        connection.exec_driver_sql(sql)
