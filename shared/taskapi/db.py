"""The engine and sessions: one engine per container, created on first use.

One unit of work per request: the request's session (`SessionDep`) commits when the route
returns and rolls back when it raises, before the response is sent, so a failed commit is
answered as the error it is, never after a 2xx has gone out. Query and service helpers
never commit or roll back; a route may `flush()` to meet an `IntegrityError` that it maps
to a status. A route commits itself only where it must end its transaction early: to
release row locks before slow work (bcrypt), or to keep what it wrote (a counted failure,
a revocation) although it then refuses the request.

Lambda runs one request at a time per container, so the PostgreSQL pool holds one
connection by default. A connection that sat idle (a frozen container) is pinged before
use and replaced if it died; one that dies under a statement that can safely run again is
replaced and the statement replayed on the fresh one (`_replay_on_a_fresh_connection`); a
short connect timeout turns an unreachable database into a quick 503. On PostgreSQL, GET
requests read in autocommit mode: no BEGIN and ROLLBACK round trips around statements that
each take their own snapshot anyway.
"""

import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable
from typing import Annotated, Any, cast

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import event, exc, pool
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import ORMExecuteState
from sqlalchemy.pool.base import _ConnectionFairy
from sqlmodel import Session, create_engine

from taskapi import state
from taskapi.openapi import DATABASE_UNAVAILABLE_DETAIL, RETRY_AFTER
from taskapi.settings import Settings, get_database_url, get_settings

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 5000
# A pooled PostgreSQL connection idle for longer is pinged before it is handed out. Under
# steady traffic a container's requests come closer together and skip the round trip; a
# connection found dead by its first statement is replaced and the statement replayed
# (`_replay_on_a_fresh_connection`).
PING_AFTER_IDLE_SECONDS = 5.0
# The migrate function's limit instead (index builds take time); below its 300 s timeout.
MIGRATION_STATEMENT_TIMEOUT_MS = 240_000
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
        event.listen(engine, "before_cursor_execute", _watch_writes)
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
            # Set in the startup packet, so it costs no round trip: no statement of a
            # request keeps the server busy after the client and the Lambda have gone.
            "options": f"-c statement_timeout={settings.database_statement_timeout_ms}",
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
    event.listen(engine, "before_cursor_execute", _watch_writes)
    _ping_when_idle(engine)
    if settings.database_secret_arn:
        event.listen(engine, "do_connect", _connect_with_rotated_secret)
    _replay_on_a_fresh_connection(engine)
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


def _end_autocommit(dbapi_connection: Any, _record: Any) -> None:
    # Set by a read-only session (`open_session`); the next session expects transactions.
    if dbapi_connection is not None and dbapi_connection.autocommit:
        dbapi_connection.autocommit = False


def _ping_when_idle(engine: Engine) -> None:
    """`pool_pre_ping`, but only for a connection that has been idle: pinging on every
    checkout cost a round trip per request (docs/PERFORMANCE.md)."""

    @event.listens_for(engine, "checkin")
    def note_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        # A new connection has no check-in time, and needs no ping.
        checked_in_at = record.info.get("checked_in_at")
        if checked_in_at is None or time.monotonic() - checked_in_at < PING_AFTER_IDLE_SECONDS:
            return
        try:
            # The dialect's own ping: one round trip, outside any transaction.
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            # The pool discards this connection and checks out a fresh one.
            raise exc.DisconnectionError(f"an idle connection failed its ping: {error}") from error


