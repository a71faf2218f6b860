"""The engine and sessions: one engine per container, created on first use.

One unit of work per request: the request's session (`SessionDep`) commits when the route
returns and rolls back when it raises, before the response is sent, so a failed commit is
answered as the error it is, never after a 2xx has gone out. Query and service helpers
never commit or roll back; a route may `flush()` to meet an `IntegrityError` that it maps
to a status. A route commits itself only where it must end its transaction early: to
release row locks before slow work (bcrypt), or to keep what it wrote (a counted failure,
a revocation) although it then refuses the request.

Lambda runs one request at a time per container, so the PostgreSQL pool holds one
connection by default. A pooled connection that the server ended, or that sat idle long
enough to be suspect, is replaced before a request uses it (`_replace_dead_connections`);
a request whose connection is lost before it wrote anything runs again, once
(`RetryAfterLostConnection`); a short connect timeout turns an unreachable database into a
quick 503. On PostgreSQL, GET requests read in autocommit mode: no BEGIN and ROLLBACK
round trips around statements that each take their own snapshot anyway.

Connections carry no startup parameters and the API sends no session-level `SET`: RDS
Proxy refuses the first and pins a session on the second. The statement timeout and the
UTC time zone are the database's own defaults, which the migrate function sets
(`set_database_defaults`), so every server connection a pooler opens gets them.
"""

import logging
import select
import threading
import time
from collections.abc import AsyncGenerator
from contextvars import ContextVar
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import event, exc, pool, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import ORMExecuteState
from sqlmodel import Session, create_engine
from starlette.types import Message, Receive, Scope, Send

from taskapi import state
from taskapi.factory import HttpMiddleware
from taskapi.openapi import DATABASE_UNAVAILABLE_DETAIL, RETRY_AFTER
from taskapi.settings import Settings, get_database_url, get_settings

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 5000
# A pooled PostgreSQL connection idle for longer is pinged before it is handed out. Under
# steady traffic a container's requests come closer together and skip the round trip.
PING_AFTER_IDLE_SECONDS = 5.0
# The migrate function's limit instead (index builds take time); below its 300 s timeout.
MIGRATION_STATEMENT_TIMEOUT_MS = 240_000
# Opens the one session-level statement, the migrate function's (it may pin its own
# session): the tests' check for statements that pin a session behind RDS Proxy skips it.
MIGRATE_SESSION_MARK = "/* taskapi: the migrate function's own session */"
# PostgreSQL's query_canceled: a statement that ran into statement_timeout.
QUERY_CANCELED = "57014"
# Request methods that never write (HTTP's safe methods): their sessions autocommit.
READ_ONLY_METHODS = frozenset({"GET", "HEAD"})


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
        event.listen(engine, "before_cursor_execute", _refuse_connection_writes)
        _note_writes_and_commits(engine)
        return engine

    options: dict[str, Any] = {
        "echo": settings.sql_echo,
        # Bound parameters hold password hashes and tokens: keep them out of SQL_ECHO
        # logs and of the text of database errors.
        "hide_parameters": True,
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
    engine = create_engine(url, **options)
    event.listen(engine, "checkin", _end_autocommit)
    event.listen(engine, "before_cursor_execute", _refuse_connection_writes)
    _replace_dead_connections(engine)
    _note_writes_and_commits(engine)
    if settings.database_secret_arn:
        event.listen(engine, "do_connect", _connect_with_rotated_secret)
    return engine


def _connect_with_rotated_secret(
    dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]
) -> Any:
    """Connect; if the database refuses, read its secret again once and, if the
    credentials there changed (rotated), connect with them: later connections of the
    engine use them too (SQLAlchemy passes the same `cparams` every time). Without this,
    a rotated password would fail every request until the container is replaced."""
    try:
        return dialect.connect(*cargs, **cparams)
    except dialect.loaded_dbapi.OperationalError:
        # psycopg2 gives no SQLSTATE for a refused login, so any failure to connect asks
        # once (at most every few seconds, see `Refreshed.refresh`) whether the secret moved.
        fresh = make_url(get_database_url.refresh())
        changed = {
            name: value
            for name, value in fresh.translate_connect_args(
                username="user", database="dbname"
            ).items()
            if cparams.get(name) != value
        }
        if not changed:
            raise
        logger.warning("database secret changed (%s); reconnecting", ", ".join(sorted(changed)))
        cparams.update(changed)
        return dialect.connect(*cargs, **cparams)


