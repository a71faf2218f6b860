"""The live tasks' count read from an index alone.

Every list answer carries `total`, the count of the user's live tasks that match its
filters. The indexes that lead with `user_id` hold no `deleted_at`, so that count read
each task's row (a sequential scan of the table for a user at the quota, 10,000 tasks).
This partial index holds the live tasks only, with the columns the list filters on
besides the text search: counting them, filtered by status, priority or due date or not,
is an index-only scan. `deleted_at` is the last column although it is always NULL there:
SQLite reads a table row for any column the statement names that the index lacks, even
one that only its WHERE clause tests.
"""

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"

INDEX = "ix_task_user_live"
LIVE = sa.text("deleted_at IS NULL")


def upgrade() -> None:
    op.create_index(
        INDEX,
        "task",
        ["user_id", "status", "priority", "due_at", "deleted_at"],
        postgresql_where=LIVE,
        sqlite_where=LIVE,
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="task")
