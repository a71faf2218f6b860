"""What the changes feed (`GET /api/tasks/changes`) needs of every write to a user's tasks.

Each change takes the user's next change number under the user row's lock
(`reserve_changes`), held until the transaction ends: a second writer of the same user waits
for the first to commit before it numbers its own change, so one user's numbers are in
the order their changes committed, and a reader that sees a number has seen every lower
one. The task row keeps the number of its last change. A task removed for good leaves a
tombstone at the number of its deletion (`bury`); the maintenance run removes tombstones
after `CHANGES_RETENTION_DAYS` and records, per user, the highest number it removed
(`User.task_changes_pruned`): a cursor below it may have missed a deletion (410).

Helpers here never commit: the caller's transaction holds the change and its number.
"""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel, col

from taskapi.models import Task, TaskTombstone, User


def table_of(model: type[SQLModel]) -> sa.Table:
    return cast(sa.Table, sa.inspect(model).local_table)


TASKS = table_of(Task)
TOMBSTONES = table_of(TaskTombstone)

_RESERVE = (
    sa.update(User)
    .where(col(User.id) == sa.bindparam("user_id"))
    .values(task_change_seq=col(User.task_change_seq) + sa.bindparam("count", type_=sa.BigInteger))
    .returning(col(User.task_change_seq))
)


def reserve_changes(connection: Connection, *, user_id: uuid.UUID, count: int = 1) -> range | None:
    """The user's next `count` change numbers, in one statement; the user row stays
    locked until the transaction ends (PostgreSQL: the UPDATE's row lock, `FOR NO KEY
    UPDATE`, which a session's foreign key does not wait for; SQLite: the database's
    write lock). Numbers reserved and not used leave gaps, which the feed ignores.
    None: the user is gone (deleted while the request ran)."""
    last = connection.execute(_RESERVE, {"user_id": user_id, "count": count}).scalar()
    return None if last is None else range(int(last) - count + 1, int(last) + 1)


def remove_for_good(
    connection: Connection, condition: sa.ColumnElement[bool], *, now: datetime
) -> list[int]:
    """Delete the trashed tasks that match `condition` and leave their tombstones; the ids
    removed. DELETE ... RETURNING: a task restored meanwhile is not deleted, and gets no
    tombstone, and of two removals of one task, only the one that deletes it buries it."""
    removed = connection.execute(
        sa.delete(TASKS)
        .where(condition, TASKS.c.deleted_at.is_not(None))
        .returning(TASKS.c.id, TASKS.c.user_id, TASKS.c.change_seq)
    ).all()
    bury(connection, removed, now=now)
    return [row.id for row in removed]


def bury(connection: Connection, removed: Sequence[Any], *, now: datetime) -> None:
    """Tombstones for tasks deleted for good (rows of `id`, `user_id`, `change_seq`), at the
    number of their last change: they were in the trash, which the feed already reported,
    so their place in the order stays where it was."""
    if removed:
        connection.execute(
            sa.insert(TOMBSTONES),
            [
                {
                    "user_id": row.user_id,
                    "change_seq": row.change_seq,
                    "task_id": row.id,
                    "removed_at": now,
                }
                for row in removed
            ],
        )


def record_pruned(connection: Connection, pruned: Sequence[Any]) -> None:
    """After tombstones (rows of `user_id`, `change_seq`) were deleted: raise each user's
    `task_changes_pruned` to the highest number removed."""
    highest: dict[uuid.UUID, int] = {}
    for row in pruned:
        highest[row.user_id] = max(highest.get(row.user_id, 0), row.change_seq)
    pruned_column = col(User.task_changes_pruned)
    floor = sa.bindparam("floor", type_=sa.BigInteger)
    statement = (
        sa.update(table_of(User))
        .where(col(User.id) == sa.bindparam("uid"))
        .values(task_changes_pruned=sa.case((pruned_column < floor, floor), else_=pruned_column))
    )
    for user_id, number in sorted(highest.items()):
        connection.execute(statement, {"uid": user_id, "floor": number})
