"""Known devices: a login presenting its device's token is throttled by that device's own
failures alone (docs/API.md, "Known devices"). Only the token's SHA-256 is stored."""

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0004"

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "login_device",
        sa.Column("id", sa.Uuid(), nullable=False),
        # The device's owner: deleted with the user.
        sa.Column(
            "user_id",
            sa.Uuid(),
            sa.ForeignKey("user.id", name=op.f("fk_login_device_user_id_user"), ondelete="CASCADE"),
            nullable=False,
        ),
        # The token's SHA-256 in hex; the token itself is never stored.
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        # The device's own run of failed logins (none while its timestamps are null).
        sa.Column("failed_count", sa.Integer(), nullable=False),
        *(
            sa.Column(name, TIMESTAMP, nullable=True)
            for name in ("first_failed_at", "last_failed_at")
        ),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_device")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_login_device_token_hash")),
    )
    op.create_index(op.f("ix_login_device_user_id"), "login_device", ["user_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_login_device_user_id"), table_name="login_device")
    op.drop_table("login_device")
