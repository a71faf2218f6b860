"""The scheduled clean-up: rows that only grow, deleted in bounded batches (ended
sessions, old login failures, idempotency records, the trash, the security log past its
retention, expired emailed tokens, known devices long unused).

Each purge deletes at most `MAINTENANCE_BATCH_SIZE` rows per transaction, so no batch
holds locks for long or outlives the statement timeout, and stops starting batches once
the run's time budget is spent (the next hourly run carries on). A purge whose batch
fails is logged and counted, and the run goes on with the next one.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import col

from taskapi.changes import TOMBSTONES, record_pruned, remove_for_good, table_of
from taskapi.jobs import RunResult, ScheduledRun
from taskapi.metrics import METRICS_NAMESPACE, Unit, put_metrics
from taskapi.models import (
    IDEMPOTENCY_KEY_LIFETIME,
    KNOWN_DEVICE_LIFETIME,
    AccountToken,
    AuthSession,
    IdempotencyKey,
    LoginAttempt,
    LoginDevice,
    SecurityEvent,
    Task,
    TaskTombstone,
)
from taskapi.settings import Settings

logger = logging.getLogger("taskapi.maintenance")

# Sessions stay this long after they expire or are revoked (a support question about
# "why was I logged out" can still be answered), then go.
SESSION_GRACE = timedelta(days=1)
# Stop starting batches this long before the function's own timeout.
TIMEOUT_MARGIN_SECONDS = 5.0


# ---------------------------------------------------------------------------------------
# What each purge deletes: one function per kind of row, given the run's clock.


def ended_sessions(now: datetime, settings: Settings) -> sa.ColumnElement[bool]:
    """Sessions that expired, or were revoked, more than a day ago."""
    cutoff = now - SESSION_GRACE
    return sa.or_(col(AuthSession.expires_at) < cutoff, col(AuthSession.revoked_at) < cutoff)


def login_failures_past_their_window(now: datetime, settings: Settings) -> sa.ColumnElement[bool]:
    """Failed-login rows that can no longer lock anyone out: the run's last failure is more
    than LOGIN_LOCKOUT_MINUTES old, so its window and any lockout it started have passed
    (a lockout starts at a failure and lasts that long; a failure after the window
    starts a new run). The one place that knows which column says when a window ends."""
    window = timedelta(minutes=settings.login_lockout_minutes)
    return col(LoginAttempt.last_failed_at) < now - window


def idempotency_keys_past_their_lifetime(
    now: datetime, settings: Settings
) -> sa.ColumnElement[bool]:
    """Stored answers older than 24 hours: their keys are free again."""
    return col(IdempotencyKey.created_at) <= now - IDEMPOTENCY_KEY_LIFETIME


def trash_past_retention(now: datetime, settings: Settings) -> sa.ColumnElement[bool]:
    """Deleted tasks whose TRASH_RETENTION_DAYS have run out: removed for good."""
    cutoff = now - timedelta(days=settings.trash_retention_days)
    return sa.and_(col(Task.deleted_at).is_not(None), col(Task.deleted_at) < cutoff)


def security_events_past_retention(now: datetime, settings: Settings) -> sa.ColumnElement[bool]:
    """Security log entries older than SECURITY_EVENT_DAYS."""
    return col(SecurityEvent.created_at) < now - timedelta(days=settings.security_event_days)


def expired_account_tokens(now: datetime, settings: Settings) -> sa.ColumnElement[bool]:
    """Emailed tokens (password reset, email change) that can no longer be used."""
    return col(AccountToken.expires_at) <= now


def devices_long_unused(now: datetime, settings: Settings) -> sa.ColumnElement[bool]:
    """Known devices that have not logged in for KNOWN_DEVICE_LIFETIME: their tokens are
    forgotten (a later login with one is a new device's)."""
    return col(LoginDevice.last_used_at) < now - KNOWN_DEVICE_LIFETIME


def tombstones_past_retention(now: datetime, settings: Settings) -> sa.ColumnElement[bool]:
    """The changes feed's records of removed tasks, older than CHANGES_RETENTION_DAYS."""
    cutoff = now - timedelta(days=settings.changes_retention_days)
    return col(TaskTombstone.removed_at) < cutoff


# How a purge deletes the rows that one batch chose: the count deleted.
Remover = Callable[[Connection, sa.Table, sa.ColumnElement[bool], datetime], int]


def delete_rows(
    connection: Connection, table: sa.Table, chosen: sa.ColumnElement[bool], now: datetime
) -> int:
    return int(connection.execute(sa.delete(table).where(chosen)).rowcount)


def remove_trash(
    connection: Connection, table: sa.Table, chosen: sa.ColumnElement[bool], now: datetime
) -> int:
    # Each task leaves a tombstone, so that the changes feed still reports it gone.
    return len(remove_for_good(connection, chosen, now=now))


def delete_tombstones(
    connection: Connection, table: sa.Table, chosen: sa.ColumnElement[bool], now: datetime
) -> int:
    # Each user's feed learns how far its history now starts (a cursor before it is 410).
    pruned = connection.execute(
        sa.delete(table).where(chosen).returning(TOMBSTONES.c.user_id, TOMBSTONES.c.change_seq)
    ).all()
    record_pruned(connection, pruned)
    return len(pruned)


@dataclass(frozen=True)
class Purge:
    name: str  # the key in the run's counts
    metric: str  # the EMF metric of its count
    table: sa.Table
    condition: Callable[[datetime, Settings], sa.ColumnElement[bool]]
    remove: Remover = delete_rows


PURGES = (
    Purge("sessions", "SessionsDeleted", table_of(AuthSession), ended_sessions),
    Purge(
        "login_attempts",
        "LoginAttemptsDeleted",
        table_of(LoginAttempt),
        login_failures_past_their_window,
    ),
    Purge(
        "idempotency_keys",
        "IdempotencyKeysDeleted",
        table_of(IdempotencyKey),
        idempotency_keys_past_their_lifetime,
    ),
    Purge("trash", "TrashedTasksDeleted", table_of(Task), trash_past_retention, remove_trash),
    Purge(
        "tombstones",
        "TombstonesDeleted",
        TOMBSTONES,
        tombstones_past_retention,
        delete_tombstones,
    ),
    Purge(
        "security_events",
        "SecurityEventsDeleted",
        table_of(SecurityEvent),
        security_events_past_retention,
    ),
    Purge("account_tokens", "AccountTokensDeleted", table_of(AccountToken), expired_account_tokens),
    Purge("login_devices", "LoginDevicesDeleted", table_of(LoginDevice), devices_long_unused),
)


# ---------------------------------------------------------------------------------------
# Running them


def one_batch(
    table: sa.Table, condition: sa.ColumnElement[bool], batch_size: int
) -> sa.ColumnElement[bool]:
    """At most `batch_size` rows that match, chosen by primary key (however many columns
    it has). The condition is repeated outside the subquery: on PostgreSQL a row changed
    meanwhile (a task restored from the trash) is checked again before it goes."""
    key_columns = list(table.primary_key.columns)
    key: Any = key_columns[0] if len(key_columns) == 1 else sa.tuple_(*key_columns)
    chosen = sa.select(*key_columns).where(condition).limit(batch_size)
    return sa.and_(key.in_(chosen), condition)


@dataclass
class MaintenanceResult(RunResult):
    deleted: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)