def allow_long_statements(connection: Connection) -> None:
    """Give this transaction the migrate function's statement limit instead of an API
    request's (PostgreSQL; `SET LOCAL` ends with the transaction)."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(
            f"SET LOCAL statement_timeout = {MIGRATION_STATEMENT_TIMEOUT_MS}"
        )


def set_database_defaults(connection: Connection, settings: Settings) -> None:
    """Make the API's statement timeout (`DATABASE_STATEMENT_TIMEOUT_MS`) and the UTC time
    zone this database's defaults (PostgreSQL), and this connection's too.

    Every session that starts on the database afterwards reads them at login, whatever the
    server's defaults: each of a pooler's server connections, which no client could
    configure without pinning it (a session-level `SET`) or being refused (startup
    `options`, which RDS Proxy rejects). The migrate function calls this on every run, so
    a changed setting reaches the database with the next deploy. A session that was open
    before keeps what it had: this connection gets the values at once, as it may be the
    server connection a pooler hands to the API next; others are listed in docs/DEPLOY.md.

    A role's own setting (`ALTER ROLE ... SET`) would win over the database's: the
    application's role must have none for these two.
    """
    if connection.dialect.name != "postgresql":
        return
    timeout = int(settings.database_statement_timeout_ms)
    # ALTER DATABASE takes no parameters, nor a name but as a literal: hence the DO block.
    # `timeout` is an int, so it cannot carry SQL.
    connection.execute(
        text(
            "DO $$ BEGIN"
            " EXECUTE format('ALTER DATABASE %I SET statement_timeout = %s', current_database(),"
            f" {timeout});"
            " EXECUTE format('ALTER DATABASE %I SET timezone = %L', current_database(), 'UTC');"
            " END $$"
        )
    )
    connection.execute(
        text(
            f"{MIGRATE_SESSION_MARK} SELECT set_config('statement_timeout', :timeout, false),"
            " set_config('TimeZone', 'UTC', false)"
        ),
        {"timeout": str(timeout)},
    )
    # The session value above also replaced this transaction's own, longer limit.
    allow_long_statements(connection)


def _end_autocommit(dbapi_connection: Any, _record: Any) -> None:
    # Set by a read-only session (`open_session`); the next session expects transactions.
    if dbapi_connection is not None and dbapi_connection.autocommit:
        dbapi_connection.autocommit = False


def _replace_dead_connections(engine: Engine) -> None:
    """Hand out no pooled connection that is known or likely to be dead: the pool
    discards it and checks out a fresh one (a checkout listener's `DisconnectionError`),
    before the request sends anything on it.

    - A connection with input waiting has been spoken to while it sat in the pool. An idle
      session is sent nothing unasked (the API never LISTENs), so the server or a proxy
      has ended it: a failover, a restart, `pg_terminate_backend`, an idle-connection
      reaper, each of which sends its FATAL message and closes the socket. Polling the
      socket costs no round trip.
    - A connection idle for `PING_AFTER_IDLE_SECONDS` or more is pinged (`pool_pre_ping`
      for idle connections only: pinging on every checkout cost a round trip per request).
      That finds the peer that vanished without a word (a frozen container's connection
      after a network change).
    """

    @event.listens_for(engine, "checkin")
    def note_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def replace_if_dead(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        # A new connection has no check-in time, and needs no check.
        checked_in_at = record.info.get("checked_in_at")
        if checked_in_at is None:
            return
        readable, _, _ = select.select([dbapi_connection.fileno()], [], [], 0)
        if readable:
            raise exc.DisconnectionError("the server ended a pooled connection")
        if time.monotonic() - checked_in_at < PING_AFTER_IDLE_SECONDS:
            return
        try:
            # The dialect's own ping: one round trip, outside any transaction.
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.DisconnectionError(f"an idle connection failed its ping: {error}") from error


class _RequestWork:
    """What one request did with the database so far (`RetryAfterLostConnection`)."""

    def __init__(self) -> None:
        self.retried = False
        self.wrote = False


_request_work: ContextVar[_RequestWork | None] = ContextVar("taskapi_request_work", default=None)


_READS = ("SELECT", "SHOW")


def _note_writes(
    _connection: Connection,
    _cursor: Any,
    statement: str,
    _parameters: Any,
    context: DefaultExecutionContext,
    _executemany: bool,
) -> None:
    work = _request_work.get()
    if work is None or work.wrote:
        return
    # Any statement but a SELECT or SHOW counts as a write (DML, DDL, a data-changing WITH).
    if (
        context.isinsert
        or context.isupdate
        or context.isdelete
        or not statement.lstrip()[:6].upper().startswith(_READS)
    ):
        work.wrote = True


def _note_commit(_connection: Connection) -> None:
    # A COMMIT whose answer was lost may have committed.
    work = _request_work.get()
    if work is not None:
        work.wrote = True


def _note_writes_and_commits(engine: Engine) -> None:
    """What a request wrote decides whether it may run again after a lost connection
    (`RetryAfterLostConnection`) and whether its unit of work commits (`request_session`)."""
    event.listen(engine, "before_cursor_execute", _note_writes)
    event.listen(engine, "commit", _note_commit)


class _ConnectionLostError(Exception):
    """Raised by the database error handler for a request to run again."""


class RetryAfterLostConnection(HttpMiddleware):
    """Run a request again, once, when its database connection was lost before it wrote
    anything (no INSERT, UPDATE, DELETE or other statement than a SELECT, no COMMIT sent).

    Everything such a request did died with its session, on the server, and the client has
    been sent nothing, so running it again on a new connection is what the client's retry
    would do, without the 503. A request that wrote may have committed, or half-done its
    work: its error stands (503). `database_unavailable` decides, as it sees the error
    first; the request's body, read once from `receive`, is given again to the retry.
    """

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        received: list[Message] = []

        async def recording(message_source: Receive = receive) -> Message:
            message = await message_source()
            received.append(message)
            return message

        work = _RequestWork()
        token = _request_work.set(work)
        try:
            try:
                await self.app(scope, recording, send)
            except _ConnectionLostError:
                logger.info("database connection lost before any write; request run again")
                work.retried, work.wrote = True, False
                replay = iter(list(received))

                async def replaying() -> Message:
                    return next(replay, None) or await receive()

                await self.app(scope, replaying, send)
        finally:
            _request_work.reset(token)


def _may_run_again(error: Exception) -> bool:
    work = _request_work.get()
    return (
        isinstance(error, exc.DBAPIError)
        and error.connection_invalidated
        and work is not None
        and not work.retried
        and not work.wrote
    )


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
    """The container's engine, built on first use; `taskapi.state.reset()` drops it."""
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


# Connections cannot outlive a snapshot, and the engine holds the database URL (its
# password) it was built with.
state.register(reset_engine)


def open_session(*, read_only: bool = False) -> Session:
    """A session on the container's engine; `read_only` for work that never writes.

    On PostgreSQL a read-only session runs in autocommit mode: psycopg2 would send BEGIN
    before the first statement, and the session would end with ROLLBACK, two round trips
    around statements that each take their own snapshot anyway (READ COMMITTED). The
    flag is psycopg2's own, client-side; the pool clears it on check-in (SQLAlchemy's
    AUTOCOMMIT isolation level would send a SET on every check-in instead). pysqlite
    opens no transaction for a SELECT in the first place.
    """
    engine = get_engine()
    # expire_on_commit=False: a committed object is returned as it is, without a
    # SELECT per attribute to reload it.
    session = Session(engine, expire_on_commit=False)
    if read_only:
        session.info["read_only"] = True
        if engine.dialect.name == "postgresql":
            session.connection().connection.dbapi_connection.autocommit = True  # type: ignore[union-attr]
    return session


# In autocommit mode a write would commit statement by statement, with nothing to roll
# back on error: a GET route that writes is a bug, made loud here.
READ_ONLY_WRITE = "a read-only session or connection (a GET request's) was asked to write"


@event.listens_for(Session, "do_orm_execute")
def _refuse_statement_writes(state: ORMExecuteState) -> None:
    if state.session.info.get("read_only") and (
        state.is_insert or state.is_update or state.is_delete
    ):
        raise RuntimeError(READ_ONLY_WRITE)


@event.listens_for(Session, "before_flush")
def _refuse_flushed_writes(session: Session, _context: Any, _instances: Any) -> None:
    if session.info.get("read_only"):
        raise RuntimeError(READ_ONLY_WRITE)


# The execution option that marks a read-only connection (`open_read_connection`).
_READ_ONLY = "taskapi_read_only"


def open_read_connection() -> Connection:
    """A connection for reads of Core rows that never write: a read-only session's
    autocommit and refusal to write, without the ORM `Session` (65 to 130 µs of CPU per
    request that the task routes' GETs had no use for)."""
    engine = get_engine()
    connection = engine.connect().execution_options(**{_READ_ONLY: True})
    if engine.dialect.name == "postgresql":
        connection.connection.dbapi_connection.autocommit = True  # type: ignore[union-attr]
    return connection


def _refuse_connection_writes(
    connection: Connection,
    _cursor: Any,
    _statement: str,
    _parameters: Any,
    context: DefaultExecutionContext,
    _executemany: bool,
) -> None:
    if (context.isinsert or context.isupdate or context.isdelete) and (
        connection.get_execution_options().get(_READ_ONLY)
    ):
        raise RuntimeError(READ_ONLY_WRITE)


async def request_session(request: Request) -> AsyncGenerator[Session, None]:
    """The unit of work of one request (the module docstring's rule): committed when the
    route returns, rolled back when it raises. Read-only (in autocommit mode on
    PostgreSQL, nothing to commit) for GET and HEAD."""
    read_only = request.method in READ_ONLY_METHODS
    with open_session(read_only=read_only) as session:
        try:
            yield session
        except BaseException:
            session.rollback()
            raise
        if read_only:
            return
        # Objects added but not yet written are written now, so that they count as writes.
        session.flush()
        # A request that wrote nothing (`_note_writes`) ends with ROLLBACK, not COMMIT: on
        # PostgreSQL the COMMIT of a transaction that took a row lock (`CurrentUser`'s, for
        # any request that may write) waits for a flush of the WAL to disk.
        work = _request_work.get()
        if session.in_transaction() and (work is None or work.wrote):
            session.commit()


# scope="function": the code after `yield` runs when the route returns, before the
# response is sent (FastAPI's default runs it afterwards, when a failed commit could
# only be logged under a 2xx that already went out).
SessionDep = Annotated[Session, Depends(request_session, scope="function")]


async def request_connection() -> AsyncGenerator[Connection, None]:
    """`open_read_connection()` for one GET request; `async def` as `request_session`."""
    with open_read_connection() as connection:
        yield connection


ReadConnection = Annotated[Connection, Depends(request_connection)]


# Errors that mean "the database cannot be reached or is overloaded", not "bad request".
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    exc.OperationalError,
    exc.InterfaceError,
    exc.DisconnectionError,
    exc.TimeoutError,
)


