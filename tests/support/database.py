"""Databases for the tests: SQLite always; PostgreSQL, directly and through PgBouncer in
transaction mode (RDS Proxy's stand-in), when TEST_DATABASE_URL is set.

PostgreSQL tests run in a database of their own, created for the session and dropped at
the end. With REQUIRE_POSTGRES=1 (CI), a missing or unreachable PostgreSQL, or a missing
PgBouncer, is an error, not a skip.
"""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine, make_url
from sqlmodel import SQLModel

import taskapi.models  # noqa: F401 (rows_naming reads every table of the models)
from taskapi.db import build_engine, set_database_defaults
from taskapi.settings import Settings, normalize_database_url
from tests.support.functions import load_module
from tests.support.pgbouncer import PgBouncer

ALL_BACKENDS = ("sqlite", "postgresql", "pgbouncer")


def _selected_backends() -> tuple[str, ...]:
    """The backends the API's database tests run on: all three, or TEST_BACKENDS's
    comma-separated choice (`make test-py313` leaves out the direct connection, which
    no function on Lambda makes: they all go through RDS Proxy)."""
    chosen = tuple(filter(None, os.environ.get("TEST_BACKENDS", "").split(","))) or ALL_BACKENDS
    unknown = set(chosen) - set(ALL_BACKENDS)
    if unknown:
        raise ValueError(f"TEST_BACKENDS names {sorted(unknown)}; choose from {ALL_BACKENDS}")
    return chosen


BACKENDS = _selected_backends()
# The backends whose database is PostgreSQL.
POSTGRES_BACKENDS = frozenset({"postgresql", "pgbouncer"})
# The run's database reached through PgBouncer starts with another default time zone than
# UTC, as a server set up in Tokyo would have: the API must not depend on the server's.
POOLED_DATABASE_TIME_ZONE = "Asia/Tokyo"
# The tests' own engines open a connection per check, never competing for the app's pool.
CHECK_SETTINGS = Settings(database_null_pool=True)
DEFAULT_STATEMENT_TIMEOUT_MS: int = Settings.model_fields["database_statement_timeout_ms"].default
# Tables emptied between tests, children first.
TABLES = (
    "idempotency_key",
    "task_tombstone",
    "task",
    "auth_session",
    "login_device",
    "login_attempt",
    "user",
)


def postgres_admin_url() -> str | None:
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail("REQUIRE_POSTGRES=1 but TEST_DATABASE_URL is not set")
        pytest.skip("TEST_DATABASE_URL is not set")
    # Any form the functions accept (`postgresql://` included) names the same driver here.
    return normalize_database_url(url)


@dataclass
class Database:
    """A database created for the tests: its URL and an engine for checking rows."""

    backend: str
    url: str
    engine: Engine
    # The PgBouncer between the API and the database (backend "pgbouncer").
    pooler: PgBouncer | None = None

    @property
    def name(self) -> str:
        return make_url(self.url).database or ""

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as connection:
            return connection.execute(sa.text(sql), params).scalar()

    def rows(self, sql: str, **params: Any) -> list[sa.Row[Any]]:
        with self.engine.connect() as connection:
            return list(connection.execute(sa.text(sql), params))

    def truncate(self) -> None:
        with self.engine.begin() as connection:
            for table in TABLES:
                connection.execute(sa.text(f'DELETE FROM "{table}"'))


def pooler_for(request: pytest.FixtureRequest, backend: str) -> PgBouncer | None:
    """The session's PgBouncer for the "pgbouncer" backend (started on first use)."""
    return request.getfixturevalue("pgbouncer") if backend == "pgbouncer" else None


def create_database(backend: str, directory: Path, pooler: PgBouncer | None = None) -> Database:
    """An empty database of the given backend; drop it with `drop_database`. The
    "pgbouncer" backend needs the `pooler`; its `engine` connects directly, and keeps its
    own statements out of the database's statement log."""
    if backend == "sqlite":
        url = f"sqlite:///{directory / f'test-{uuid.uuid4().hex}.db'}"
        return Database(backend, url, build_engine(url, CHECK_SETTINGS))
    admin_url = make_url(postgres_admin_url() or "")
    name = f"taskapi_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as error:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(f"PostgreSQL is unreachable: {error}")
    finally:
        admin.dispose()
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    if backend == "postgresql":
        return Database(backend, url, build_engine(url, CHECK_SETTINGS))
    if pooler is None:
        raise ValueError("the pgbouncer backend needs a running PgBouncer")
    checks = sa.create_engine(
        url, poolclass=sa.NullPool, connect_args={"options": "-c log_statement=none"}
    )
    pooled = pooler.url(name).render_as_string(hide_password=False)
    return Database(backend, pooled, checks, pooler)


def drop_database(database: Database) -> None:
    database.engine.dispose()
    if database.backend == "sqlite":
        return
    admin = sa.create_engine(make_url(postgres_admin_url() or ""), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        name = make_url(database.url).database
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def migrate(url: str, revision: str = "head") -> None:
    """`alembic upgrade` through the same code path as the migrate function."""
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), revision)
    engine.dispose()


def alembic_config(connection: sa.Connection | None = None) -> Any:
    return load_module("migrations/handler.py", "migrate_handler").alembic_config(connection)


def rows_naming(db: Database, user_id: uuid.UUID, email: str) -> dict[str, int]:
    """Rows of every table of the models (new tables included) that hold the user's id or
    email in any column, by table."""
    found: dict[str, int] = {}
    with db.engine.connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            conditions = []
            for column in table.columns:
                column_type = column.type
                if isinstance(column_type, sa.TypeDecorator):
                    column_type = column_type.impl_instance
                if isinstance(column_type, sa.Uuid):
                    conditions.append(column == user_id)
                elif isinstance(column_type, sa.String) and not isinstance(column_type, sa.Enum):
                    conditions.append(column.in_([email, str(user_id), user_id.hex]))
            if conditions:
                query = sa.select(sa.func.count()).select_from(table).where(sa.or_(*conditions))
                number = connection.execute(query).scalar_one()
                if number:
                    found[table.name] = number
    return found


def set_statement_timeout(database: Database, milliseconds: int) -> None:
    """The database's statement timeout, set as the migrate function sets it from
    DATABASE_STATEMENT_TIMEOUT_MS; through PgBouncer, its server connections are renewed
    so that the next transaction has it (as docs/DEPLOY.md says to do after a change)."""
    with database.engine.begin() as connection:
        set_database_defaults(connection, Settings(database_statement_timeout_ms=milliseconds))
    if database.pooler is not None:
        database.pooler.reconnect(database.name)


@contextmanager
def statement_timeout(database: Database, milliseconds: int) -> Iterator[None]:
    """`set_statement_timeout` until the block ends, then the default again."""
    set_statement_timeout(database, milliseconds)
    try:
        yield
    finally:
        set_statement_timeout(database, DEFAULT_STATEMENT_TIMEOUT_MS)
