"""One invocation of a scheduled job (the maintenance and reminders functions): run it on
the container's engine within the function's remaining time, then return, log and
publish its summary."""

import logging
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy.engine import Engine

from taskapi.db import get_engine
from taskapi.logs import invocation_fields, log_context
from taskapi.settings import Settings, get_settings


class JobResult(Protocol):
    def summary(self) -> dict[str, Any]: ...


def run_scheduled(
    name: str,
    context: Any,
    run: Callable[..., JobResult],
    publish: Callable[..., None],
) -> dict[str, Any]:
    """`run(engine, settings, remaining_seconds=...)`, its summary logged as `<name> run`
    (under the key `name`) and published as metrics (`publish(result, stage=...)`)."""
    with log_context(**invocation_fields(context), trigger="schedule"):
        settings: Settings = get_settings()
        engine: Engine = get_engine()
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        result = run(
            engine,
            settings,
            remaining_seconds=remaining() / 1000 if remaining is not None else None,
        )
        summary = result.summary()
        logging.getLogger(f"taskapi.{name}").info(f"{name} run", extra={name: summary})
        publish(result, stage=settings.stage)
    return summary


def deadline(started: float, *, budget: float, remaining: float | None, margin: float) -> float:
    """When a job stops starting work (`time.monotonic()`): after its own budget, or
    `margin` seconds before the function's timeout, whichever comes first."""
    if remaining is not None:
        budget = min(budget, remaining - margin)
    return started + budget
