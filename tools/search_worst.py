"""The worst search the contract allows, before and after the trigram index (migration
0003), on SQLite and PostgreSQL: a user with 1,000 tasks of 5,000-character descriptions
searching 200 characters, through the tasks function's real handler.

    python tools/search_worst.py [--runs 3] [--backends postgresql sqlite]

For each backend it makes a fresh database at revision 0001, loads one user per shape of
`tools/search_data.py` (and, on PostgreSQL, the heavy-user set of docs/API.md's plans),
times each user's search, migrates to head (building the index), and times them again.
The statement timeout is lifted for the measurement (`--statement-timeout-ms`), so the
figures show what a search costs; then the "after" searches run once more under the
default limit, to show what a client gets. Prints a JSON report.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import make_url

from localapi.events import LambdaContext, http_event
from localapi.runtime import import_file
from taskapi import state
from taskapi.db import reset_engine, set_database_defaults
from taskapi.settings import get_settings
from taskapi.tokens import issue_token
from tools.search_data import (
    Q_MAX,
    SHAPES,
    load_heavy_user_set,
    load_long_descriptions,
    worst_search,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
DEFAULT_STATEMENT_TIMEOUT_MS = 5000


def alembic_upgrade(url: str, revision: str) -> None:
    migrate = import_file(ROOT / "migrations" / "handler.py", "migrate_handler")
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        command.upgrade(migrate.alembic_config(connection), revision)
    engine.dispose()


def use_database(url: str, statement_timeout_ms: int) -> Any:
    """Point the layer at `url` and return the tasks function's handler."""
    os.environ.update(
        {
            "STAGE": "test",
            "DATABASE_URL": url,
            "JWT_SECRET_KEY": "search-measure-secret-key-long-enough-for-hs256",
            "DATABASE_STATEMENT_TIMEOUT_MS": str(statement_timeout_ms),
            "LOG_LEVEL": "WARNING",
        }
    )
    state.reset()
    # The limit is the database's default, as the migrate function sets it.
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    with engine.begin() as connection:
        set_database_defaults(connection, get_settings())
    engine.dispose()
    return import_file(ROOT / "functions" / "tasks" / "app.py", "tasks_app").handler


def new_user(
    connection: sa.Connection, shape: str, user_id: uuid.UUID | None = None
) -> tuple[uuid.UUID, uuid.UUID]:
    """A user (or, given `user_id`, that existing one) with a live session."""
    existing = user_id is not None
    user_id, session_id = user_id or uuid.uuid4(), uuid.uuid4()
    sqlite = connection.dialect.name == "sqlite"
    now = datetime.now(UTC)
    ids = {
        "user": user_id.hex if sqlite else user_id,
        "session": session_id.hex if sqlite else session_id,
    }
    if not existing:
        connection.execute(
            sa.text(
                'INSERT INTO "user" (id, email, name, hashed_password, is_active, created_at,'
                " updated_at) VALUES (:user, :email, 'Searcher', 'not-a-hash', true, :now, :now)"
            ),
            {**ids, "email": f"{shape}@example.com", "now": now},
        )
    connection.execute(
        sa.text(
            "INSERT INTO auth_session (id, user_id, refresh_jti, created_at, expires_at)"
            " VALUES (:session, :user, :jti, :now, :later)"
        ),
        {**ids, "jti": uuid.uuid4().hex, "now": now, "later": now + timedelta(days=1)},
    )
    return user_id, session_id


def time_search(handler: Any, token: str, q: str, runs: int) -> dict[str, Any]:
    seconds, statuses = [], set()
    for _ in range(runs):
        event = http_event(
            "GET", "/api/tasks", query={"q": q}, headers={"authorization": f"Bearer {token}"}
        )
        started = time.monotonic()
        result = handler(event, LambdaContext())
        seconds.append(time.monotonic() - started)
        statuses.add(result["statusCode"])
    return {"median_s": round(statistics.median(seconds), 3), "statuses": sorted(statuses)}


def measure(backend: str, admin_url: str, runs: int, timeout_ms: int) -> dict[str, Any]:
    if backend == "sqlite":
        directory = tempfile.mkdtemp(prefix="search-worst-")
        url = f"sqlite:///{directory}/search.db"
        admin = None
    else:
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
        name = f"taskapi_search_{uuid.uuid4().hex[:12]}"
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    report: dict[str, Any] = {}
    try:
        alembic_upgrade(url, "0001")
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        searches: dict[str, tuple[str, str]] = {}
        with engine.begin() as connection:
            if backend == "postgresql":
                heavy = load_heavy_user_set(connection)
                user_id, session_id = new_user(connection, "heavy", heavy)
                token = token_for(user_id, session_id, url, timeout_ms)
                # The user with 20,000 short tasks, searching 200 characters.
                searches["heavy user, words"] = (token, ("invoice deploy " * 20)[:Q_MAX])
                searches["heavy user, repeated"] = (token, worst_search("repeated")[1])
            for shape in SHAPES:
                user_id, session_id = new_user(connection, shape)
                q = load_long_descriptions(connection, user_id=user_id, shape=shape)
                searches[shape] = (token_for(user_id, session_id, url, timeout_ms), q)
        for revision in ("0001", "head"):
            if revision == "head":
                started = time.monotonic()
                alembic_upgrade(url, "head")
                report["index_build_s"] = round(time.monotonic() - started, 2)
                with engine.connect() as connection:
                    if backend == "postgresql":
                        connection.execute(sa.text("ANALYZE task"))
                    connection.commit()
            label = "before" if revision == "0001" else "after"
            handler = use_database(url, timeout_ms)
            report[label] = {
                shape: time_search(handler, token, q, runs)
                for shape, (token, q) in searches.items()
            }
        if backend == "postgresql":
            handler = use_database(url, DEFAULT_STATEMENT_TIMEOUT_MS)
            report[f"after, at the default {DEFAULT_STATEMENT_TIMEOUT_MS} ms limit"] = {
                shape: time_search(handler, token, q, 1) for shape, (token, q) in searches.items()
            }
        engine.dispose()
    finally:
        reset_engine()
        if admin is not None:
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    return report


def token_for(user_id: uuid.UUID, session_id: uuid.UUID, url: str, timeout_ms: int) -> str:
    use_database(url, timeout_ms)  # the signing key
    return issue_token(
        user_id=user_id,
        session_id=session_id,
        token_type="access",  # noqa: S106 (a token type, not a password)
        lifetime=timedelta(hours=1),
    ).token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=["postgresql", "sqlite"])
    parser.add_argument(
        "--statement-timeout-ms", type=int, default=120_000, help="during the measurement"
    )
    parser.add_argument(
        "--admin-url", default=os.environ.get("TEST_DATABASE_URL", DEFAULT_ADMIN_URL)
    )
    args = parser.parse_args(argv)
    report = {
        backend: measure(backend, args.admin_url, args.runs, args.statement_timeout_ms)
        for backend in args.backends
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
