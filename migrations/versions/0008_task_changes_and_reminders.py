"""Tasks, version 3: the changes feed's numbering and tombstones, and reminders.

Existing tasks get their id as their change number (distinct within each user, as the
feed's order needs), and each user's counter starts at the highest of them.
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"

# Frozen here rather than imported from the models (see 0001).
TIMESTAMP = sa.DateTime(timezone=True)
REMINDER_DUE = sa.text("remind_at IS NOT NULL AND reminded_at IS NULL")


def _added_columns() -> dict[str, list[sa.Column[Any]]]:
    """The columns this revision adds, by table: the upgrade adds them, the downgrade
    drops them again (new objects each time: a column belongs to one table)."""
    zero = sa.text("0")
    return {
        "user": [
            sa.Column("task_change_seq", sa.BigInteger(), nullable=False, server_default=zero),
            sa.Column("task_changes_pruned", sa.BigInteger(), nullable=False, server_default=zero),
        ],
        "task": [
            sa.Column("remind_at", TIMESTAMP, nullable=True),
            sa.Column("reminded_at", TIMESTAMP, nullable=True),
            sa.Column("change_seq", sa.BigInteger(), nullable=False, server_default=zero),
        ],
    }


def upgrade() -> None:
    for table, columns in _added_columns().items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.add_column(column)
    op.execute("UPDATE task SET change_seq = id")
    op.execute(
        'UPDATE "user" SET task_change_seq = '
        '(SELECT coalesce(max(task.id), 0) FROM task WHERE task.user_id = "user".id)'
    )
    op.create_index("ix_task_user_change_seq", "task", ["user_id", "change_seq"])
    op.create_index(
        "ix_task_reminder_due",
        "task",
        ["remind_at"],
        postgresql_where=REMINDER_DUE,
        sqlite_where=REMINDER_DUE,
    )
    op.create_table(
        "task_tombstone",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("change_seq", sa.BigInteger(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("removed_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "change_seq", "task_id", name=op.f("pk_task_tombstone")),
        # Account deletion removes a user's tombstones with the user.
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user.id"],
            name=op.f("fk_task_tombstone_user_id_user"),
            ondelete="CASCADE",
        ),
    )
    # The maintenance run removes tombstones past CHANGES_RETENTION_DAYS, oldest first.
    op.create_index(op.f("ix_task_tombstone_removed_at"), "task_tombstone", ["removed_at"])


def downgrade() -> None:
    op.drop_table("task_tombstone")
    for index in ("ix_task_reminder_due", "ix_task_user_change_seq"):
        op.drop_index(index, table_name="task")
    # In reverse order. Batch mode: SQLite rebuilds the table where it cannot drop a
    # column in place.
    for table, columns in reversed(_added_columns().items()):
        with op.batch_alter_table(table) as batch:
            for column in reversed(columns):
                batch.drop_column(column.name)
