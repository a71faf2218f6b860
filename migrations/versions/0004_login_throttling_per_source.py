"""Login throttling per (email, source IP), with a row per email for the cap across sources.

The rows only count failures inside a lockout window (minutes), so the table is
recreated rather than converted: at worst a lockout in progress ends early, once.
"""

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"

TIMESTAMP = sa.DateTime(timezone=True)


def _create(*, per_source: bool) -> None:
    columns = [sa.Column("email", sa.String(length=320), nullable=False)]
    if per_source:
        columns.append(sa.Column("source", sa.String(length=64), nullable=False))
    op.create_table(
        "login_attempt",
        *columns,
        sa.Column("failed_count", sa.Integer(), nullable=False),
        sa.Column("first_failed_at", TIMESTAMP, nullable=False),
        sa.Column("last_failed_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint(
            *(("email", "source") if per_source else ("email",)), name=op.f("pk_login_attempt")
        ),
    )


def upgrade() -> None:
    op.drop_table("login_attempt")
    _create(per_source=True)


def downgrade() -> None:
    op.drop_table("login_attempt")
    _create(per_source=False)
