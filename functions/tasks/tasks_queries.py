"""Data access for tasks: the list page and the conditional writes behind ETags."""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from taskapi.models import Task, TaskPriority, TaskStatus

# PostgreSQL's `integer`: ids and offsets beyond it cannot exist, and binding them would
# make the database raise instead of answering "no such row".
MAX_INT32 = 2**31 - 1

SortKey = Literal[
    "created_at",
    "-created_at",
    "updated_at",
    "-updated_at",
    "title",
    "-title",
    "priority",
    "-priority",
    "status",
    "-status",
]
DEFAULT_SORT: SortKey = "-created_at"

# Natural order rather than alphabetical ("High" < "Low" < "Medium" helps nobody).
# Keyed by the stored strings: the CASE compares the column with plain string literals.
STATUS_RANK = {
    TaskStatus.PENDING.value: 0,
    TaskStatus.IN_PROGRESS.value: 1,
    TaskStatus.COMPLETED.value: 2,
}
PRIORITY_RANK = {
    TaskPriority.LOW.value: 0,
    TaskPriority.MEDIUM.value: 1,
    TaskPriority.HIGH.value: 2,
}

_SORT_EXPRESSIONS: dict[str, Any] = {
    "created_at": col(Task.created_at),
    "updated_at": col(Task.updated_at),
    # Case-insensitive, as people read a list: "apple" next to "Apple", before "banana".
    "title": func.lower(col(Task.title)),
    "priority": sa.case(PRIORITY_RANK, value=col(Task.priority)),
    "status": sa.case(STATUS_RANK, value=col(Task.status)),
}


def _order_by(sort: SortKey) -> tuple[sa.ColumnElement[Any], ...]:
    descending = sort.startswith("-")
    expression = _SORT_EXPRESSIONS[sort.removeprefix("-")]
    # The id breaks ties in the same direction, so pages never overlap or skip a row.
    if descending:
        return expression.desc(), col(Task.id).desc()
    return expression.asc(), col(Task.id).asc()


def list_tasks(
    session: Session,
    *,
    user_id: uuid.UUID,
    status: TaskStatus | None,
    priority: TaskPriority | None,
    q: str | None,
    sort: SortKey,
    skip: int,
    limit: int,
) -> tuple[Sequence[Task], int]:
    """One page of the user's live tasks and the number of all that match.

    A page shorter than `limit` (and not empty past the end) tells the total by itself:
    most lists cost one statement. Otherwise a COUNT follows. The total is not a window
    function on the page query: `count(*) OVER ()` must read every matching row, and on
    PostgreSQL 15 the planner still costs it as if LIMIT stopped early, choosing a scan of
    the whole `created_at` index for a user who owns a large share of the table.
    """
    conditions: list[sa.ColumnElement[bool]] = [
        col(Task.user_id) == user_id,
        col(Task.deleted_at).is_(None),
    ]
    if status is not None:
        conditions.append(col(Task.status) == status)
    if priority is not None:
        conditions.append(col(Task.priority) == priority)
    if q:
        # autoescape: `%` and `_` in the search text match themselves, not any character.
        conditions.append(
            sa.or_(
                col(Task.title).icontains(q, autoescape=True),
                col(Task.description).icontains(q, autoescape=True),
            )
        )
    tasks = session.exec(
        select(Task).where(*conditions).order_by(*_order_by(sort)).offset(skip).limit(limit)
    ).all()
    if 0 < len(tasks) < limit or (not tasks and skip == 0):
        return tasks, skip + len(tasks)
    total = session.exec(select(func.count()).select_from(Task).where(*conditions)).one()
    return tasks, total


def first_completion(now: datetime) -> sa.ColumnElement[datetime]:
    """`completed_at` for a write that completes the task: an earlier completion stays, even
    one that a concurrent request wrote after this one read the task."""
    return func.coalesce(col(Task.completed_at), now)


def update_task(
    session: Session,
    *,
    task: Task,
    expected_version: int | None,
    values: dict[str, Any],
) -> Task | None:
    """Apply `values` and bump the version in one UPDATE; None if no live row matched.

    With `expected_version`, the row must still carry that version: of concurrent writers
    that read the same version, exactly one wins. RETURNING hands back the row as it now
    is, including what other writers changed in the columns this one left alone.
    """
    statement = (
        sa.update(Task)
        .where(col(Task.id) == task.id, col(Task.deleted_at).is_(None))
        .values(**values, version=col(Task.version) + 1)
        .returning(Task)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    if expected_version is not None:
        statement = statement.where(col(Task.version) == expected_version)
    written = session.scalars(statement).one_or_none()
    session.commit()
    return written


def soft_delete_task(
    session: Session, *, task: Task, expected_version: int | None, now: datetime
) -> bool:
    """Mark the task deleted (the row stays); False if no live row matched."""
    statement = (
        sa.update(Task)
        .where(col(Task.id) == task.id, col(Task.deleted_at).is_(None))
        .values(deleted_at=now, updated_at=now, version=col(Task.version) + 1)
    )
    if expected_version is not None:
        statement = statement.where(col(Task.version) == expected_version)
    matched = session.connection().execute(statement).rowcount
    session.commit()
    return bool(matched == 1)
