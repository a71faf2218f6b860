"""Tasks, version 2: due dates.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here rather than imported from the models (see 0001).
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Nullable, no default: on PostgreSQL adding it rewrites nothing, however big the table.
    op.add_column("task", sa.Column("due_at", TIMESTAMP, nullable=True))
    op.create_index("ix_task_user_due_at", "task", ["user_id", "due_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_task_user_due_at", table_name="task")
    # Batch mode: SQLite rebuilds the table where it cannot drop a column in place.
    with op.batch_alter_table("task") as batch:
        batch.drop_column("due_at")
