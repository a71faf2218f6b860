"""RemindersFunction: every minute, the tasks whose `remind_at` has come are emailed to
their owners (no HTTP routes).

A function of its own rather than a one-minute schedule on MaintenanceFunction: the
clean-up runs hourly for up to five minutes, and reminders must go out every minute
whatever a purge is doing; a run here stops well inside its minute (Timeout 60,
REMINDERS_TIME_BUDGET_SECONDS), and two runs that overlap anyway are safe (each
reminder is claimed by one of them: `reminders_jobs`). It also needs a permission the
clean-up must not have (sending email), and its failures and alarms are its own.
"""

import logging
from typing import Any

from reminders_jobs import publish_metrics, run_reminders
from taskapi.db import get_engine
from taskapi.logs import configure_logging, invocation_fields, log_context
from taskapi.settings import get_database_url, get_settings

logger = logging.getLogger("taskapi.reminders")

configure_logging(get_settings().log_level)
# Resolve the database secret while the container starts: a missing one stops it here.
get_database_url()


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Send the due reminders; the counts are returned, logged and written as EMF metrics."""
    with log_context(**invocation_fields(context), trigger="schedule"):
        settings = get_settings()
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        result = run_reminders(
            get_engine(),
            settings,
            remaining_seconds=remaining() / 1000 if remaining is not None else None,
        )
        summary = result.summary()
        logger.info("reminders run", extra={"reminders": summary})
        publish_metrics(result, stage=settings.stage)
    return summary
