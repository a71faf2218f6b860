"""One invocation of a scheduled job (the maintenance and reminders functions): run it on
the container's engine within the function's remaining time, then return, log and
publish its summary."""

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.engine import Engine

from taskapi.db import get_engine
from taskapi.logs import invocation_fields, log_context
from taskapi.models import utcnow
from taskapi.settings import Settings, get_settings


class RunClock:
    """A scheduled run's time. It stops starting work after its own `budget` seconds, or
    `margin` seconds before the function's timeout (`remaining` seconds away, when the
    Lambda context tells), whichever comes first; and it reports how long it ran."""

    def __init__(self, *, budget: float, remaining: float | None, margin: float) -> None:
        self.started = time.monotonic()
        if remaining is not None:
            budget = min(budget, remaining - margin)
        self.stop_at = self.started + budget

    def rounds(self, result: "RunResult") -> Iterator[None]:
        """One step of a job's loop per round while there is time to start one (the
        caller breaks out when its work is done); when time runs out first, `result`
        is marked incomplete."""
        while time.monotonic() < self.stop_at:
            yield
        result.complete = False

    def elapsed_ms(self) -> float:
        return round((time.monotonic() - self.started) * 1000, 2)


@dataclass(frozen=True)
class ScheduledRun:
    """What a job is run with: the container's engine and settings, the seconds left
    before the function's timeout (None outside Lambda), and the time it runs at."""

    engine: Engine
    settings: Settings
    remaining_seconds: float | None = None
    now: datetime = field(default_factory=utcnow)

    def clock(self, *, budget: float, margin: float) -> RunClock:
        """Started now: see `RunClock`."""
        return RunClock(budget=budget, remaining=self.remaining_seconds, margin=margin)


@dataclass
class RunResult:
    """What every job's summary holds; each job's result adds its own counts."""

    # False when the run stopped with work possibly left (its time budget, a failure):
    # the next run carries on.
    complete: bool = True
    duration_ms: float = 0.0

    def summary(self) -> dict[str, Any]:
        return asdict(self)


Result = TypeVar("Result", bound=RunResult)


def run_scheduled(
    name: str,
    context: Any,
    run: Callable[[ScheduledRun], Result],
    publish: Callable[..., None],
) -> dict[str, Any]:
    """`run` on this invocation, its summary logged as `<name> run` (under the key
    `name`) and published as metrics (`publish(result, stage=...)`)."""
    with log_context(**invocation_fields(context), trigger="schedule"):
        settings = get_settings()
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        result = run(
            ScheduledRun(
                get_engine(),
                settings,
                remaining_seconds=remaining() / 1000 if remaining is not None else None,
            )
        )
        summary = result.summary()
        logging.getLogger(f"taskapi.{name}").info(f"{name} run", extra={name: summary})
        publish(result, stage=settings.stage)
    return summary
