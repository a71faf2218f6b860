"""`/api/tasks`: the caller's tasks, with ETags for optimistic concurrency."""

import hashlib
import re
import uuid
from types import GenericAlias
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, HTTPException, Path, Query, Response
from fastapi import status as http
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, TypeAdapter
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError
from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError
from starlette.convertors import StringConvertor, register_url_convertor
from typing_extensions import TypedDict

import tasks_queries
from taskapi.auth import AccessClaims, CurrentUser
from taskapi.db import ReadConnection, SessionDep
from taskapi.factory import function_router
from taskapi.models import (
    IDEMPOTENCY_KEY_MAX_LENGTH,
    SEARCH_MAX_LENGTH,
    Detail,
    IdempotencyKey,
    Task,
    TaskCreate,
    TaskPage,
    TaskPriority,
    TaskPublic,
    TaskStatus,
    TaskUpdate,
    Timestamp,
    TrashedTask,
    TrashPage,
    utcnow,
)
from taskapi.openapi import error_responses
from taskapi.settings import get_settings
from tasks_queries import (
    DEFAULT_SORT,
    MAX_INT32,
    QuotaExceededError,
    TaskFilter,
    TaskSort,
    add_task_within_quota,
    etag_of,
    find_idempotency_record,
    first_completion,
    list_trash_page,
    lock_user_tasks,
    soft_delete_task,
)

router = function_router(tags=["tasks"])


# What each error status of the task routes means (their OpenAPI descriptions).
UNAUTHORIZED = {401: "Missing, invalid, expired or revoked access token"}
BY_ID = UNAUTHORIZED | {
    403: "The task belongs to another user",
    404: "No such task, or it was deleted",
}
PRECONDITION = {412: "If-Match does not match the task's current ETag"}
ETAG_HEADER = {"ETag": {"description": "The task's version", "schema": {"type": "string"}}}


# ---------------------------------------------------------------------------------------
# ETags


def etag(task: Task) -> str:
    return etag_of(task.id, task.version)


# Optional, so omitted rather than null: the None stays out of the document.
IfMatch = Annotated[
    str | SkipJsonSchema[None],
    Header(description="Write only if the task still has one of these ETags (`*`: any version)"),
]


def precondition_failed() -> HTTPException:
    return HTTPException(
        status_code=http.HTTP_412_PRECONDITION_FAILED,
        detail="The task has changed: If-Match does not match its current ETag",
    )


def expected_version(task: Task, if_match: str | None) -> int | None:
    """The version a write must find (None: any), or 412 if If-Match names another one."""
    if if_match is None or if_match.strip() == "*":
        return None
    # Strong comparison (RFC 9110): a weak tag `W/"..."` never matches.
    if etag(task) in (tag.strip() for tag in if_match.split(",")):
        return task.version
    raise precondition_failed()


# ---------------------------------------------------------------------------------------
# The ownership dependency: every route that takes an id gets its task through it.

TaskId = Annotated[
    int, Path(ge=1, le=MAX_INT32, description="The task's id (a positive 32-bit integer)")
]


class NotTrash(StringConvertor):
    """The path segment of a task id (`{task_id:not_trash}`): any segment but a whole
    `trash`, which names the trash, a resource of its own that serves GET alone. So
    `PUT /api/tasks/trash` is 405 with `Allow: GET`, not a request for task "trash"; other
    ids that are no integer still reach the route, and its 422."""

    regex = "(?!trash$)[^/]+"


register_url_convertor("not_trash", NotTrash())


# An ORM task (the routes that write) or a Core row of its columns (the read by id).
_AnyTask = TypeVar("_AnyTask", Task, Row[Any])


