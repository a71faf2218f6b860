"""MaintenanceFunction: the hourly clean-up that EventBridge invokes (no HTTP routes).

A function of its own rather than a second schedule on HealthFunction: the health
function keeps SQLAlchemy out of `GET /health`'s cold start and answers within the API's
10-second timeout, while a clean-up needs the models, may run for minutes, and must not
run twice at once (reserved concurrency 1 in template.yaml). Its errors and duration
are its own, too, not the health check's.
"""

from typing import Any

from maintenance_jobs import publish_metrics, run_maintenance
from taskapi.jobs import run_scheduled
from taskapi.logs import configure_logging
from taskapi.settings import get_database_url, get_settings

configure_logging(get_settings().log_level)
# Resolve the database secret while the container starts: a missing one stops it here.
get_database_url()


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Run every purge; the counts are returned, logged and written as EMF metrics."""
    return run_scheduled("maintenance", context, run_maintenance, publish_metrics)