def run_maintenance(run: ScheduledRun) -> MaintenanceResult:
    """Every purge in turn, within the time budget; never raises for a database error."""
    engine, settings, now = run.engine, run.settings, run.now
    clock = run.clock(
        budget=settings.maintenance_time_budget_seconds, margin=TIMEOUT_MARGIN_SECONDS
    )
    result = MaintenanceResult()
    for purge in PURGES:
        chosen = one_batch(
            purge.table, purge.condition(now, settings), settings.maintenance_batch_size
        )
        deleted = 0
        try:
            for _ in clock.rounds(result):
                with engine.begin() as connection:
                    count = purge.remove(connection, purge.table, chosen, now)
                deleted += count
                if count < settings.maintenance_batch_size:
                    break
        except sa.exc.SQLAlchemyError as error:
            # What was deleted before the failure stays deleted (each batch commits).
            logger.error(
                "maintenance purge failed",
                extra={"purge": purge.name, "error": type(error).__name__, "deleted": deleted},
                exc_info=error,
            )
            result.failed.append(purge.name)
        result.deleted[purge.name] = deleted
    result.duration_ms = clock.elapsed_ms()
    return result


def publish_metrics(result: MaintenanceResult, *, stage: str) -> None:
    """One EMF line: the rows each purge deleted, the purges that failed, the duration."""
    metrics: dict[str, tuple[float, Unit]] = {
        purge.metric: (result.deleted.get(purge.name, 0), "Count") for purge in PURGES
    }
    metrics["MaintenanceFailures"] = (len(result.failed), "Count")
    metrics["MaintenanceDuration"] = (result.duration_ms, "Milliseconds")
    put_metrics(namespace=METRICS_NAMESPACE, dimensions={"Stage": stage}, metrics=metrics)