def owned_task(task: _AnyTask | None, user_id: uuid.UUID, *, in_trash: bool) -> _AnyTask:
    """The task if it exists, is (or is not) in the trash, and is the user's: else 404/403."""
    if task is None or (task.deleted_at is not None) != in_trash:
        detail = "Task not found in the trash" if in_trash else "Task not found"
        raise HTTPException(status_code=http.HTTP_404_NOT_FOUND, detail=detail)
    if task.user_id != user_id:
        raise HTTPException(
            status_code=http.HTTP_403_FORBIDDEN, detail="This task belongs to another user"
        )
    return task


async def get_owned_task(task_id: TaskId, user: CurrentUser, session: SessionDep) -> Task:
    return owned_task(session.get(Task, task_id), user.id, in_trash=False)


async def get_trashed_task(task_id: TaskId, user: CurrentUser, session: SessionDep) -> Task:
    return owned_task(session.get(Task, task_id), user.id, in_trash=True)


OwnedTask = Annotated[Task, Depends(get_owned_task)]
TrashedTaskDep = Annotated[Task, Depends(get_trashed_task)]


# ---------------------------------------------------------------------------------------
# Responses
#
# Routes serialise their own JSON: FastAPI would validate the returned object against the
# response model a second time before dumping it. `response_model` still documents the body.


def json_response(
    body: BaseModel | bytes, *, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        body if isinstance(body, bytes) else body.model_dump_json(),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


def _fields_of(model: type[BaseModel], *, items: type[BaseModel] | None = None) -> Any:
    """`model`'s fields as a TypedDict (and a page's `items` as a list of the item's):
    pydantic writes a dict of that type as `model_dump_json` writes the model."""
    fields: dict[str, Any] = {name: field.annotation for name, field in model.model_fields.items()}
    if items is not None:
        fields["items"] = GenericAlias(list, (_fields_of(items),))
    return TypedDict(f"{model.__name__}Fields", fields)  # type: ignore[operator]


# The reads' JSON, written from the rows' values, which already have the models' types
# (the columns' own): validating them into models first cost more than the writing.
# tests/test_tasks_queries.py checks the bytes against the models'.
TASK_JSON = TypeAdapter(_fields_of(TaskPublic))
PAGE_JSON = TypeAdapter(_fields_of(TaskPage, items=TaskPublic))
TRASH_JSON = TypeAdapter(_fields_of(TrashPage, items=TrashedTask))


def task_response(task: Task, *, status_code: int = 200, **headers: str) -> Response:
    return json_response(
        TaskPublic.model_validate(task),
        status_code=status_code,
        headers={"ETag": etag(task), **headers},
    )


def _written(task: Task | None, if_match: str | None) -> Task:
    """The row an UPDATE returned; none means it changed or vanished since it was read."""
    if task is not None:
        return task
    if if_match is not None:
        raise precondition_failed()
    raise HTTPException(status_code=http.HTTP_404_NOT_FOUND, detail="Task not found")


# ---------------------------------------------------------------------------------------
# Routes

Skip = Annotated[int, Query(ge=0, le=MAX_INT32, description="Tasks to skip")]
Limit = Annotated[int, Query(ge=1, le=100, description="Page size")]


# The GETs take `AccessClaims` rather than `CurrentUser`: their own statement checks the
# caller's session (`taskapi.auth.LIVE_SESSION`), a query less per request.
@router.get(
    "/api/tasks",
    response_model=TaskPage,
    responses=error_responses(Detail, UNAUTHORIZED),
    summary="List the caller's tasks",
)
async def list_tasks(
    claims: AccessClaims,
    connection: ReadConnection,
    skip: Skip = 0,
    limit: Limit = 20,
    status: Annotated[
        list[TaskStatus] | None,
        Query(description="Only these statuses (repeat the parameter: any of them)"),
    ] = None,
    priority: Annotated[
        list[TaskPriority] | None,
        Query(description="Only these priorities (repeat the parameter: any of them)"),
    ] = None,
    q: Annotated[
        str | None,
        Query(
            max_length=SEARCH_MAX_LENGTH,
            pattern=r"^[^\x00]*$",
            description="Case-insensitive text in the title or description",
        ),
    ] = None,
    due_before: Annotated[
        Timestamp | None, Query(description="Only tasks due before this time (with an offset)")
    ] = None,
    due_after: Annotated[
        Timestamp | None,
        Query(description="Only tasks due at or after this time (with an offset)"),
    ] = None,
    overdue: Annotated[
        bool | None,
        Query(description="true: only tasks due in the past and not completed; false: all others"),
    ] = None,
    sort: Annotated[
        TaskSort,
        Query(
            description=(
                "Sort field, `-` for descending; ties are broken by id; "
                "tasks without a due date come last in either `due_at` order"
            )
        ),
    ] = DEFAULT_SORT,
) -> Response:
    """One page of the caller's tasks that are not deleted, filtered and sorted."""
    where = TaskFilter(
        statuses=tuple(status or ()),
        priorities=tuple(priority or ()),
        q=q,
        due_before=due_before,
        due_after=due_after,
        overdue=overdue,
    )
    page = tasks_queries.list_tasks(
        connection, claims=claims, where=where, sort=sort, skip=skip, limit=limit, now=utcnow()
    )
    return json_response(PAGE_JSON.dump_json(page))


IDEMPOTENCY_KEY_PATTERN = rf"^[\x20-\x7e]{{1,{IDEMPOTENCY_KEY_MAX_LENGTH}}}$"


def _usable_idempotency_key(key: str | None) -> str | None:
    # One readable message for every way a key can be unusable, where pydantic's own
    # (for an empty header "Value should have at least 1 item") tells a client nothing.
    if key is not None and not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key):
        raise PydanticCustomError(
            "idempotency_key",
            "Idempotency-Key must be 1 to {max_length} printable ASCII characters (a UUID"
            " will do); leave the header out to create without one",
            {"max_length": IDEMPOTENCY_KEY_MAX_LENGTH},
        )
    return key


