"""The database check behind `GET /health/db` and the scheduled check.

SQLAlchemy and the engine are imported inside `check_database`, so that `GET /health`
never loads a database driver and its cold start stays as small as a bare FastAPI app's.
"""

import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from health_migration_head import MIGRATION_HEAD
from taskapi.openapi import DATABASE_UNAVAILABLE, RESPONSE_CONFIG

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

logger = logging.getLogger("taskapi.health")


# Body of GET /health.
class Health(BaseModel):
    model_config = RESPONSE_CONFIG

    status: Literal["ok"] = "ok"
    version: str
    timestamp: datetime


# The schema revision in the database against the newest one shipped with the code.
class Migrations(BaseModel):
    model_config = RESPONSE_CONFIG

    current: str | None
    head: str | None
    up_to_date: bool


# Body of GET /health/db when the database answers; also the scheduled check's summary.
class DatabaseHealth(BaseModel):
    model_config = RESPONSE_CONFIG

    status: Literal["ok"] = "ok"
    database: Literal["ok"] = "ok"
    latency_ms: float
    migrations: Migrations


# Body of a failed check (503), and the scheduled check's summary then.
class HealthError(BaseModel):
    model_config = RESPONSE_CONFIG

    status: Literal["error"] = "error"
    detail: str


class DatabaseUnavailableError(Exception):
    """The database cannot be reached, or fails a trivial query."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def check_database() -> DatabaseHealth:
    """A `SELECT 1` round trip and the migration status; raises `DatabaseUnavailableError`."""
    from sqlalchemy import exc, text

    from taskapi.db import UNAVAILABLE_ERRORS, get_engine
    from taskapi.settings import ConfigurationError

    # Any driver error fails the check, not only the "unreachable" ones that map to 503 elsewhere.
    failures: tuple[type[Exception], ...] = (*UNAVAILABLE_ERRORS, exc.DBAPIError)
    try:
        engine = get_engine()
        # Timed from the checkout: on a cold container that includes connecting, which is
        # what the next request would wait for too.
        started = time.perf_counter()
        with engine.connect() as connection:
            connection.execute(text("SELECT 1")).scalar_one()
            latency_ms = round((time.perf_counter() - started) * 1000, 2)
            current = _current_revision(connection)
    except failures as error:
        logger.warning("database check failed", extra={"error": type(error).__name__})
        raise DatabaseUnavailableError(
            f"{DATABASE_UNAVAILABLE} ({type(error).__name__})"
        ) from error
    except ConfigurationError as error:
        logger.error("database check failed", extra={"error": str(error)})
        raise DatabaseUnavailableError(str(error)) from error
    return DatabaseHealth(
        latency_ms=latency_ms,
        migrations=Migrations(
            current=current, head=MIGRATION_HEAD, up_to_date=current == MIGRATION_HEAD
        ),
    )


def _current_revision(connection: "Connection") -> str | None:
    # Read Alembic's own table rather than importing Alembic: the same answer, far less code.
    from sqlalchemy import inspect, text

    if not inspect(connection).has_table("alembic_version"):
        return None
    revisions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
    return ",".join(sorted(revisions)) or None
