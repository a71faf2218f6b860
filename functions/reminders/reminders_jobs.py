"""Reminders: each due reminder claimed by one run, emailed, and marked sent, once.

Each reminder is its own transaction: one UPDATE claims the soonest due reminder and
marks it sent (`reminded_at`), the email goes out while that row stays locked, and the
commit makes the mark final. On PostgreSQL the claim skips rows that another run holds
(`FOR UPDATE SKIP LOCKED`), so overlapping runs share the work and never send one
reminder twice; on SQLite the UPDATE takes the database's write lock, which a second run
waits for, and then finds the reminder marked. An email that fails is rolled back (the
reminder stays due) and skipped for the rest of the run, to be tried again by the next
one, until a day after its time: then it is given up (marked, logged as an error and
counted), since an address the mail server refuses for good would otherwise cost an
attempt every minute for ever. A run that stops half-way (its time budget, a crash, a
database error) leaves the unsent ones due. Only a crash between the mail server's
acceptance and the commit can send one again.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import col

from taskapi.changes import TASKS
from taskapi.jobs import RunResult, ScheduledRun
from taskapi.mail import send_email
from taskapi.metrics import METRICS_NAMESPACE, Unit, put_metrics
from taskapi.models import User

logger = logging.getLogger("taskapi.reminders")

# Stop claiming this long before the function's own timeout (an email takes seconds at
# worst: SMTP_TIMEOUT_SECONDS per step).
TIMEOUT_MARGIN_SECONDS = 10.0
# A reminder whose email still fails this long after its time is given up. A day outlasts
# a mail server's outage (a reminder sent hours late still has some use) and bounds what
# an address that is refused for good costs: 1,440 failed attempts.
GIVE_UP_AFTER = timedelta(days=1)

_NOW = sa.bindparam("now", type_=TASKS.c.remind_at.type)
_DUE = sa.and_(
    TASKS.c.remind_at.is_not(None),
    TASKS.c.reminded_at.is_(None),
    TASKS.c.remind_at <= _NOW,
    TASKS.c.deleted_at.is_(None),
)
_OWNER = sa.select(col(User.email)).where(col(User.id) == TASKS.c.user_id, col(User.is_active))

# The soonest due reminder that no other run holds, claimed and marked in one statement.
_CLAIM = (
    sa.update(TASKS)
    .where(
        TASKS.c.id
        == sa.select(TASKS.c.id)
        .where(
            _DUE,
            _OWNER.exists(),
            TASKS.c.id.not_in(sa.bindparam("skipped", expanding=True)),
        )
        .order_by(TASKS.c.remind_at, TASKS.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery(),
        # Checked again on the row as it is now (another run may have marked it).
        _DUE,
    )
    .values(reminded_at=_NOW)
    .returning(TASKS.c.id, TASKS.c.user_id, TASKS.c.title, TASKS.c.due_at, TASKS.c.remind_at)
)
_OWNER_EMAIL = sa.select(col(User.email)).where(col(User.id) == sa.bindparam("user_id"))


@dataclass
class RemindersResult(RunResult):
    sent: int = 0
    failed: int = 0
    given_up: int = 0


def reminder_text(row: Any) -> tuple[str, str]:
    """The subject and text of a task's reminder."""
    due = f"It is due {row.due_at:%Y-%m-%d %H:%M} UTC." if row.due_at else "It has no due date."
    text = (
        f'You asked to be reminded of your task "{row.title}" at '
        f"{row.remind_at:%Y-%m-%d %H:%M} UTC.\n\n{due}\n"
    )
    return f"Reminder: {row.title}", text


def run_reminders(run: ScheduledRun) -> RemindersResult:
    """Send every reminder due by the run's time, one transaction each, within the time
    budget; never raises for one email, nor for a database error (the next run carries
    on)."""
    engine, now = run.engine, run.now
    clock = run.clock(
        budget=run.settings.reminders_time_budget_seconds, margin=TIMEOUT_MARGIN_SECONDS
    )
    result = RemindersResult()
    skipped: list[int] = []
    try:
        for _ in clock.rounds(result):
            with engine.connect() as connection:
                row = connection.execute(_CLAIM, {"now": now, "skipped": skipped}).first()
                if row is None:
                    connection.commit()
                    break
                to = connection.execute(_OWNER_EMAIL, {"user_id": row.user_id}).scalar_one()
                subject, text = reminder_text(row)
                if send_email(to=to, subject=subject, text=text):
                    connection.commit()
                    result.sent += 1
                    continue
                result.failed += 1
                if now - row.remind_at >= GIVE_UP_AFTER:
                    # The mark stays: no run tries it again (send_email logged why).
                    connection.commit()
                    result.given_up += 1
                    logger.error(
                        "reminder given up: its email still fails a day after its time",
                        extra={"task_id": row.id, "remind_at": row.remind_at.isoformat()},
                    )
                else:
                    # Still due: the next run tries again (send_email logged why).
                    connection.rollback()
                    skipped.append(row.id)
    except sa.exc.SQLAlchemyError as error:
        logger.error(
            "reminders run stopped by a database error",
            extra={"error": type(error).__name__, "sent": result.sent},
            exc_info=error,
        )
        result.complete = False
    result.duration_ms = clock.elapsed_ms()
    return result


def publish_metrics(result: RemindersResult, *, stage: str) -> None:
    """One EMF line: reminders sent, failed and given up, and the run's duration."""
    metrics: dict[str, tuple[float, Unit]] = {
        "RemindersSent": (result.sent, "Count"),
        "RemindersFailed": (result.failed, "Count"),
        "RemindersGivenUp": (result.given_up, "Count"),
        "RemindersDuration": (result.duration_ms, "Milliseconds"),
    }
    put_metrics(namespace=METRICS_NAMESPACE, dimensions={"Stage": stage}, metrics=metrics)
