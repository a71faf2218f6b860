"""Data access for tasks: the list page and the conditional writes behind ETags."""

import base64
import enum
import functools
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema
from sqlalchemy.engine import Connection
from sqlmodel import Session, col, func

from taskapi.auth import LIVE_SESSION, require_live_session
from taskapi.changes import TASKS, remove_for_good
from taskapi.models import (
    IDEMPOTENCY_KEY_LIFETIME,
    TASK_PUBLIC_COLUMNS,
    IdempotencyKey,
    Task,
    TaskPriority,
    TaskPublic,
    TaskStatus,
    TaskTombstone,
    User,
    UTCDateTime,
    task_values,
)
from taskapi.tokens import TokenClaims

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
    DUE_AT = "due_at"
    DUE_AT_DESC = "-due_at"

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
    "due_at": col(Task.due_at),
}
# Columns that may be null: their rows come last in either direction, on both databases
# (PostgreSQL puts nulls last ascending but first descending, SQLite first ascending).
_NULLS_LAST = frozenset({"due_at"})


def _order_by(sort: TaskSort) -> tuple[sa.ColumnElement[Any], ...]:
    descending = sort.startswith("-")
    field = sort.removeprefix("-")
    expression = _SORT_EXPRESSIONS[field]
    ordered = expression.desc() if descending else expression.asc()
    if field in _NULLS_LAST:
        ordered = ordered.nulls_last()
    # The id breaks ties in the same direction, so pages never overlap or skip a row.
    return ordered, col(Task.id).desc() if descending else col(Task.id).asc()


# The columns of a task that clients see, selected as plain rows: loading ORM objects only
# to copy them into TaskPublic cost more than the query.
_PUBLIC_COLUMNS = tuple(col(column) for column in TASK_PUBLIC_COLUMNS)
# The escape character of the search's LIKE patterns.
_LIKE_ESCAPE = "/"


@dataclass(frozen=True)
class TaskFilter:
    """What the list keeps, beyond "the user's live tasks". Empty tuples and None filter
    nothing; several statuses (or priorities) mean any of them."""

    statuses: tuple[TaskStatus, ...] = ()
    priorities: tuple[TaskPriority, ...] = ()
    q: str | None = None
    # due_after <= due_at < due_before: adjacent windows share no task.
    due_before: datetime | None = None
    due_after: datetime | None = None
    # True: due in the past and not completed; False: every other task.
    overdue: bool | None = None


@dataclass(frozen=True)
class _Shape:
    """Which filters a statement has: the key under which it is built once."""

    sort: TaskSort
    by_status: bool
    by_priority: bool
    by_text: bool
    # PostgreSQL searches with a literal regex, SQLite with LIKE.
    postgresql: bool
    by_due_before: bool
    by_due_after: bool
    overdue: bool | None
    # A page after the first (OFFSET): it is empty when it starts past the total.
    skips: bool


def _overdue() -> sa.ColumnElement[bool]:
    return sa.and_(
        col(Task.due_at) < sa.bindparam("now", type_=UTCDateTime),
        col(Task.status) != TaskStatus.COMPLETED,
    )


