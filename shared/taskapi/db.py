"""The engine and sessions: one engine per container, created on first use.

Lambda runs one request at a time per container, so the PostgreSQL pool holds one
connection by default; pre-ping replaces a connection that died while the container was
frozen, and a short connect timeout turns an unreachable database into a quick 503.
"""

import logging
import threading
from collections.abc import AsyncGenerator, Generator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import event, exc, pool
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, create_engine

from taskapi.settings import Settings, get_database_url, get_settings

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 5000


def build_engine(database_url: str, settings: Settings) -> Engine:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            echo=settings.sql_echo,
            hide_parameters=True,
            # The local server answers from several threads; each checkout is still
            # used by one thread at a time.
            connect_args={"check_same_thread": False},
        )
        event.listen(engine, "connect", _configure_sqlite)
        return engine

    options: dict[str, Any] = {
        "echo": settings.sql_echo,
        # Bound parameters hold password hashes and tokens: keep them out of SQL_ECHO
        # logs and of the text of database errors.
        "hide_parameters": True,
        "pool_pre_ping": True,
        "connect_args": {
            "connect_timeout": settings.database_connect_timeout,
            # Notice a peer that vanished instead of waiting out the Lambda timeout.
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            # A peer that stops acknowledging what was sent (a network partition, a failed
            # over host) breaks the connection after this long, instead of after the
            # kernel's ~15 minutes of retransmissions: a 503, not a Lambda timeout. Only
            # unacknowledged data counts, so a slow query's wait for its result does not.
            "tcp_user_timeout": settings.database_connect_timeout * 2000,
        },
    }
    if settings.database_null_pool:
        options["poolclass"] = pool.NullPool
    else:
        options.update(
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            pool_timeout=settings.database_pool_timeout,
            pool_recycle=300,
        )
    return create_engine(url, **options)


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


_engine: Engine | None = None
# functools.cache does not stop two threads that miss at once from both building an engine:
# under the local server's threads (or any threaded caller) the first requests would each
# get a pool of their own, and hold its connections beyond the configured bound.
_engine_lock = threading.Lock()


def get_engine() -> Engine:
    """The container's engine; `reset_engine()` drops it (tests, after changing settings)."""
    global _engine
    engine = _engine
    if engine is None:
        with _engine_lock:
            if _engine is None:
                _engine = build_engine(get_database_url(), get_settings())
            engine = _engine
    return engine


def reset_engine() -> None:
    global _engine
    with _engine_lock:
        engine, _engine = _engine, None
    if engine is not None:
        engine.dispose()


def open_session() -> Session:
    # expire_on_commit=False: a committed object is returned as it is, without a
    # SELECT per attribute to reload it.
    return Session(get_engine(), expire_on_commit=False)


def get_session() -> Generator[Session, None, None]:
    """A session for scripts and tests; routes use `SessionDep`."""
    with open_session() as session:
        yield session


async def request_session() -> AsyncGenerator[Session, None]:
    """The session of one request, opened and closed on the event loop.

    FastAPI runs a plain `def` dependency in a worker thread, and under Mangum, which
    runs every invocation as a task of its own, anyio starts that thread afresh for each
    one (docs/PERFORMANCE.md). Lambda serves one request per container at a time, so the
    blocking calls hold nothing up.
    """
    with open_session() as session:
        yield session


SessionDep = Annotated[Session, Depends(request_session)]


# Errors that mean "the database cannot be reached or is overloaded", not "bad request".
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    exc.OperationalError,
    exc.InterfaceError,
    exc.DisconnectionError,
    exc.TimeoutError,
)


async def database_unavailable(request: Request, error: Exception) -> JSONResponse:
    logger.warning("database unavailable: %s", type(error).__name__)
    return JSONResponse(
        status_code=503,
        content={"detail": "The database is unavailable; try again shortly."},
        headers={"Retry-After": "5"},
    )


def install_database_error_handlers(app: FastAPI) -> None:
    for error_class in UNAVAILABLE_ERRORS:
        app.add_exception_handler(error_class, database_unavailable)