IdempotencyKeyHeader = Annotated[
    str | SkipJsonSchema[None],
    AfterValidator(_usable_idempotency_key),
    Header(
        alias="Idempotency-Key",
        # For the document: the validator above checks the same rule.
        json_schema_extra={
            "minLength": 1,
            "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH,
            "pattern": r"^[\x20-\x7e]+$",
        },
        description=(
            "Makes the create safe to retry: the same key (1 to 255 printable ASCII "
            "characters) within 24 hours gets the first answer again, with "
            "`Idempotent-Replayed: true`, and creates no second task"
        ),
    ),
]
CONFLICT = {
    409: "The caller holds the most tasks allowed, or a request with the same "
    "Idempotency-Key is still in progress"
}
CREATED_HEADERS = {
    **ETAG_HEADER,
    "Location": {"description": "The new task", "schema": {"type": "string"}},
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored answer to an earlier request with "
        "the same Idempotency-Key",
        "schema": {"type": "string", "enum": ["true"]},
    },
}


def fingerprint(body: TaskCreate) -> str:
    """The same task asked for twice hashes alike, however its JSON was spelled."""
    return hashlib.sha256(body.model_dump_json().encode()).hexdigest()


def replay(record: IdempotencyKey, body_fingerprint: str) -> Response:
    if record.fingerprint != body_fingerprint:
        # A 422 shaped as FastAPI's own: the header is valid, but not with this body.
        raise RequestValidationError(
            [
                {
                    "type": "idempotency_key_reused",
                    "loc": ("header", "Idempotency-Key"),
                    "msg": "This Idempotency-Key was used with a different body; "
                    "send a new key for a new task",
                }
            ]
        )
    return Response(
        record.body,
        status_code=record.status_code,
        headers={"ETag": record.etag, "Location": record.location, "Idempotent-Replayed": "true"},
        media_type="application/json",
    )


def quota_exceeded(max_tasks: int) -> HTTPException:
    return HTTPException(
        status_code=http.HTTP_409_CONFLICT,
        detail=(
            f"You hold {max_tasks} tasks, the most allowed; tasks in the trash count too "
            f"until they are removed for good. Delete tasks you no longer need."
        ),
    )