# PostgreSQL's deadlock_detected and serialization_failure: two requests met in an order
# that one of them has to give up. The database is fine; the request may simply be sent
# again, so they are a conflict (409), not an outage (503). Every path that locks a user
# row and its login-attempt rows takes them in one order, so none is expected; this keeps
# one that still happens from reading as "the database is unavailable".
CONFLICT_CODES = frozenset({"40P01", "40001"})
CONFLICT_DETAIL = (
    "The request ran into another one at the same moment and was not applied; send it again."
)


async def database_unavailable(request: Request, error: Exception) -> JSONResponse:
    if _may_run_again(error):
        raise _ConnectionLostError from error
    code = getattr(getattr(error, "orig", None), "pgcode", None)
    if code in CONFLICT_CODES:
        logger.warning("database conflict %s; answered 409", code)
        return JSONResponse(status_code=409, content={"detail": CONFLICT_DETAIL})
    # psycopg2's QueryCanceled is an OperationalError: statement_timeout lands here too.
    if code == QUERY_CANCELED:
        logger.warning("database statement timed out")
        detail = "The database took too long to answer; try again shortly."
    else:
        logger.warning("database unavailable: %s", type(error).__name__)
        detail = DATABASE_UNAVAILABLE_DETAIL
    return JSONResponse(status_code=503, content={"detail": detail}, headers=RETRY_AFTER)


