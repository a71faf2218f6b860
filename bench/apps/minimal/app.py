"""Baseline: the smallest FastAPI + Mangum + SQLModel app that lists a user's tasks.

No authentication, no logging, no error format: one `def` route, a session per request
and one SELECT, as a tutorial would write it. Built and deployed like a function
(`bench/artifacts.py`), it is what the project's functions are measured against.
"""

import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, FastAPI
from mangum import Mangum
from sqlalchemy.orm import registry
from sqlmodel import Field, Session, SQLModel, col, create_engine, select


# Its own registry only so that the benchmark can load this app next to the project's
# models (both map the `task` table) in one process.
class Base(SQLModel, registry=registry()):
    pass


class Task(Base, table=True):
    id: int | None = Field(default=None, primary_key=True)
    user_id: uuid.UUID
    title: str
    description: str | None
    status: str
    priority: str
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    deleted_at: datetime | None


class TaskRead(SQLModel):
    id: int
    user_id: uuid.UUID
    title: str
    description: str | None
    status: str
    priority: str
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


engine = create_engine(os.environ["DATABASE_URL"])


def get_session() -> Iterator[Session]:
    with Session(engine) as session:
        yield session


app = FastAPI()


@app.get("/api/tasks", response_model=list[TaskRead])
def list_tasks(session: Annotated[Session, Depends(get_session)], user_id: uuid.UUID) -> list[Task]:
    return list(
        session.exec(
            select(Task)
            .where(Task.user_id == user_id, col(Task.deleted_at).is_(None))
            .order_by(col(Task.created_at).desc(), col(Task.id).desc())
            .limit(20)
        ).all()
    )


handler = Mangum(app, lifespan="off")
