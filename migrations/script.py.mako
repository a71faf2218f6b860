## The revision ids are the variables below, not repeated in the docstring. Alembic reads
## branch_labels and depends_on only where a revision sets them, and this project's chain
## has no branches.
"""${message}"""

import sqlalchemy as sa
import sqlmodel
from alembic import op
${imports if imports else ""}

revision: str = ${repr(up_revision)}
down_revision: str | None = ${repr(down_revision)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
