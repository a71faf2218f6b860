"""At the quota: what one user's reads cost at 100, 1,000 and 10,000 tasks (the per-user
quota, `MAX_TASKS_PER_USER`) on PostgreSQL, every task at the documented maxima (a
200-character title, a 5,000-character description), through the tasks function's
handler in one warm process, sizes and reads interleaved call by call.

Each read returns one page (20 tasks) whatever the user holds, so its p50 should not grow
with the user's tasks; the table gives each read's p50 per size and its growth from the
smallest size to the largest.

    .venv/bin/python -m bench.quota [--invocations 100]
"""

import argparse
import statistics
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from bench.artifacts import Artifacts, Log, last_build, run_child
from bench.database import SUBJECT_SETTINGS, BenchDatabase, scratch_database, signed_in_user
from localapi.events import http_event
from taskapi.db import allow_long_statements, build_engine
from taskapi.models import TITLE_MAX_LENGTH
from taskapi.settings import Settings
from tools.search_data import worst_search

CHILD = (Path(__file__).resolve().parent / "handler_child.py").read_text()
SIZES = (100, 1000, 10_000)
SMOKE_SIZES = (20, 100)
# The worst search the contract allows (tools/search_data.py): a 200-character `q` that
# no description holds although every description holds all its trigrams, so the
# trigram index rules no task out and every description is read and matched.
DESCRIPTION, WORST_Q = worst_search("adversarial")
# The read's p50 at the largest size over its p50 at the smallest: a page of 20 is the
# same work at any size, so more than this means the read scales with the user's tasks.
GROWTH_LIMIT = 1.5

# name -> path and query parameters
READS: dict[str, tuple[str, dict[str, str]]] = {
    "first page": ("/api/tasks", {}),
    "filtered page (status, priority)": ("/api/tasks", {"status": "Pending", "priority": "High"}),
    "sorted by due date": ("/api/tasks", {"sort": "due_at"}),
    "worst search (200 characters)": ("/api/tasks", {"q": WORST_Q}),
    # The first page of an offline client's sync (100 tasks, the feed's default).
    "changes feed from the start": ("/api/tasks/changes", {}),
    # `total` with the least page around it: one task, and the count of all live ones.
    "total (a page of one task)": ("/api/tasks", {"limit": "1"}),
    # A page past the end carries no row, so the route counts on its own, after OFFSET
    # has stepped through every task.
    "page past the end": ("/api/tasks", {"skip": "100000"}),
}
# The worst search reads every description (seconds at 10,000 tasks): a few calls give
# a steady p50, where the others' 100 would take the run's time.
SLOW_READS = {"worst search (200 characters)": 5}


def seed(database: BenchDatabase, sizes: tuple[int, ...]) -> dict[int, str]:
    """A user per size, holding that many tasks; each user's access token. The tasks are
    made by PostgreSQL itself (`generate_series`): 10,000 rows of 5 KB in seconds."""
    engine = build_engine(database.url, Settings(database_null_pool=True))
    now = datetime.now(UTC)
    tokens, users = {}, {}
    with Session(engine) as session:
        for size in sizes:
            user, tokens[size] = signed_in_user(
                session, email=f"quota-{size}@example.com", hashed_password="x", now=now
            )
            users[size] = user.id
        session.commit()
    with engine.begin() as connection:
        # A bulk load: the migrations' statement limit, not an API request's.
        allow_long_statements(connection)
        for size, user_id in users.items():
            _insert_tasks(connection, user_id=user_id, count=size)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        # What autovacuum does after a bulk insert (PostgreSQL 13+ vacuums on inserts too):
        # statistics, and the visibility map that lets a count read an index alone.
        connection.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()
    return tokens