# Bounded: every combination of filters and sort is a statement, about 1,000 in all.
@functools.lru_cache(maxsize=256)
def _list_statements(shape: _Shape) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """The page and the count statements for one combination of filters, built once with
    bound parameters: building and cache-keying the expressions cost about as much as
    running them."""
    conditions: list[sa.ColumnElement[bool]] = [
        col(Task.user_id) == sa.bindparam("user_id"),
        col(Task.deleted_at).is_(None),
    ]
    if shape.by_status:
        conditions.append(col(Task.status).in_(sa.bindparam("statuses", expanding=True)))
    if shape.by_priority:
        conditions.append(col(Task.priority).in_(sa.bindparam("priorities", expanding=True)))
    if shape.by_due_before:
        conditions.append(col(Task.due_at) < sa.bindparam("due_before", type_=UTCDateTime))
    if shape.by_due_after:
        conditions.append(col(Task.due_at) >= sa.bindparam("due_after", type_=UTCDateTime))
    if shape.overdue is True:
        conditions.append(_overdue())
    elif shape.overdue is False:
        # Not overdue: tasks without a due date count too (NOT of a NULL comparison would
        # drop them).
        conditions.append(sa.or_(col(Task.due_at).is_(None), sa.not_(_overdue())))
    if shape.by_text and shape.postgresql:
        # `~*` with the `***=` prefix: the rest of the pattern is a literal, matched without
        # regard to case. PostgreSQL's regex engine runs it as an automaton, in time
        # linear in the text; ILIKE backtracks, and its worst case (5,000 `a`, searching
        # 199 `a` and a `b`) cost seconds per thousand rows (docs/RELIABILITY.md). The
        # trigram index serves `~*` as it served ILIKE.
        text = sa.bindparam("text", type_=sa.String)
        conditions.append(
            sa.or_(col(Task.title).op("~*")(text), col(Task.description).op("~*")(text))
        )
    elif shape.by_text:
        text = sa.bindparam("text", type_=sa.String)
        conditions.append(
            sa.or_(
                col(Task.title).icontains(text, escape=_LIKE_ESCAPE),
                col(Task.description).icontains(text, escape=_LIKE_ESCAPE),
            )
        )
    count = sa.select(func.count().label("total")).select_from(Task).where(*conditions)
    skip = sa.bindparam("skip", type_=sa.Integer)
    if shape.skips:
        # Counted once (a CTE that both places read), so that a page starting past the
        # total is known to be empty before OFFSET steps through every matching row (at
        # 10,000 tasks, 7 ms instead of 28).
        matching = count.cte("matching")
        total = sa.select(matching.c.total).scalar_subquery()
        conditions_of_page = [*conditions, total > skip]
    else:
        # correlate(None): as the page's subquery it counts all matching rows, not the row's.
        total = count.correlate(None).scalar_subquery()
        conditions_of_page = conditions
    page = (
        sa.select(*_PUBLIC_COLUMNS, total.label("total"))
        .where(*conditions_of_page, LIVE_SESSION)
        .order_by(*_order_by(shape.sort))
        .offset(skip)
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )
    return page, count


# PostgreSQL's regex prefix (an "director") that makes the rest of the pattern a literal.
_LITERAL_REGEX = "***="


def _search_text(q: str | None, *, postgresql: bool) -> str | None:
    """The search's parameter: a literal regex on PostgreSQL; on SQLite a LIKE pattern
    whose `%` and `_` match themselves, not any character."""
    if not q:
        return None
    if postgresql:
        return _LITERAL_REGEX + q
    for special in (_LIKE_ESCAPE, "%", "_"):
        q = q.replace(special, _LIKE_ESCAPE + special)
    return q


def list_tasks(
    connection: Connection,
    *,
    claims: TokenClaims,
    where: TaskFilter,
    sort: TaskSort,
    skip: int,
    limit: int,
    now: datetime,
) -> tuple[list[dict[str, Any]], int]:
    """One page of the user's live tasks (`task_values`) and the number of all that match,
    in one statement.

    The total rides along as an uncorrelated scalar subquery, which both databases run
    once (an index scan of the user's tasks), so the page and its total come from one
    snapshot. It is not a window function: `count(*) OVER ()` must read every matching
    row, and on PostgreSQL 15 the planner still costs it as if LIMIT stopped early,
    choosing a scan of the whole `created_at` index for a user who owns a large share of
    the table. Only a page past the end, which has no row to carry the total, needs a
    second statement.

    The caller's session is checked in the same statement (`LIVE_SESSION`), so a page
    with rows comes from a live session; one without rows checks it on its own (401).
    """
    page, count = _list_statements(
        _Shape(
            sort=sort,
            by_status=bool(where.statuses),
            by_priority=bool(where.priorities),
            by_text=bool(where.q),
            postgresql=connection.dialect.name == "postgresql",
            by_due_before=where.due_before is not None,
            by_due_after=where.due_after is not None,
            overdue=where.overdue,
            skips=skip > 0,
        )
    )
    parameters = {
        "user_id": claims.user_id,
        "session_id": claims.session_id,
        "statuses": sorted(set(where.statuses)),
        "priorities": sorted(set(where.priorities)),
        "text": _search_text(where.q, postgresql=connection.dialect.name == "postgresql"),
        "due_before": where.due_before,
        "due_after": where.due_after,
        "now": now,
        "skip": skip,
        "limit": limit,
    }
    rows, total = _page_and_total(connection, page, count, parameters, claims)
    return [task_values(row) for row in rows], total


def _page_and_total(
    connection: Connection,
    page: sa.Select[Any],
    count: sa.Select[Any],
    parameters: dict[str, Any],
    claims: TokenClaims,
) -> tuple[list[sa.Row[Any]], int]:
    """The page's rows and the total they carry. A page without rows may be the session's
    doing (`LIVE_SESSION`), checked then (401); and only a page past the end, which has
    no row to carry the total, needs the count on its own."""
    rows = list(connection.execute(page, parameters).all())
    if rows:
        return rows, int(rows[0].total)
    require_live_session(connection, claims, now=parameters["now"])
    if parameters["skip"]:
        return rows, int(connection.execute(count, parameters).scalar_one())
    return rows, 0


