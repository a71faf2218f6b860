"""The data access of the peer baselines (bench/apps/lean, powertools, chalice): the
list page of the tasks function with SQLAlchemy Core, as a careful engineer would write
it without an ORM. One table, one prebuilt statement with bound parameters (the page and
the user's total, as the tasks function's), one pydantic model for the page.

Shipped in the baselines' own layer (`bench/artifacts.py`), so the three frameworks run
the same code and only the framework differs.
"""

import os
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, TypeAdapter

PAGE_SIZE = 20

metadata = sa.MetaData()
task = sa.Table(
    "task",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Uuid),
    sa.Column("title", sa.String),
    sa.Column("description", sa.String),
    sa.Column("status", sa.String),
    sa.Column("priority", sa.String),
    sa.Column("created_at", sa.DateTime),
    sa.Column("updated_at", sa.DateTime),
    sa.Column("completed_at", sa.DateTime),
    sa.Column("deleted_at", sa.DateTime),
)


class TaskRead(BaseModel):
    id: int
    user_id: uuid.UUID
    title: str
    description: str | None
    status: str
    priority: str
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class TaskPage(BaseModel):
    items: list[TaskRead]
    total: int
    skip: int
    limit: int


_live = sa.and_(task.c.user_id == sa.bindparam("user_id"), task.c.deleted_at.is_(None))
_total = sa.select(sa.func.count()).select_from(task).where(_live).correlate(None)
PAGE = (
    sa.select(
        *(task.c[name] for name in TaskRead.model_fields),
        _total.scalar_subquery().label("total"),
    )
    .where(_live)
    .order_by(task.c.created_at.desc(), task.c.id.desc())
    .limit(PAGE_SIZE)
)
PAGE_ADAPTER = TypeAdapter(TaskPage)

engine = sa.create_engine(
    os.environ["DATABASE_URL"], pool_size=1, max_overflow=0, pool_pre_ping=False
)


def page(user_id: uuid.UUID) -> dict[str, Any]:
    """The first page of the user's live tasks and their number, as plain data."""
    with engine.connect() as connection:
        rows = connection.execute(PAGE, {"user_id": user_id}).mappings().all()
    return {
        "items": rows,
        "total": rows[0]["total"] if rows else 0,
        "skip": 0,
        "limit": PAGE_SIZE,
    }
