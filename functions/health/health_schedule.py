"""The scheduled check: EventBridge invokes the function, which checks the database and
writes CloudWatch metrics in Embedded Metric Format (EMF) to its log.

Mangum raises on events that are not HTTP, so the handler sends these here first.
"""

import logging
from typing import Any

from health_check import DatabaseUnavailableError, HealthError, check_database
from taskapi.logs import invocation_fields, log_context
from taskapi.metrics import METRICS_NAMESPACE, Unit, put_metrics
from taskapi.settings import get_settings

logger = logging.getLogger("taskapi.health")


def is_scheduled_event(event: Any) -> bool:
    return isinstance(event, dict) and event.get("source") == "aws.events"


def scheduled_check(context: Any) -> dict[str, Any]:
    """The same summary as `GET /health/db`; an unhealthy database is reported, not raised."""
    with log_context(**invocation_fields(context), trigger="schedule"):
        try:
            health = check_database()
        except DatabaseUnavailableError as error:
            summary = HealthError(detail=error.detail).model_dump(mode="json")
            publish_metrics(database_up=False, latency_ms=None)
        else:
            summary = health.model_dump(mode="json")
            publish_metrics(database_up=True, latency_ms=health.latency_ms)
        logger.info("scheduled health check", extra={"health": summary})
    return summary


def publish_metrics(*, database_up: bool, latency_ms: float | None) -> None:
    """One EMF line on stdout; CloudWatch turns it into metrics, with no API call."""
    metrics: dict[str, tuple[float, Unit]] = {"DatabaseUp": (int(database_up), "Count")}
    if latency_ms is not None:
        metrics["DatabaseLatency"] = (latency_ms, "Milliseconds")
    # Stage is the only dimension: template.yaml's alarm watches exactly that set.
    put_metrics(
        namespace=METRICS_NAMESPACE, dimensions={"Stage": get_settings().stage}, metrics=metrics
    )
