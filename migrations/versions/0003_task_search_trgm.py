"""The list's text search on PostgreSQL: pg_trgm and a GIN trigram index.

`ILIKE '%text%'` on title or description can use no B-tree, so without this every search
reads all of the user's rows and matches each (seconds for a user with many long
descriptions). The index leads with `user_id` (btree_gin), so that its candidates are the
searching user's own rows: a trigram index of title and description alone hands the scan
every user's rows that hold the search's trigrams, and PostgreSQL matches each of them
before it filters by user, so one user's crafted descriptions would slow down the others'
searches. PostgreSQL only: on SQLite this revision does nothing.
"""

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"

INDEX = "ix_task_search_trgm"


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if not _postgresql():
        return
    # Trusted extensions (PostgreSQL 13+): the database's owner may create them, as on RDS.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    op.create_index(
        INDEX,
        "task",
        ["user_id", "title", "description"],
        postgresql_using="gin",
        postgresql_ops={"title": "gin_trgm_ops", "description": "gin_trgm_ops"},
    )


def downgrade() -> None:
    if not _postgresql():
        return
    op.drop_index(INDEX, table_name="task")
    # The extensions stay: they may have been there before (IF NOT EXISTS above), and other
    # objects of the database may use them.
