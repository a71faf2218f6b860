"""Fixtures: real databases (SQLite always, PostgreSQL when TEST_DATABASE_URL is set),
settings from the environment, and the real Lambda handlers fed API Gateway events.

PostgreSQL tests run in a database of their own, created for the session and dropped at
the end. With REQUIRE_POSTGRES=1 (CI), a missing or unreachable PostgreSQL is an error,
not a skip.
"""

import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine, make_url

from localapi.events import LambdaContext, http_event
from localapi.runtime import import_file
from taskapi.db import build_engine, reset_engine
from taskapi.passwords import clear_password_cache
from taskapi.settings import Settings, clear_settings_cache, normalize_database_url

if TYPE_CHECKING:  # tasks_helpers imports this module
    from tests.tasks_helpers import Account

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"
BACKENDS = ("sqlite", "postgresql")
# The tests' own engines open a connection per check, never competing for the app's pool.
CHECK_SETTINGS = Settings(database_null_pool=True)
# Tables emptied between tests, children first.
TABLES = ("idempotency_key", "task", "auth_session", "login_attempt", "user")


# ---------------------------------------------------------------------------------------
# Environment


@pytest.fixture(autouse=True)
def _aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake AWS credentials, so that no test can reach a real account."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)


def configure(monkeypatch: pytest.MonkeyPatch, **settings: str) -> None:
    """Set environment variables and make the layer read them afresh."""
    for name, value in settings.items():
        monkeypatch.setenv(name.upper(), value)
    reset_caches()


def reset_caches() -> None:
    clear_settings_cache()
    clear_password_cache()
    reset_engine()


@pytest.fixture(autouse=True)
def _reset_caches() -> Iterator[None]:
    yield
    reset_caches()


# ---------------------------------------------------------------------------------------
# Databases


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


def create_database(backend: str, directory: Path) -> Database:
    """An empty database of the given backend; drop it with `drop_database`."""
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
    return Database(backend, url, build_engine(url, CHECK_SETTINGS))


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


# A test marked `<backend>_only` runs on that backend alone: it is not even collected for the
# other one (rather than reported as skipped there).
BACKEND_MARKERS = {"postgres_only": "sqlite", "sqlite_only": "postgresql"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def other_backend(item: pytest.Item) -> bool:
        params = getattr(item, "callspec", None)
        return params is not None and any(
            item.get_closest_marker(marker) and excluded in params.params.values()
            for marker, excluded in BACKEND_MARKERS.items()
        )

    deselected = [item for item in items if other_backend(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]


@pytest.fixture
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A new, unmigrated database of the backend named by the test's parameter."""
    database = create_database(request.param, tmp_path)
    yield database
    drop_database(database)


@pytest.fixture(scope="session", params=BACKENDS)
def migrated_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    """One migrated database per backend for the whole run; tests empty it before use."""
    database = create_database(request.param, tmp_path_factory.mktemp("db"))
    migrate(database.url)
    yield database
    drop_database(database)


@pytest.fixture
def db(migrated_database: Database, monkeypatch: pytest.MonkeyPatch) -> Database:
    """An empty, migrated database that the layer's settings point at."""
    migrated_database.truncate()
    configure(
        monkeypatch,
        stage="test",
        database_url=migrated_database.url,
        jwt_secret_key="test-secret-key-that-is-long-enough-for-hs256",
        bcrypt_rounds="4",
        cors_origins="",
        log_level="INFO",
    )
    return migrated_database


# ---------------------------------------------------------------------------------------
# Functions and events


def load_module(relative_path: str, name: str) -> ModuleType:
    """Import a function's module (under a unique name: every function has an `app.py`)."""
    return import_file(ROOT / relative_path, name)


def load_function(domain: str) -> ModuleType:
    """The `app` module of `functions/<domain>`."""
    return load_module(f"functions/{domain}/app.py", f"{domain}_app")


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: str
    cookies: list[str]

    def json(self) -> Any:
        return json.loads(self.body)


def invoke(
    handler: Callable[[dict[str, Any], Any], dict[str, Any]], event: dict[str, Any]
) -> Response:
    """Call a Lambda handler as API Gateway does and decode its payload 2.0 response."""
    result = handler(event, LambdaContext())
    body = result.get("body") or ""
    if result.get("isBase64Encoded"):
        import base64

        # Binary bodies (the docs pages' images) are only checked for their status.
        body = base64.b64decode(body).decode(errors="replace")
    return Response(
        status=result["statusCode"],
        headers={k.lower(): v for k, v in (result.get("headers") or {}).items()},
        body=body,
        cookies=result.get("cookies") or [],
    )


class Client:
    """Sends requests to one function's real handler as API Gateway HTTP API events."""

    def __init__(self, domain: str) -> None:
        self.handler = load_function(domain).handler

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, Any] | str | None = None,
        token: str | None = None,
    ) -> Response:
        headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body)
            headers.setdefault("content-type", "application/json")
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        return invoke(
            self.handler, http_event(method, path, query=query, headers=headers, body=body)
        )

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Response:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Response:
        return self.request("DELETE", path, **kwargs)


# ---------------------------------------------------------------------------------------
# The tasks function and two of its users (a module's own fixture of the same name wins)


@pytest.fixture
def client(db: Database) -> Client:
    return Client("tasks")


@pytest.fixture
def ada(db: Database) -> "Account":
    from tests.tasks_helpers import make_account

    return make_account("ada@example.com")


@pytest.fixture
def bob(db: Database) -> "Account":
    from tests.tasks_helpers import make_account

    return make_account("bob@example.com")
