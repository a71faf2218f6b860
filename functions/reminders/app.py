"""RemindersFunction: every minute, the tasks whose `remind_at` has come are emailed to
their owners (no HTTP routes).

A function of its own rather than a one-minute schedule on MaintenanceFunction: the
clean-up runs hourly for up to five minutes, and reminders must go out every minute
whatever a purge is doing; a run here stops well inside its minute (Timeout 60,
REMINDERS_TIME_BUDGET_SECONDS), and two runs that overlap anyway are safe (each
reminder is claimed by one of them: `reminders_jobs`). It also needs a permission the
clean-up must not have (sending email), and its failures and alarms are its own.
"""

from typing import Any

from reminders_jobs import publish_metrics, run_reminders
from taskapi.jobs import run_scheduled
from taskapi.logs import configure_logging
from taskapi.settings import get_database_url, get_settings

configure_logging(get_settings().log_level)
# Resolve the database secret while the container starts: a missing one stops it here.
get_database_url()


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Send the due reminders; the counts are returned, logged and written as EMF metrics."""
    return run_scheduled("reminders", context, run_reminders, publish_metrics)