# The read by id: what clients see, and what the ownership check and the ETag need.
_TASK_BY_ID: sa.Select[Any] = sa.select(
    *_PUBLIC_COLUMNS, col(Task.deleted_at), col(Task.version)
).where(col(Task.id) == sa.bindparam("task_id"), LIVE_SESSION)


def read_task(
    connection: Connection, *, task_id: int, claims: TokenClaims, now: datetime
) -> sa.Row[Any] | None:
    """The task with this id, whoever owns it, or None; the session checked as the
    list's (`list_tasks`): when no row comes back, it may be why (401)."""
    row = connection.execute(
        _TASK_BY_ID,
        {
            "task_id": task_id,
            "user_id": claims.user_id,
            "session_id": claims.session_id,
            "now": now,
        },
    ).first()
    if row is None:
        require_live_session(connection, claims, now=now)
    return row


def etag_of(task_id: int | None, version: int) -> str:
    """A task's strong ETag: its id and version, which every write bumps."""
    return f'"{task_id}-{version}"'


# ---------------------------------------------------------------------------------------
# The trash


def _trash_statements() -> tuple[sa.Select[Any], sa.Select[Any]]:
    conditions = (
        col(Task.user_id) == sa.bindparam("user_id"),
        col(Task.deleted_at).is_not(None),
    )
    count = sa.select(func.count()).select_from(Task).where(*conditions).correlate(None)
    page = (
        sa.select(
            *_PUBLIC_COLUMNS,
            col(Task.deleted_at),
            col(Task.version),
            count.scalar_subquery().label("total"),
        )
        .where(*conditions, LIVE_SESSION)
        # Newest deletion first; the id breaks ties, so pages never overlap.
        .order_by(col(Task.deleted_at).desc(), col(Task.id).desc())
        .offset(sa.bindparam("skip", type_=sa.Integer))
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )
    return page, count


_TRASH_PAGE, _TRASH_COUNT = _trash_statements()


def list_trash_page(
    connection: Connection, *, claims: TokenClaims, skip: int, limit: int, now: datetime
) -> tuple[list[dict[str, Any]], int]:
    """One page of the user's deleted tasks, newest deletion first (`TrashedTask`'s
    values), and their number; the session checked as the list's (`list_tasks`)."""
    parameters = {
        "user_id": claims.user_id,
        "session_id": claims.session_id,
        "now": now,
        "skip": skip,
        "limit": limit,
    }
    rows, total = _page_and_total(connection, _TRASH_PAGE, _TRASH_COUNT, parameters, claims)
    items = [
        {**task_values(row), "deleted_at": row.deleted_at, "etag": etag_of(row.id, row.version)}
        for row in rows
    ]
    return items, total


# ---------------------------------------------------------------------------------------
# Creating: the quota and idempotency keys


def lock_user_tasks(session: Session, *, user_id: uuid.UUID) -> None:
    """Hold the user's row until the transaction ends, before an Idempotency-Key is looked
    up: simultaneous requests with one key then run one at a time, and the second finds
    the first one's answer. (Every change also takes this lock, later, with its number.)

    PostgreSQL: `FOR NO KEY UPDATE`, which leaves alone the key-share locks that other
    tables' foreign keys take (a login inserting a session does not wait). SQLite has no
    row locks: there the primary key of the stored answer refuses the second one.
    """
    statement = sa.select(col(User.id)).where(col(User.id) == user_id)
    session.execute(statement.with_for_update(key_share=True))


_TASKS_HELD = (
    sa.select(func.count()).select_from(Task).where(col(Task.user_id) == sa.bindparam("user_id"))
)


def tasks_held(session: Session, *, user_id: uuid.UUID) -> int:
    """How many tasks the user holds, the trash included (the quota counts them all).

    Counted after the caller reserved its change numbers (`taskapi.changes`), which holds
    the user's row (PostgreSQL) or the database's write lock (SQLite) until the
    transaction ends: the user's creates run one at a time, and the count sees every one
    committed before it (on PostgreSQL each statement's snapshot starts after the lock
    wait).
    """
    return int(session.connection().execute(_TASKS_HELD, {"user_id": user_id}).scalar_one())