# SQLSTATE foreign_key_violation (psycopg2.errorcodes.FOREIGN_KEY_VIOLATION), and SQLite's
# extended result code for the same (its `sqlite_errorcode`).
_PG_FOREIGN_KEY_VIOLATION = "23503"


def is_missing_reference(error: exc.IntegrityError) -> bool:
    """Whether a write broke a foreign key: the row it refers to is gone."""
    original = error.orig
    # Imported here: a function on PostgreSQL does not load SQLite's driver to start.
    import sqlite3

    if isinstance(original, sqlite3.IntegrityError):
        return getattr(original, "sqlite_errorcode", None) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
    return getattr(original, "pgcode", None) == _PG_FOREIGN_KEY_VIOLATION


async def user_gone(request: Request, error: Exception) -> JSONResponse:
    """A write that names a user deleted while the request ran (every foreign key of the
    schema references `user.id`): the caller's account and sessions are gone, so 401, as
    the request would have got a moment later. Any other integrity error is a bug."""
    if not (isinstance(error, exc.IntegrityError) and is_missing_reference(error)):
        raise error
    logger.info("write refused: the user was deleted meanwhile")
    return JSONResponse(
        status_code=401,
        content={"detail": "Session expired or revoked"},
        headers={"WWW-Authenticate": "Bearer"},
    )


def install_database_error_handlers(app: FastAPI) -> None:
    # Added before the factory's middleware, so innermost: the request log and headers
    # see one request, however many times it ran.
    app.add_middleware(RetryAfterLostConnection)
    for error_class in UNAVAILABLE_ERRORS:
        app.add_exception_handler(error_class, database_unavailable)
    app.add_exception_handler(exc.IntegrityError, user_gone)
