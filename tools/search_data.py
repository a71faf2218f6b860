"""Data sets for the list's text search: the heavy-user set of docs/API.md's query plans,
and users whose tasks carry 5,000-character descriptions (the worst search the contract
allows). Used by tests/test_search.py and tools/search_worst.py.

Rows are made by the database itself where it can (`generate_series` on PostgreSQL), so
220,000 tasks take seconds, not minutes.
"""

import uuid
from typing import Literal

import sqlalchemy as sa

from taskapi.db import allow_long_statements

# docs/API.md, "Query plans": 2,000 users with 100 tasks each plus one with 20,000, 5 %
# soft-deleted.
USERS = 2000
TASKS_PER_USER = 100
HEAVY_TASKS = 20_000
# Words the titles are made of, so that a search finds some tasks and not others.
WORDS = ("buy", "milk", "invoice", "call", "report", "review", "deploy", "email", "plan", "fix")

# The longest search the contract allows, and the longest description.
Q_MAX = 200
DESCRIPTION_MAX = 5000

Shape = Literal["text", "repeated", "adversarial"]
SHAPES: tuple[Shape, ...] = ("text", "repeated", "adversarial")


def heavy_user_id() -> uuid.UUID:
    return uuid.UUID(int=1)


def load_heavy_user_set(connection: sa.Connection) -> uuid.UUID:
    """The heavy-user set, on PostgreSQL; the heavy user's id. A bulk load, so it runs
    under the migrations' statement limit, not an API request's."""
    allow_long_statements(connection)
    connection.execute(
        sa.text(
            'INSERT INTO "user" (id, email, name, hashed_password, is_active, created_at,'
            " updated_at) SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(u), 12, '0'))::uuid,"
            " 'user' || u || '@example.com', 'User ' || u, 'not-a-hash', true, now(), now()"
            " FROM generate_series(1, :users) u"
        ),
        {"users": USERS + 1},
    )
    # User 1 is the heavy one; users 2 .. USERS + 1 have TASKS_PER_USER each.
    connection.execute(
        sa.text(
            "INSERT INTO task (user_id, title, description, status, priority, created_at,"
            " updated_at, deleted_at, version)"
            " SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(u), 12, '0'))::uuid,"
            " (CAST(:words AS text[]))[1 + n % 10] || ' '"
            " || (CAST(:words AS text[]))[1 + (n / 10) % 10] || ' ' || n,"
            " CASE WHEN n % 10 = 0 THEN 'notes on ' || (CAST(:words AS text[]))[1 + n % 7]"
            " || ' for user ' || u END,"
            " (ARRAY['Pending', 'In Progress', 'Completed'])[1 + n % 3],"
            " (ARRAY['Low', 'Medium', 'High'])[1 + (n / 3) % 3],"
            " now() - n * interval '1 minute', now(),"
            " CASE WHEN n % 20 = 0 THEN now() END, 1"
            " FROM generate_series(1, :users) u,"
            " generate_series(1, CASE WHEN u = 1 THEN :heavy ELSE :per_user END) n"
        ),
        {
            "users": USERS + 1,
            "heavy": HEAVY_TASKS,
            "per_user": TASKS_PER_USER,
            "words": list(WORDS),
        },
    )
    connection.execute(sa.text("ANALYZE"))
    return heavy_user_id()


def worst_search(shape: Shape) -> tuple[str, str]:
    """A description of 5,000 characters and a search of 200 that it does not contain.

    - `text`: ordinary words, and a search for words that appear nowhere;
    - `repeated`: one letter 5,000 times, and the search that letter 199 times then
      another: a LIKE matcher compares up to 200 characters at each of the 5,000 places;
    - `adversarial`: the same, but the description also holds every trigram of the
      search, so a trigram index cannot rule any row out and every row is matched.
    """
    if shape == "text":
        words = " ".join(f"{WORDS[n % 10]}{n}" for n in range(2000))
        return words[:DESCRIPTION_MAX], ("zebra quokka " * 20)[:Q_MAX]
    search = "a" * (Q_MAX - 1) + "b"
    if shape == "repeated":
        return "a" * DESCRIPTION_MAX, search
    return ("aab" + "a" * DESCRIPTION_MAX)[:DESCRIPTION_MAX], search


def load_long_descriptions(
    connection: sa.Connection, *, user_id: uuid.UUID, shape: Shape, count: int = 1000
) -> str:
    """`count` tasks of the user with the shape's description; the search to send."""
    description, search = worst_search(shape)
    task = sa.table(
        "task",
        *(
            sa.column(name)
            for name in (
                "user_id",
                "title",
                "description",
                "status",
                "priority",
                "created_at",
                "updated_at",
                "version",
            )
        ),
    )
    now = sa.func.current_timestamp()
    connection.execute(
        task.insert().values(created_at=now, updated_at=now),
        [
            {
                "user_id": user_id.hex if connection.dialect.name == "sqlite" else user_id,
                "title": f"long {n}",
                "description": description,
                "status": "Pending",
                "priority": "Low",
                "version": 1,
            }
            for n in range(count)
        ],
    )
    return search