# The new rows as clients see them, and their versions (the ETags'), in the order given.
_INSERT_TASKS = sa.insert(TASKS).returning(
    *_PUBLIC_COLUMNS, col(Task.version), sort_by_parameter_order=True
)


def insert_tasks(session: Session, *, rows: list[dict[str, Any]]) -> list[sa.Row[Any]]:
    """Insert tasks (not committed) in one Core INSERT ... RETURNING (SQLAlchemy's
    "insertmanyvalues": one statement for many rows, answered in the order given), without
    ORM objects that only the answer would read: a batch's creates in one round trip."""
    return list(session.connection().execute(_INSERT_TASKS, rows).all())


def find_idempotency_record(
    session: Session, *, user_id: uuid.UUID, key: str, now: datetime
) -> IdempotencyKey | None:
    """The stored answer for the user's key, if it is younger than its lifetime. An older
    one that the maintenance run has not removed yet is deleted here, so the key can be
    used afresh."""
    record = session.get(IdempotencyKey, (user_id, key))
    if record is not None and record.created_at <= now - IDEMPOTENCY_KEY_LIFETIME:
        session.delete(record)
        session.flush()
        return None
    return record


def first_completion(now: datetime) -> sa.ColumnElement[datetime]:
    """`completed_at` for a write that completes the task: an earlier completion stays, even
    one that a concurrent request wrote after this one read the task."""
    return func.coalesce(col(Task.completed_at), now)


