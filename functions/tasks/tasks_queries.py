"""Data access for tasks: the list page and the conditional writes behind ETags."""

import enum
import functools
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import GetJsonSchemaHandler, TypeAdapter
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema
from sqlmodel import Session, col, func

from taskapi.models import Task, TaskPage, TaskPriority, TaskPublic, TaskStatus

# PostgreSQL's `integer`: ids and offsets beyond it cannot exist, and binding them would
# make the database raise instead of answering "no such row".
MAX_INT32 = 2**31 - 1


class TaskSort(enum.StrEnum):
    """A sort field of the task list; `-` in front sorts in descending order."""

    CREATED_AT = "created_at"
    CREATED_AT_DESC = "-created_at"
    UPDATED_AT = "updated_at"
    UPDATED_AT_DESC = "-updated_at"
    TITLE = "title"
    TITLE_DESC = "-title"
    PRIORITY = "priority"
    PRIORITY_DESC = "-priority"
    STATUS = "status"
    STATUS_DESC = "-status"

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # Member names for generated clients, which would otherwise number the values
        # (`VALUE_1`...): `-created_at` is no identifier.
        schema = handler.resolve_ref_schema(handler(core_schema))
        schema["x-enum-varnames"] = [member.name for member in cls]
        return schema


DEFAULT_SORT = TaskSort.CREATED_AT_DESC

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


def _order_by(sort: TaskSort) -> tuple[sa.ColumnElement[Any], ...]:
    descending = sort.startswith("-")
    expression = _SORT_EXPRESSIONS[sort.removeprefix("-")]
    # The id breaks ties in the same direction, so pages never overlap or skip a row.
    if descending:
        return expression.desc(), col(Task.id).desc()
    return expression.asc(), col(Task.id).asc()


# The columns of a task that clients see, selected as plain rows: loading ORM objects only
# to copy them into TaskPublic cost more than the query (docs/PERFORMANCE.md).
_PUBLIC_COLUMNS = tuple(col(getattr(Task, name)) for name in TaskPublic.model_fields)
# Validates a whole page in one call, from the rows' mappings.
_PAGE = TypeAdapter(TaskPage)
# The escape character of the search's LIKE patterns.
_LIKE_ESCAPE = "/"


@functools.cache
def _list_statements(
    sort: TaskSort, *, by_status: bool, by_priority: bool, by_text: bool
) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """The page and the count statements for one combination of filters, built once with
    bound parameters (at most 80 of them): building and cache-keying the expressions cost
    about as much as running them (docs/PERFORMANCE.md)."""
    conditions: list[sa.ColumnElement[bool]] = [
        col(Task.user_id) == sa.bindparam("user_id"),
        col(Task.deleted_at).is_(None),
    ]
    if by_status:
        conditions.append(col(Task.status) == sa.bindparam("status"))
    if by_priority:
        conditions.append(col(Task.priority) == sa.bindparam("priority"))
    if by_text:
        text = sa.bindparam("text", type_=sa.String)
        conditions.append(
            sa.or_(
                col(Task.title).icontains(text, escape=_LIKE_ESCAPE),
                col(Task.description).icontains(text, escape=_LIKE_ESCAPE),
            )
        )
    # correlate(None): as the page's subquery it counts all matching rows, not the row's own.
    count = sa.select(func.count()).select_from(Task).where(*conditions).correlate(None)
    page = (
        sa.select(*_PUBLIC_COLUMNS, count.scalar_subquery().label("total"))
        .where(*conditions)
        .order_by(*_order_by(sort))
        .offset(sa.bindparam("skip", type_=sa.Integer))
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )
    return page, count


def _escape_like(text: str) -> str:
    """`%` and `_` in the search text match themselves, not any character."""
    for special in (_LIKE_ESCAPE, "%", "_"):
        text = text.replace(special, _LIKE_ESCAPE + special)
    return text


def list_tasks(
    session: Session,
    *,
    user_id: uuid.UUID,
    status: TaskStatus | None,
    priority: TaskPriority | None,
    q: str | None,
    sort: TaskSort,
    skip: int,
    limit: int,
) -> TaskPage:
    """One page of the user's live tasks and the number of all that match, in one statement.

    The total rides along as an uncorrelated scalar subquery, which both databases run
    once (an index scan of the user's tasks), so the page and its total come from one
    snapshot. It is not a window function: `count(*) OVER ()` must read every matching
    row, and on PostgreSQL 15 the planner still costs it as if LIMIT stopped early,
    choosing a scan of the whole `created_at` index for a user who owns a large share of
    the table. Only a page past the end, which has no row to carry the total, needs a
    second statement.
    """
    page, count = _list_statements(
        sort, by_status=status is not None, by_priority=priority is not None, by_text=bool(q)
    )
    parameters = {
        "user_id": user_id,
        "status": status,
        "priority": priority,
        "text": _escape_like(q) if q else None,
        "skip": skip,
        "limit": limit,
    }
    # Core rows, not ORM objects: nothing here is written back.
    connection = session.connection()
    rows = connection.execute(page, parameters).all()
    if rows:
        total = rows[0].total
    elif skip:
        total = connection.execute(count, parameters).scalar_one()
    else:
        total = 0
    return _PAGE.validate_python(
        {"items": [row._mapping for row in rows], "total": total, "skip": skip, "limit": limit}
    )


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
