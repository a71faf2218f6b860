"""Benchmark databases: a SQLite file and a PostgreSQL database of their own
(`taskapi_bench_<random>`, dropped afterwards), migrated and seeded with a user who owns
1,000 tasks, a second user for writes, and access tokens for both."""

import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlmodel import Session, col

from taskapi import state
from taskapi.db import build_engine
from taskapi.models import AuthSession, Task, TaskPriority, TaskStatus, User
from taskapi.passwords import hash_password
from taskapi.settings import Settings
from taskapi.tokens import issue_token_pair

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
JWT_SECRET_KEY = "bench-secret-key-that-is-long-enough-for-hs256"
PASSWORD = "bench-password"
TASKS = 1000

# What every subject process gets: the template's defaults for a deployed function.
SUBJECT_SETTINGS = {
    "STAGE": "test",
    "JWT_SECRET_KEY": JWT_SECRET_KEY,
    "BCRYPT_ROUNDS": "4",
    "CORS_ORIGINS": "*",
    "LOG_LEVEL": "INFO",
    "DATABASE_POOL_SIZE": "1",
    "DATABASE_MAX_OVERFLOW": "0",
    "DATABASE_POOL_TIMEOUT": "5",
}


@dataclass
class BenchDatabase:
    backend: str
    url: str
    user_id: uuid.UUID
    task_id: int
    token: str
    writer_token: str

    @property
    def raw_url(self) -> str:
        """The URL for the plain driver (the floor): a file path or a libpq URL."""
        url = make_url(self.url)
        if self.backend == "sqlite":
            return str(url.database)
        return url.set(drivername="postgresql").render_as_string(hide_password=False)

    def add_user(self, *, email: str, hashed_password: str) -> None:
        engine = build_engine(self.url, Settings(database_null_pool=True))
        with Session(engine) as session:
            session.add(User(email=email, name="Login", hashed_password=hashed_password))
            session.commit()
        engine.dispose()


def postgres_available() -> bool:
    engine = sa.create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


@contextmanager
def bench_database(backend: str, folder: Path, *, tasks: int = TASKS) -> Iterator[BenchDatabase]:
    if backend == "sqlite":
        folder.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{folder / 'bench.db'}"
    else:
        name = f"taskapi_bench_{uuid.uuid4().hex[:12]}"
        _admin(f'CREATE DATABASE "{name}"')
        url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(False)
    try:
        env = {**os.environ, **SUBJECT_SETTINGS, "DATABASE_URL": url}
        migrated = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "alembic"), "upgrade", "head"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if migrated.returncode != 0:
            raise RuntimeError(f"alembic upgrade head failed:\n{migrated.stderr}")
        yield _seed(backend, url, tasks)
    finally:
        if backend == "postgresql":
            _admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def _admin(sql: str) -> None:
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(sql))
    finally:
        admin.dispose()


def _seed(backend: str, url: str, tasks: int) -> BenchDatabase:
    os.environ.update(SUBJECT_SETTINGS)
    os.environ["ACCESS_TOKEN_EXPIRE_MINUTES"] = "120"
    state.reset()
    engine = build_engine(url, Settings(database_null_pool=True))
    now = datetime.now(UTC)
    hashed = hash_password(PASSWORD)
    with Session(engine) as session:
        reader, reader_token = signed_in_user(
            session, email="reader@example.com", hashed_password=hashed, now=now
        )
        _, writer_token = signed_in_user(
            session, email="writer@example.com", hashed_password=hashed, now=now
        )
        statuses, priorities = list(TaskStatus), list(TaskPriority)
        session.add_all(
            Task(
                user_id=reader.id,
                title=f"Task {number}: write the benchmark chapter",
                description="A task of the benchmark user, long enough to look real." * 2,
                status=statuses[number % 3],
                priority=priorities[number % 3],
                created_at=now - timedelta(minutes=number),
                updated_at=now - timedelta(minutes=number),
                completed_at=now if statuses[number % 3] is TaskStatus.COMPLETED else None,
            )
            for number in range(tasks)
        )
        session.commit()
        task_id = session.scalar(
            sa.select(sa.func.max(col(Task.id))).where(col(Task.user_id) == reader.id)
        )
        reader_id = reader.id
    if backend == "postgresql":
        # What autovacuum does within a minute of these inserts on a real database: without
        # statistics the planner takes the user's 1,000 tasks for one row, and every
        # subject's page query scans and sorts them all.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("ANALYZE")
    engine.dispose()
    return BenchDatabase(
        backend=backend,
        url=url,
        user_id=reader_id,
        task_id=int(task_id or 0),
        token=reader_token,
        writer_token=writer_token,
    )


def signed_in_user(
    session: Session, *, email: str, hashed_password: str, now: datetime
) -> tuple[User, str]:
    """A user with a live session (flushed, not committed) and its access token."""
    user = User(email=email, name=email.partition("@")[0].title(), hashed_password=hashed_password)
    session.add(user)
    session.flush()
    session_id = uuid.uuid4()
    pair = issue_token_pair(user_id=user.id, session_id=session_id, now=now)
    session.add(
        AuthSession(
            id=session_id,
            user_id=user.id,
            refresh_jti=pair.refresh.claims.jti,
            expires_at=now + timedelta(days=1),
        )
    )
    return user, pair.access.token


@contextmanager
def scratch_database(backend: str | None = None, *, tasks: int = TASKS) -> Iterator[BenchDatabase]:
    """`bench_database` in a folder of its own, for a tool that measures one thing alone;
    `backend` defaults to PostgreSQL where it is reachable, else SQLite."""
    backend = backend or ("postgresql" if postgres_available() else "sqlite")
    with (
        tempfile.TemporaryDirectory() as folder,
        bench_database(backend, Path(folder), tasks=tasks) as database,
    ):
        yield database
