"""Accounts, version 3: the security log, the tokens that emails carry (password reset,
email change), and the device of each session."""

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"

# Frozen here rather than imported from the models (see 0001).
TIMESTAMP = sa.DateTime(timezone=True)
SECURITY_EVENT_TYPES = (
    "signup",
    "login",
    "login_failed",
    "refresh_token_reused",
    "password_changed",
    "password_reset_requested",
    "password_reset",
    "email_change_requested",
    "email_changed",
    "session_revoked",
    "logout",
)
ACCOUNT_TOKEN_PURPOSES = ("password_reset", "email_change")


def _string_enum(values: tuple[str, ...], name: str, length: int) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=length)


def _user_id(table: str) -> "sa.Column[object]":
    # Deleting an account deletes its events and tokens with it.
    return sa.Column(
        "user_id",
        sa.Uuid(),
        sa.ForeignKey("user.id", name=op.f(f"fk_{table}_user_id_user"), ondelete="CASCADE"),
        nullable=False,
    )


def upgrade() -> None:
    # Nullable, no default: on PostgreSQL adding them rewrites nothing.
    op.add_column("auth_session", sa.Column("ip", sa.String(length=64), nullable=True))
    op.add_column("auth_session", sa.Column("user_agent", sa.String(length=256), nullable=True))
    op.add_column("auth_session", sa.Column("last_used_at", TIMESTAMP, nullable=True))

    op.create_table(
        "security_event",
        sa.Column("id", sa.Uuid(), nullable=False),
        _user_id("security_event"),
        sa.Column(
            "type", _string_enum(SECURITY_EVENT_TYPES, "security_event_type", 32), nullable=False
        ),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=256), nullable=True),
        sa.Column("session_id", sa.Uuid(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_event")),
    )
    # The user's page, newest first; and the maintenance run's oldest-first deletes.
    op.create_index(
        "ix_security_event_user_newest", "security_event", ["user_id", "created_at", "id"]
    )
    op.create_index(op.f("ix_security_event_created_at"), "security_event", ["created_at"])

    op.create_table(
        "account_token",
        _user_id("account_token"),
        sa.Column(
            "purpose",
            _string_enum(ACCOUNT_TOKEN_PURPOSES, "account_token_purpose", 20),
            nullable=False,
        ),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("new_email", sa.String(length=320), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "purpose", name=op.f("pk_account_token")),
    )
    op.create_index(
        op.f("ix_account_token_token_hash"), "account_token", ["token_hash"], unique=True
    )
    op.create_index(op.f("ix_account_token_expires_at"), "account_token", ["expires_at"])


def downgrade() -> None:
    op.drop_table("account_token")
    op.drop_table("security_event")
    # Batch mode: SQLite rebuilds the table where it cannot drop a column in place.
    with op.batch_alter_table("auth_session") as batch:
        batch.drop_column("last_used_at")
        batch.drop_column("user_agent")
        batch.drop_column("ip")
