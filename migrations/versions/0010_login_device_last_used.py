"""When each known device last logged in, so that the maintenance run can forget one.

Every login without a device token (a script, a client that drops it) adds a device row,
and none was ever removed: the rows grew with the logins. A device is now forgotten once
it has not logged in for `KNOWN_DEVICE_LIFETIME`; `last_used_at` says when it last did
(its creation, for the rows there are), and its index serves the purge.
"""

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"

TIMESTAMP = sa.DateTime(timezone=True)

INDEX = "ix_login_device_last_used_at"


def upgrade() -> None:
    # Added empty, filled, then made NOT NULL with the time of insertion as its default:
    # the code of the release before, which runs while a deploy migrates (and after a
    # rollback that keeps the schema), adds devices without it. Batch mode, because
    # SQLite rebuilds the table where it cannot change a column in place.
    with op.batch_alter_table("login_device") as batch:
        batch.add_column(sa.Column("last_used_at", TIMESTAMP, nullable=True))
    op.execute("UPDATE login_device SET last_used_at = created_at")
    with op.batch_alter_table("login_device") as batch:
        batch.alter_column(
            "last_used_at",
            existing_type=TIMESTAMP,
            nullable=False,
            server_default=sa.text("CURRENT_TIMESTAMP"),
        )
    op.create_index(op.f(INDEX), "login_device", ["last_used_at"])


def downgrade() -> None:
    op.drop_index(op.f(INDEX), table_name="login_device")
    with op.batch_alter_table("login_device") as batch:
        batch.drop_column("last_used_at")