def _replay_on_a_fresh_connection(engine: Engine) -> None:
    """A statement that meets a dead connection runs again, once, on a fresh one, when that
    cannot repeat or lose anything; otherwise the error stands (a 503).

    Without this, a connection whose server went away while it sat in the pool for less
    than `PING_AFTER_IDLE_SECONDS` (a failover, an RDS Proxy restart, an idle-connection
    reaper) would turn the next request into a 503, once per warm container, although the
    database is up again. A statement may run again:

    - when the connection had no transaction open: it is the first statement of its
      transaction (psycopg2 sends BEGIN first), no COMMIT has been sent, and a server
      session that died takes its open transaction with it, so nothing of it can remain;
    - in autocommit mode, which only read-only sessions (GET and HEAD) use, when it
      reads: each statement takes its own snapshot anyway, so reading on another
      connection is what the next statement would have done.

    A write inside a transaction that already sent statements is never replayed (those
    statements died with the connection), nor is a COMMIT, which is not an `execute`.
    SQLAlchemy's dialect decides what a disconnect is; on the replayed statement's own
    failure SQLAlchemy handles the error as usual.
    """
    from psycopg2.extensions import TRANSACTION_STATUS_IDLE

    dialect = engine.dialect
    dbapi_error = dialect.loaded_dbapi.Error

    def replayable(cursor: Any, context: DefaultExecutionContext) -> bool:
        connection = cursor.connection
        if connection.autocommit:
            return not (context.isinsert or context.isupdate or context.isdelete)
        idle: bool = connection.get_transaction_status() == TRANSACTION_STATUS_IDLE
        return idle

    def execute(run: Any, cursor: Any, context: DefaultExecutionContext) -> None:
        # Decided before the statement is sent: a failure changes the connection's state.
        may_replay = replayable(cursor, context)
        try:
            run(cursor)
        except dbapi_error as error:
            if not (may_replay and dialect.is_disconnect(error, cursor.connection, cursor)):
                raise
            try:
                fresh = _reconnect(context, error, autocommit=cursor.connection.autocommit)
            except dbapi_error as connect_error:
                # Still out of reach: the disconnect stays the request's error (a 503).
                raise error from connect_error
            logger.info("database connection lost; statement replayed on a new connection")
            run(fresh)

    # The three ways SQLAlchemy hands a statement to the driver; each listener returns True
    # to say that it has sent the statement itself. Every one's last argument is the context.
    def replaying(send: Callable[..., None]) -> Callable[..., bool]:
        def listener(cursor: Any, statement: str, *arguments: Any) -> bool:
            execute(lambda c: send(c, statement, *arguments), cursor, arguments[-1])
            return True

        return listener

    event.listen(engine, "do_execute", replaying(dialect.do_execute))
    event.listen(engine, "do_execute_no_params", replaying(dialect.do_execute_no_params))
    event.listen(engine, "do_executemany", replaying(dialect.do_executemany))


def _reconnect(context: DefaultExecutionContext, error: Exception, *, autocommit: bool) -> Any:
    """Give the execution's pool entry a new DBAPI connection; a cursor on it.

    The same steps as the pool's own recovery from a failed checkout ping
    (`_ConnectionFairy._checkout`): the entry closes the dead connection and connects
    again, running the usual connect events. The SQLAlchemy connection, its transaction
    and the session above it carry on unaware: they hold the pool's proxy, not the DBAPI
    connection.
    """
    proxy = cast(_ConnectionFairy, context.root_connection.connection)
    record = proxy._connection_record
    if record is None:  # a detached connection: nothing to give a new one to
        raise exc.DisconnectionError("the connection is detached from its pool")
    record.invalidate(error)
    proxy.dbapi_connection = record.get_connection()
    # Carried over from the dead connection: a read-only session's mode.
    proxy.dbapi_connection.autocommit = autocommit
    # Results are read from the context's cursor.
    context.cursor = context.create_cursor()
    return context.cursor


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
    request that the task routes' GETs had no use for: docs/PERFORMANCE.md)."""
    engine = get_engine()
    connection = engine.connect().execution_options(**{_READ_ONLY: True})
    if engine.dialect.name == "postgresql":
        connection.connection.dbapi_connection.autocommit = True  # type: ignore[union-attr]
    return connection


# Set in a connection's `info` (which lives as long as the DBAPI connection) by every
# statement that may write, anything but a compiled SELECT, and cleared when a session's
# transaction begins on it. A request that wrote nothing ends with ROLLBACK instead of
# COMMIT: on PostgreSQL, the COMMIT of a transaction that took a row lock (`CurrentUser`'s,
# for any request that may write) waits for a flush of the WAL to disk; a ROLLBACK does not.
_WROTE = "taskapi_wrote"


@event.listens_for(Session, "after_begin")
def _clear_writes(_session: Session, _transaction: Any, connection: Connection) -> None:
    connection.info[_WROTE] = False


def _watch_writes(
    connection: Connection,
    _cursor: Any,
    _statement: str,
    _parameters: Any,
    context: DefaultExecutionContext,
    _executemany: bool,
) -> None:
    """Note a statement that may write; refuse a write on a read-only connection."""
    dml = context.isinsert or context.isupdate or context.isdelete
    if dml and connection.get_execution_options().get(_READ_ONLY):
        raise RuntimeError(READ_ONLY_WRITE)
    if dml or context.compiled is None or context.is_text or context.isddl:
        connection.info[_WROTE] = True


async def request_session(request: Request) -> AsyncGenerator[Session, None]:
    """The unit of work of one request (the module docstring's rule): committed when the
    route returns, rolled back when it raises. Read-only (in autocommit mode on
    PostgreSQL, nothing to commit) for GET and HEAD.

    `async def` although nothing awaits: the reason is in the `taskapi` package docstring.
    """
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
        if session.in_transaction() and session.connection().info.get(_WROTE, True):
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


async def database_unavailable(request: Request, error: Exception) -> JSONResponse:
    # psycopg2's QueryCanceled is an OperationalError: statement_timeout lands here too.
    if getattr(getattr(error, "orig", None), "pgcode", None) == QUERY_CANCELED:
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
    for error_class in UNAVAILABLE_ERRORS:
        app.add_exception_handler(error_class, database_unavailable)
    app.add_exception_handler(exc.IntegrityError, user_gone)
