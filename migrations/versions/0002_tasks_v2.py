"""Tasks, version 2: due dates, the trash's index, idempotent creates."""

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"

# Frozen here rather than imported from the models (see 0001).
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Nullable, no default: on PostgreSQL adding it rewrites nothing, however big the table.
    op.add_column("task", sa.Column("due_at", TIMESTAMP, nullable=True))
    op.create_index("ix_task_user_due_at", "task", ["user_id", "due_at", "id"])
    # Partial: only trashed rows, so it stays small however many live tasks there are.
    trashed = sa.text("deleted_at IS NOT NULL")
    op.create_index(
        "ix_task_user_deleted_at",
        "task",
        ["user_id", "deleted_at"],
        postgresql_where=trashed,
        sqlite_where=trashed,
    )

    op.create_table(
        "idempotency_key",
        # Account deletion removes a user's keys with the user.
        sa.Column(
            "user_id",
            sa.Uuid(),
            sa.ForeignKey(
                "user.id", name=op.f("fk_idempotency_key_user_id_user"), ondelete="CASCADE"
            ),
            nullable=False,
        ),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("location", sa.String(length=64), nullable=False),
        sa.Column("etag", sa.String(length=64), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "key", name=op.f("pk_idempotency_key")),
    )
    # The maintenance run deletes records past their lifetime, oldest first.
    op.create_index(op.f("ix_idempotency_key_created_at"), "idempotency_key", ["created_at"])


def downgrade() -> None:
    op.drop_table("idempotency_key")
    op.drop_index("ix_task_user_deleted_at", table_name="task")
    op.drop_index("ix_task_user_due_at", table_name="task")
    # Batch mode: SQLite rebuilds the table where it cannot drop a column in place.
    with op.batch_alter_table("task") as batch:
        batch.drop_column("due_at")
