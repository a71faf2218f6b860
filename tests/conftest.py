"""Fixtures: real databases (SQLite always; PostgreSQL, directly and through PgBouncer,
when TEST_DATABASE_URL is set),
settings from the environment, and the real Lambda handlers fed API Gateway events.
What they are built from lives in `tests/support/`.
"""

from collections.abc import Generator, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.support.build import BUILD, FUNCTIONS, missing
from tests.support.client import Client
from tests.support.database import (
    BACKENDS,
    POOLED_DATABASE_TIME_ZONE,
    Database,
    create_database,
    drop_database,
    migrate,
    pooler_for,
    postgres_admin_url,
)
from tests.support.environment import configure, reset_caches
from tests.support.functions import ROOT
from tests.support.keys import JWT_KEY
from tests.support.local_server import local_server, server_environment
from tests.support.pgbouncer import PgBouncer, start_pgbouncer
from tests.support.smtp import Mailbox, smtp_server
from tests.support.statement_log import log_statements
from tests.support.tasks import Account, make_account

# The fuzz's request count after the run (a summary hook, not a fixture).
pytest_plugins = ["tests.support.fuzz_summary"]

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


@pytest.fixture(autouse=True)
def _reset_caches() -> Iterator[None]:
    yield
    reset_caches()


# ---------------------------------------------------------------------------------------
# Databases


# A test marked `<backend>_only` runs on that backend alone: it is not even collected for the
# others (rather than reported as skipped there). `direct_only`: PostgreSQL without the
# pooler (a test of what the API's own connections do on the server).
BACKEND_MARKERS = {
    "postgres_only": {"sqlite"},
    "sqlite_only": {"postgresql", "pgbouncer"},
    "direct_only": {"sqlite", "pgbouncer"},
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def other_backend(item: pytest.Item) -> bool:
        params = getattr(item, "callspec", None)
        return params is not None and any(
            item.get_closest_marker(marker) and excluded & set(map(str, params.params.values()))
            for marker, excluded in BACKEND_MARKERS.items()
        )

    deselected = [item for item in items if other_backend(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]


# This process's PgBouncer, once started: a failed test through it reports its warnings.
POOLERS: list[PgBouncer] = []


@pytest.fixture(scope="session")
def pgbouncer() -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode in front of TEST_DATABASE_URL's server, for the run."""
    pooler = start_pgbouncer(postgres_admin_url() or "")
    POOLERS.append(pooler)
    yield pooler
    POOLERS.remove(pooler)
    pooler.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    params = getattr(item, "callspec", None)
    if report.failed and POOLERS and params and "pgbouncer" in map(str, params.params.values()):
        # What the pooler saw (a refused server login, a client it closed) is often the
        # cause of a failure that the client reports only as a timeout.
        report.sections.append(("pgbouncer warnings", "\n".join(POOLERS[0].warnings()[-40:])))
    return report


@pytest.fixture
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A new, unmigrated database of the backend named by the test's parameter."""
    database = create_database(request.param, tmp_path, pooler_for(request, request.param))
    yield database
    drop_database(database)


@pytest.fixture(scope="session", params=BACKENDS)
def migrated_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    """One migrated database per backend for the whole run; tests empty it before use.

    Through PgBouncer, the database's default time zone is Asia/Tokyo until the migration
    sets UTC; it logs every statement from the end of its migration,
    and at the end of the run no statement of the API (or of the tests that use its URL)
    may have pinned a session: the run fails here otherwise."""
    pooler = pooler_for(request, request.param)
    database = create_database(request.param, tmp_path_factory.mktemp("db"), pooler)
    log = None
    if pooler is not None:
        with database.engine.begin() as connection:
            connection.execute(
                sa.text(f'ALTER DATABASE "{database.name}" SET timezone = :zone'),
                {"zone": POOLED_DATABASE_TIME_ZONE},
            )
        log = log_statements(postgres_admin_url() or "", database.name)
    migrate(database.url)
    if pooler is not None:
        # The migration set the database's defaults: PgBouncer reads them afresh, as
        # docs/DEPLOY.md says to make it do after a migrate function's first run.
        pooler.reconnect(database.name)
    if log is not None:
        log.skip_to_end()
    yield database
    logged = [] if log is None else log.statements()
    drop_database(database)
    if log is not None:
        # An empty log would make the check below pass for nothing.
        assert logged, f"no statement of the run was found in {log.path}"
        pinning = log.pinning(logged)
        assert not pinning, f"statements that pin a session behind RDS Proxy: {pinning}"


@pytest.fixture
def db(migrated_database: Database, monkeypatch: pytest.MonkeyPatch) -> Database:
    """An empty, migrated database that the layer's settings point at."""
    migrated_database.truncate()
    configure(
        monkeypatch,
        stage="test",
        database_url=migrated_database.url,
        jwt_secret_key=JWT_KEY,
        bcrypt_rounds="4",
        cors_origins="",
        log_level="INFO",
    )
    return migrated_database


@pytest.fixture
def pg(db: Database, monkeypatch: pytest.MonkeyPatch) -> Database:
    """`db` for the races (`postgres_only` tests): a pool for as many threads as they start."""
    # One test process plays many containers, each of which would hold its own connection.
    configure(monkeypatch, database_pool_size="25", database_pool_timeout="30")
    return db


# ---------------------------------------------------------------------------------------
# A function's client and two users of the tasks function (a module's own fixture of the
# same name wins)


@pytest.fixture
def client(request: pytest.FixtureRequest, db: Database) -> Client:
    """A client of the tasks function, or of the one that a `client` marker names."""
    marker = request.node.get_closest_marker("client")
    return Client(marker.args[0] if marker else "tasks")


@pytest.fixture
def mailbox(db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[Mailbox]:
    """A real SMTP server that the layer's mail goes to (plain SMTP, no STARTTLS: the
    STARTTLS path has its own tests), and no waiting on the reset route's fixed time."""
    with smtp_server() as mailbox:
        configure(
            monkeypatch,
            smtp_server="127.0.0.1",
            smtp_port=str(mailbox.port),
            smtp_starttls="false",
            password_reset_answer_seconds="0",
        )
        yield mailbox


@pytest.fixture
def ada(db: Database) -> Account:
    return make_account("ada@example.com")


@pytest.fixture
def bob(db: Database) -> Account:
    return make_account("bob@example.com")


@pytest.fixture(scope="module")
def api(
    migrated_database: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """The real template served on a free port, on this backend's migrated database.
    It runs from an empty folder, so that no developer's `.env` leaks in."""
    migrated_database.truncate()
    folder = tmp_path_factory.mktemp("localapi")
    template = folder / "template.yaml"
    # A copy beside the empty folder would move CodeUri; a symlink keeps paths resolving.
    template.symlink_to(ROOT / "template.yaml")
    with local_server(
        template.resolve(), env=server_environment(migrated_database), cwd=folder
    ) as (client, _):
        yield client


@pytest.fixture(scope="module")
def built() -> Path:
    if not (BUILD / "SharedLayer" / "python").is_dir():
        missing(f"{BUILD} has no built layer")
    for name in FUNCTIONS:
        if not (BUILD / name).is_dir():
            missing(f"{BUILD / name} does not exist")
    return BUILD
