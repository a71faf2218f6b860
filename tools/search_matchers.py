"""The list search's substring matchers on PostgreSQL at their worst:
a user at the task quota whose tasks are titled `aab` with descriptions of 5,000 `a`,
searching the patterns that cost each matcher most.

    python tools/search_matchers.py [--tasks 4500 10000] [--runs 3]

For each task count it makes a fresh database at head, loads the tasks, and times, in
SQL, the WHERE clause of the list's search with each matcher: `ILIKE`, `strpos` on
lower-cased text (Boyer-Moore-Horspool), and the literal regex the list uses (`~*
'***=...'`). A statement that reaches `--limit-ms` is reported as
such. Prints a JSON report: the median seconds per matcher and search.
"""

import argparse
import json
import statistics
import time
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tools.search_data import DESCRIPTION_MAX, Q_MAX
from tools.search_worst import DEFAULT_ADMIN_URL, alembic_upgrade

# Each matcher as the WHERE clause of the user's search; :q is the search as sent.
MATCHERS = {
    "ILIKE (before)": "(title ILIKE '%' || :q || '%' OR description ILIKE '%' || :q || '%')",
    "strpos(lower())": "(strpos(lower(title), lower(:q)) > 0"
    " OR strpos(lower(description), lower(:q)) > 0)",
    "~* literal (now)": "(title ~* ('***=' || :q) OR description ~* ('***=' || :q))",
}
# ILIKE's worst (200 characters compared at each of 5,000 places), strpos's (its last
# character matches everywhere, so it shifts by one), and a mix of both.
SEARCHES = {
    "a*199 b": "a" * (Q_MAX - 1) + "b",
    "b a*199": "b" + "a" * (Q_MAX - 1),
    "a*100 b a*99": "a" * (Q_MAX // 2) + "b" + "a" * (Q_MAX // 2 - 1),
}


def load(connection: sa.Connection, tasks: int) -> uuid.UUID:
    user_id = uuid.uuid4()
    connection.execute(
        sa.text(
            'INSERT INTO "user" (id, email, name, hashed_password, is_active, created_at,'
            " updated_at) VALUES (:user, 'worst@example.com', 'Worst', 'x', true, now(), now())"
        ),
        {"user": user_id},
    )
    connection.execute(
        sa.text(
            "INSERT INTO task (user_id, title, description, status, priority, created_at,"
            " updated_at, version) SELECT :user, 'aab', repeat('a', :length), 'Pending', 'Low',"
            " now(), now(), 1 FROM generate_series(1, :tasks)"
        ),
        {"user": user_id, "length": DESCRIPTION_MAX, "tasks": tasks},
    )
    connection.execute(sa.text("ANALYZE task"))
    return user_id


def time_matcher(
    engine: sa.Engine, user_id: uuid.UUID, where: str, q: str, runs: int, limit_ms: int
) -> float | str:
    seconds = []
    statement = sa.text(f"SELECT count(*) FROM task WHERE user_id = :user AND {where}")  # noqa: S608
    for _ in range(runs):
        with engine.begin() as connection:
            connection.execute(sa.text(f"SET LOCAL statement_timeout = {limit_ms}"))
            started = time.monotonic()
            try:
                connection.execute(statement, {"user": user_id, "q": q})
            except sa.exc.OperationalError:
                return f">{limit_ms / 1000:g} s (statement timeout)"
            seconds.append(time.monotonic() - started)
    return round(statistics.median(seconds), 3)


def measure(admin_url: str, tasks: int, runs: int, limit_ms: int) -> dict[str, Any]:
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    name = f"taskapi_matchers_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        alembic_upgrade(url, "head")
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        with engine.begin() as connection:
            user_id = load(connection, tasks)
        report = {
            search: {
                matcher: time_matcher(engine, user_id, where, q, runs, limit_ms)
                for matcher, where in MATCHERS.items()
            }
            for search, q in SEARCHES.items()
        }
        engine.dispose()
        return report
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[4500, 10_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--limit-ms", type=int, default=30_000)
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    arguments = parser.parse_args()
    print(
        json.dumps(
            {
                f"{tasks} tasks": measure(
                    arguments.admin_url, tasks, arguments.runs, arguments.limit_ms
                )
                for tasks in arguments.tasks
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