def write_new_version(
    session: Session,
    *,
    task: Task,
    expected_version: int | None,
    values: dict[str, Any],
    change_seq: int,
    in_trash: bool = False,
) -> Task | None:
    """Apply `values`, bump the version and store the change's number, in one UPDATE;
    None if no live row (with `in_trash`, no trashed row) matched.

    With `expected_version`, the row must still carry that version: of concurrent writers
    that read the same version, exactly one wins. RETURNING hands back the row as it now
    is, including what other writers changed in the columns this one left alone.
    A new `remind_at` re-arms the reminder (`reminded_at` cleared).
    """
    deleted = col(Task.deleted_at)
    extra: dict[str, Any] = {"reminded_at": None} if "remind_at" in values else {}
    statement = (
        sa.update(Task)
        .where(col(Task.id) == task.id, deleted.is_not(None) if in_trash else deleted.is_(None))
        .values(
            **values,
            **extra,
            version=col(Task.version) + 1,
            change_seq=change_seq,
        )
        .returning(Task)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    if expected_version is not None:
        statement = statement.where(col(Task.version) == expected_version)
    return session.scalars(statement).one_or_none()


def soft_delete_task(
    session: Session, *, task: Task, expected_version: int | None, now: datetime, change_seq: int
) -> bool:
    """Mark the task deleted (the row stays) and cancel its reminder; False if no live row
    matched."""
    statement = (
        sa.update(Task)
        .where(col(Task.id) == task.id, col(Task.deleted_at).is_(None))
        .values(
            deleted_at=now,
            updated_at=now,
            remind_at=None,
            version=col(Task.version) + 1,
            change_seq=change_seq,
        )
    )
    if expected_version is not None:
        statement = statement.where(col(Task.version) == expected_version)
    matched = session.connection().execute(statement).rowcount
    return bool(matched == 1)


def empty_trash(
    session: Session, *, user_id: uuid.UUID, task_id: int | None, now: datetime
) -> list[int]:
    """Remove for good the user's trashed tasks (or the one with `task_id`); their ids."""
    condition = col(Task.user_id) == user_id
    if task_id is not None:
        condition = sa.and_(condition, col(Task.id) == task_id)
    return remove_for_good(session.connection(), condition, now=now)


# ---------------------------------------------------------------------------------------
# The changes feed (`taskapi.changes` says how changes are numbered)

# The user's change counter and where the kept history starts, for a live session only.
_FEED_STATE = sa.select(col(User.task_change_seq), col(User.task_changes_pruned)).where(
    col(User.id) == sa.bindparam("user_id"), LIVE_SESSION
)


def _feed_statement() -> Any:
    """The user's tasks changed after a change number and the tombstones of those removed
    after it, in one statement (one snapshot: a task that moves from the table to its
    tombstone meanwhile is seen in exactly one of them), in the order of their numbers."""
    after = sa.bindparam("after", type_=sa.BigInteger)
    limit = sa.bindparam("limit", type_=sa.Integer)
    live = (
        sa.select(
            col(Task.change_seq).label("seq"),
            col(Task.deleted_at).is_not(None).label("gone"),
            *_PUBLIC_COLUMNS,
        )
        .where(col(Task.user_id) == sa.bindparam("user_id"), col(Task.change_seq) > after)
        .order_by(col(Task.change_seq))
        .limit(limit)
    )
    # The tombstones' side adds its NULLs outside the subquery, where the union gives them
    # the live side's types (inside, PostgreSQL would make them text).
    removed = (
        sa.select(
            col(TaskTombstone.change_seq).label("seq"),
            col(TaskTombstone.task_id).label("id"),
            col(TaskTombstone.user_id).label("user_id"),
        )
        .where(
            col(TaskTombstone.user_id) == sa.bindparam("user_id"),
            col(TaskTombstone.change_seq) > after,
        )
        .order_by(col(TaskTombstone.change_seq))
        .limit(limit)
        .subquery()
    )
    removed_columns = {"id": removed.c.id, "user_id": removed.c.user_id}
    # Each side stops at the page on its (user_id, change_seq) index; a limit on the union
    # alone sorted all of the user's changes first (2 times slower at 10,000 tasks than at
    # 100). As subqueries, since SQLite takes no ORDER BY inside a compound SELECT.
    return (
        sa.union_all(
            sa.select(live.subquery()),
            sa.select(
                removed.c.seq,
                sa.true(),
                *(removed_columns.get(name, sa.null()) for name in TaskPublic.model_fields),
            ),
        )
        .order_by(sa.literal_column("seq"))
        .limit(limit)
    )


_FEED = _feed_statement()


class UnknownCursorError(Exception):
    """A cursor this server did not hand out to this user (or that is not a cursor)."""


class ExpiredCursorError(Exception):
    """A cursor older than the kept history: deletions since may have been forgotten."""


@dataclass(frozen=True)
class Cursor:
    """A place in a user's changes: every change numbered up to `after` was seen; and
    tombstones up to `since` were never needed (a client that started from nothing after
    they were removed), so their removal does not make it 410."""

    after: int
    since: int

    def encode(self) -> str:
        text = f"{self.after}.{self.since}".encode()
        return base64.urlsafe_b64encode(text).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> "Cursor":
        try:
            text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("ascii")
            after, since = (int(part) for part in text.split("."))
        except (ValueError, UnicodeDecodeError):
            raise UnknownCursorError(value) from None
        # int() takes signs, spaces and underscores: only the encoder's own spelling passes.
        if cls(after, since).encode() != value or after < 0 or since < 0:
            raise UnknownCursorError(value)
        return cls(after, since)


def read_changes(
    connection: Connection, *, claims: TokenClaims, cursor: str | None, limit: int, now: datetime
) -> dict[str, Any]:
    """A page of the changes feed as `TaskChanges` in plain data.

    Of a task changed several times in the page only its last change counts: it is listed
    once, as it is now (or among `deleted`). Without `has_more`, the next cursor is the
    user's counter as it was read before the page: every change numbered up to it had
    committed by then, so the page held them all.
    """
    parameters = {"user_id": claims.user_id, "session_id": claims.session_id, "now": now}
    state = connection.execute(_FEED_STATE, parameters).first()
    if state is None:
        require_live_session(connection, claims, now=now)
        raise UnknownCursorError(cursor)  # the user is live, so this cannot happen
    counter, pruned = int(state.task_change_seq), int(state.task_changes_pruned)
    if cursor is None:
        start = Cursor(after=-1, since=pruned)
    else:
        start = Cursor.decode(cursor)
        if start.after > counter or start.since > counter:
            raise UnknownCursorError(cursor)
        if pruned > max(start.after, start.since):
            raise ExpiredCursorError(cursor)
    rows = connection.execute(
        _FEED, {"user_id": claims.user_id, "after": start.after, "limit": limit + 1}
    ).all()
    has_more = len(rows) > limit
    rows = rows[:limit]
    latest: dict[int, sa.Row[Any]] = {}
    for row in rows:
        latest.pop(row.id, None)
        latest[row.id] = row
    names = tuple(TaskPublic.model_fields)
    items: list[dict[str, Any]] = [
        dict(zip(names, row[2:], strict=True)) for row in latest.values() if not row.gone
    ]
    deleted = [row.id for row in latest.values() if row.gone]
    after = rows[-1].seq if has_more else max(counter, rows[-1].seq if rows else start.after)
    next_cursor = Cursor(after=int(after), since=max(start.since, 0))
    return {
        "items": items,
        "deleted": deleted,
        "cursor": next_cursor.encode(),
        "has_more": has_more,
    }