@router.post(
    "/api/tasks",
    response_model=TaskPublic,
    status_code=http.HTTP_201_CREATED,
    responses={
        201: {"headers": CREATED_HEADERS},
        **error_responses(Detail, UNAUTHORIZED | CONFLICT),
    },
    summary="Create a task",
)
async def create_task(
    body: TaskCreate,
    user: CurrentUser,
    session: SessionDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """A new task of the caller's; its URL is in `Location`, its version in `ETag`.

    With an `Idempotency-Key`, a retry within 24 hours gets the first answer again
    (`Idempotent-Replayed: true`) instead of a second task.
    """
    now = utcnow()
    lock_user_tasks(session, user_id=user.id)
    body_fingerprint = fingerprint(body) if idempotency_key is not None else ""
    if idempotency_key is not None:
        found = find_idempotency_record(session, user_id=user.id, key=idempotency_key, now=now)
        if found is not None:
            return replay(found, body_fingerprint)
    task = Task.model_validate(
        body,
        update={
            "user_id": user.id,
            "created_at": now,
            "updated_at": now,
            "completed_at": now if body.status is TaskStatus.COMPLETED else None,
        },
    )
    max_tasks = get_settings().max_tasks_per_user
    try:
        add_task_within_quota(session, task=task, max_tasks=max_tasks)
    except QuotaExceededError:
        raise quota_exceeded(max_tasks) from None
    location = f"/api/tasks/{task.id}"
    response = task_response(task, status_code=http.HTTP_201_CREATED, Location=location)
    if idempotency_key is None:
        return response
    session.add(
        IdempotencyKey(
            user_id=user.id,
            key=idempotency_key,
            fingerprint=body_fingerprint,
            status_code=response.status_code,
            body=bytes(response.body).decode(),
            location=location,
            etag=etag(task),
            created_at=now,
        )
    )
    try:
        session.flush()
    except IntegrityError:
        # A simultaneous request with the same key wrote it first (SQLite; on PostgreSQL
        # the user's lock makes this one wait and find that answer above). Its answer is
        # stored once it commits: a retry gets it.
        raise HTTPException(
            status_code=http.HTTP_409_CONFLICT,
            detail="A request with this Idempotency-Key is still in progress; retry it",
        ) from None
    return response


@router.get(
    "/api/tasks/trash",
    response_model=TrashPage,
    responses={
        200: {
            # For clients and stateful API testing: a listed id is what restore takes.
            "links": {
                "RestoreNewestDeletion": {
                    "operationId": "restoreTask",
                    "parameters": {"task_id": "$response.body#/items/0/id"},
                    "description": "Restore the task deleted last (the first listed)",
                }
            }
        },
        **error_responses(Detail, UNAUTHORIZED),
    },
    summary="List the caller's deleted tasks, newest deletion first",
)
async def list_trash(
    claims: AccessClaims, connection: ReadConnection, skip: Skip = 0, limit: Limit = 20
) -> Response:
    """The caller's deleted tasks, each with its `deleted_at`; they are removed for good
    `TRASH_RETENTION_DAYS` after deletion."""
    page = list_trash_page(connection, claims=claims, skip=skip, limit=limit, now=utcnow())
    return json_response(TRASH_JSON.dump_json(page))


@router.post(
    "/api/tasks/{task_id:not_trash}/restore",
    response_model=TaskPublic,
    responses={
        200: {"headers": ETAG_HEADER},
        **error_responses(
            Detail,
            UNAUTHORIZED
            | {
                403: "The task belongs to another user",
                404: "No such task, or it is not in the trash",
            }
            | PRECONDITION,
        ),
    },
    summary="Take a deleted task out of the trash",
)
async def restore_task(
    task: TrashedTaskDep, session: SessionDep, if_match: IfMatch = None
) -> Response:
    """Put a deleted task back in the list, as a new version with a new `ETag`."""
    version = expected_version(task, if_match)
    now = utcnow()
    restored = tasks_queries.write_new_version(
        session,
        task=task,
        expected_version=version,
        values={"deleted_at": None, "updated_at": now},
        in_trash=True,
    )
    if restored is None and if_match is None:
        # Restored (or purged) by someone else since it was read.
        raise HTTPException(
            status_code=http.HTTP_404_NOT_FOUND, detail="Task not found in the trash"
        )
    return task_response(_written(restored, if_match))


@router.get(
    "/api/tasks/{task_id:not_trash}",
    response_model=TaskPublic,
    responses={200: {"headers": ETAG_HEADER}, **error_responses(Detail, BY_ID)},
    summary="Read a task",
)
async def get_task(task_id: TaskId, claims: AccessClaims, connection: ReadConnection) -> Response:
    """One of the caller's tasks, with its version in `ETag`."""
    found = tasks_queries.read_task(connection, task_id=task_id, claims=claims, now=utcnow())
    task = owned_task(found, claims.user_id, in_trash=False)
    return json_response(
        TASK_JSON.dump_json(task._asdict()), headers={"ETag": etag_of(task.id, task.version)}
    )


@router.put(
    "/api/tasks/{task_id:not_trash}",
    response_model=TaskPublic,
    responses={200: {"headers": ETAG_HEADER}, **error_responses(Detail, BY_ID | PRECONDITION)},
    summary="Change some fields of a task",
)
async def update_task(
    task: OwnedTask, body: TaskUpdate, session: SessionDep, if_match: IfMatch = None
) -> Response:
    """Change the fields sent and keep the others; with `If-Match`, only if unchanged since."""
    version = expected_version(task, if_match)
    changes = {
        field: value
        for field, value in body.model_dump(exclude_unset=True).items()
        if getattr(task, field) != value
    }
    if not changes:
        # Nothing to change: no write, so updated_at and the ETag stay as they are.
        return task_response(task)
    now = utcnow()
    values: dict[str, Any] = {**changes, "updated_at": now}
    if "status" in changes:
        values["completed_at"] = (
            first_completion(now) if changes["status"] is TaskStatus.COMPLETED else None
        )
    written = tasks_queries.write_new_version(
        session, task=task, expected_version=version, values=values
    )
    return task_response(_written(written, if_match))


@router.delete(
    "/api/tasks/{task_id:not_trash}",
    status_code=http.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(Detail, BY_ID | PRECONDITION),
    summary="Delete a task (it stays in the database, marked deleted)",
)
async def delete_task(task: OwnedTask, session: SessionDep, if_match: IfMatch = None) -> Response:
    """Move a task out of every list and read; the row stays, marked deleted."""
    version = expected_version(task, if_match)
    deleted = soft_delete_task(session, task=task, expected_version=version, now=utcnow())
    if not deleted:
        _written(None, if_match)
    return Response(status_code=http.HTTP_204_NO_CONTENT)


@router.patch(
    "/api/tasks/{task_id:not_trash}/complete",
    response_model=TaskPublic,
    responses={200: {"headers": ETAG_HEADER}, **error_responses(Detail, BY_ID | PRECONDITION)},
    summary="Mark a task completed (idempotent)",
)
async def complete_task(task: OwnedTask, session: SessionDep, if_match: IfMatch = None) -> Response:
    """Set the status to `Completed`; completing again keeps the first `completed_at`."""
    version = expected_version(task, if_match)
    if task.status is TaskStatus.COMPLETED:
        return task_response(task)
    now = utcnow()
    written = tasks_queries.write_new_version(
        session,
        task=task,
        expected_version=version,
        values={
            "status": TaskStatus.COMPLETED,
            "completed_at": first_completion(now),
            "updated_at": now,
        },
    )
    return task_response(_written(written, if_match))