def _insert_tasks(connection: sa.Connection, *, user_id: uuid.UUID, count: int) -> None:
    # Statuses and priorities in turn, every other task due (past and future alike), one
    # in twenty in the trash: the mix a long-lived account has. Each task's change number
    # is its place in the series, as if the user had written them one by one.
    connection.execute(
        sa.text(
            "INSERT INTO task (user_id, title, description, status, priority, due_at,"
            " created_at, updated_at, completed_at, deleted_at, version, change_seq)"
            " SELECT :user_id, rpad('Task ' || n || ' ', :title_length, 'x'), :description,"
            " (ARRAY['Pending', 'In Progress', 'Completed'])[1 + n % 3],"
            " (ARRAY['Low', 'Medium', 'High'])[1 + (n / 3) % 3],"
            " CASE WHEN n % 2 = 0 THEN now() + (n - :count / 2) * interval '1 hour' END,"
            " now() - n * interval '1 minute', now() - n * interval '1 minute',"
            " CASE WHEN n % 3 = 2 THEN now() END,"
            " CASE WHEN n % 20 = 0 THEN now() END, 1, n"
            " FROM generate_series(1, :count) n"
        ),
        {
            "user_id": user_id,
            "title_length": TITLE_MAX_LENGTH,
            "description": DESCRIPTION,
            "count": count,
        },
    )
    connection.execute(
        sa.text('UPDATE "user" SET task_change_seq = :count WHERE id = :user_id'),
        {"user_id": user_id, "count": count},
    )


def measure(
    artifacts: Artifacts,
    database: BenchDatabase,
    *,
    sizes: tuple[int, ...] = SIZES,
    invocations: int,
    warmup: int,
) -> dict[str, Any]:
    tokens = seed(database, sizes)
    subjects = [
        {
            "name": f"{read} @ {size}",
            "app": "tasks",
            "event": http_event(
                "GET", path, headers={"authorization": f"Bearer {tokens[size]}"}, query=query
            ),
            "status": 200,
            **(
                {"invocations": min(invocations, SLOW_READS[read]), "warmup": 1}
                if read in SLOW_READS
                else {}
            ),
        }
        for read, (path, query) in READS.items()
        for size in sizes
    ]
    measured = run_child(
        artifacts,
        CHILD,
        {
            "roots": {"tasks": str(artifacts.task_roots["tasks"])},
            "subjects": subjects,
            "invocations": invocations,
            "warmup": warmup,
        },
        env={"TZ": ":UTC", **SUBJECT_SETTINGS, "DATABASE_URL": database.url},
        what="reads at the quota",
    )
    reads: dict[str, Any] = {}
    for read in READS:
        # A read that failed (a statement timeout's 503) has its status in place of a time.
        p50: dict[int, float | None] = {}
        for size in sizes:
            samples = measured["samples"][f"{read} @ {size}"]
            p50[size] = statistics.median(samples) if samples else None
        first, last = p50[sizes[0]], p50[sizes[-1]]
        reads[read] = {
            "p50_ms": {str(size): value for size, value in p50.items()},
            "failed": {
                str(size): measured["failed"][f"{read} @ {size}"]["status"]
                for size in sizes
                if f"{read} @ {size}" in measured["failed"]
            },
            "growth": last / first if first and last else None,
        }
    return {
        "backend": database.backend,
        "sizes": list(sizes),
        "invocations": invocations,
        "slow_reads": {read: min(invocations, calls) for read, calls in SLOW_READS.items()},
        "growth_limit": GROWTH_LIMIT,
        "reads": reads,
    }


def table(results: dict[str, Any]) -> str:
    """The p50 per size, in ms (a failed read: its status), and the growth."""
    lines = []
    for read, figures in results["reads"].items():
        cells = [
            f"{figures['failed'][size]}" if size in figures["failed"] else f"{ms:.2f}"
            for size, ms in figures["p50_ms"].items()
        ]
        growth = figures["growth"]
        lines.append(
            f"{read:<36} "
            + " ".join(f"{cell:>9}" for cell in cells)
            + f"  growth {'-' if growth is None else f'{growth:.2f}'}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invocations", type=int, default=100)
    args = parser.parse_args()
    log = Log()
    with scratch_database("postgresql", tasks=0) as database:
        log("seeding and measuring")
        results = measure(last_build(), database, invocations=args.invocations, warmup=10)
    print(table(results))


if __name__ == "__main__":
    main()
