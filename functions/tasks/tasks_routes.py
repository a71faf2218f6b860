"""`/api/tasks`: the caller's tasks, with ETags for optimistic concurrency."""

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import Depends, Header, HTTPException, Path, Query, Response
from fastapi import status as http
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, ValidationError
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError
from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session
from starlette.convertors import StringConvertor, register_url_convertor

import tasks_queries
from taskapi.auth import AccessClaims, CurrentUser, unauthorized
from taskapi.changes import reserve_changes
from taskapi.db import ReadConnection, SessionDep
from taskapi.factory import (
    DEFAULT_MAX_BODY_BYTES,
    function_router,
    max_body_bytes,
    without_input,
)
from taskapi.models import (
    BATCH_MAX_OPERATIONS,
    IDEMPOTENCY_KEY_MAX_LENGTH,
    SEARCH_MAX_LENGTH,
    BatchOp,
    BatchOperation,
    BatchRequest,
    BatchResponse,
    Detail,
    IdempotencyKey,
    Task,
    TaskChanges,
    TaskCreate,
    TaskPage,
    TaskPriority,
    TaskPublic,
    TaskStatus,
    TaskUpdate,
    Timestamp,
    TrashPage,
    changes_json,
    page_json,
    task_json,
    trash_json,
    utcnow,
)
from taskapi.openapi import error_responses
from taskapi.settings import get_settings
from tasks_queries import (
    DEFAULT_SORT,
    MAX_INT32,
    ExpiredCursorError,
    TaskFilter,
    TaskSort,
    UnknownCursorError,
    empty_trash,
    etag_of,
    find_idempotency_record,
    first_completion,
    insert_tasks,
    list_trash_page,
    lock_user_tasks,
    read_changes,
    soft_delete_task,
    tasks_held,
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
PAGE_ETAG_HEADER = {
    "ETag": {"description": "The page's version (query and content)", "schema": {"type": "string"}}
}


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


IfNoneMatch = Annotated[
    str | SkipJsonSchema[None],
    Header(description="Answer 304, with no body, if the current ETag is one of these"),
]


_Route = TypeVar("_Route", bound=Callable[..., Any])


def conditional_get(
    path: str,
    model: type[BaseModel],
    etag_header: dict[str, Any],
    errors: dict[int, str],
    summary: str,
) -> Callable[[_Route], _Route]:
    """A GET route that honours If-None-Match, documented as such: 200 with its `ETag`,
    304, and `errors` (status: meaning)."""
    return router.get(
        path,
        response_model=model,
        responses={
            200: {"headers": etag_header},
            304: {"description": "Unchanged since the ETag in If-None-Match"},
            **error_responses(Detail, errors),
        },
        summary=summary,
    )


def _opaque(tag: str) -> str:
    return tag.strip().removeprefix("W/")


def not_modified(if_none_match: str | None, current: str) -> Response | None:
    """304 with the ETag and no body when If-None-Match names the current ETag (`*`: any);
    compared weakly, as RFC 9110 has it for If-None-Match."""
    if if_none_match is None:
        return None
    tags = {_opaque(tag) for tag in if_none_match.split(",")}
    if "*" in tags or _opaque(current) in tags:
        return Response(status_code=http.HTTP_304_NOT_MODIFIED, headers={"ETag": current})
    return None


# ---------------------------------------------------------------------------------------
# The ownership dependency: every route that takes an id gets its task through it.

TaskId = Annotated[
    int, Path(ge=1, le=MAX_INT32, description="The task's id (a positive 32-bit integer)")
]


class TaskIdSegment(StringConvertor):
    """The path segment of a task id (`{task_id:id_segment}`): any segment but the names
    of the collection's own resources (`trash`, `changes`, `batch`), each with its own
    methods. So `PUT /api/tasks/trash` is 405 with `Allow: DELETE, GET`, not a request for
    task "trash"; other ids that are no integer still reach the route, and its 422."""

    regex = "(?!(?:trash|changes|batch)$)[^/]+"


register_url_convertor("id_segment", TaskIdSegment())


class _Ownable(Protocol):
    """What the ownership check reads of a task: an ORM `Task` (the routes that write) or
    a row of its columns (the read by id)."""

    @property
    def user_id(self) -> uuid.UUID: ...
    @property
    def deleted_at(self) -> datetime | None: ...


_Found = TypeVar("_Found", bound=_Ownable)


def owned_task(task: _Found | None, user_id: uuid.UUID, *, in_trash: bool) -> _Found:
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
    body: bytes, *, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        body,
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


def task_response(task: Task, *, status_code: int = 200, **headers: str) -> Response:
    return json_response(
        task_json(task), status_code=status_code, headers={"ETag": etag(task), **headers}
    )


def _written(task: Task | None, if_match: str | None) -> Task:
    """The row an UPDATE returned; none means it changed or vanished since it was read."""
    if task is not None:
        return task
    if if_match is not None:
        raise precondition_failed()
    raise HTTPException(status_code=http.HTTP_404_NOT_FOUND, detail="Task not found")


class Writes:
    """One request's writes of the user's tasks: their change numbers, reserved from the
    user's counter (`taskapi.changes`) at the first write, `planned` at once (a batch
    reserves one per operation: one statement, not one per write), which also holds the
    user's lock until the transaction ends; and the quota, counted once under that lock
    and then kept up to date as this request creates."""

    def __init__(self, session: Session, user_id: uuid.UUID, *, planned: int = 1) -> None:
        self.session, self.user_id, self.planned = session, user_id, planned
        self.numbers: Iterator[int] = iter(())
        self.held: int | None = None

    def change(self) -> int:
        number = next(self.numbers, None)
        if number is None:
            reserved = reserve_changes(
                self.session.connection(), user_id=self.user_id, count=self.planned
            )
            if reserved is None:
                # Deleted while this request ran: as a moment later, its sessions are gone.
                unauthorized("Session expired or revoked")
            self.numbers = iter(reserved)
            number = next(self.numbers)
        return number

    def take_room(self, max_tasks: int) -> None:
        """Count one more task against the quota, or 409; call after `change()`."""
        if self.held is None:
            self.held = tasks_held(self.session, user_id=self.user_id)
        if self.held >= max_tasks:
            raise quota_exceeded(max_tasks)
        self.held += 1


# ---------------------------------------------------------------------------------------
# Routes

Skip = Annotated[int, Query(ge=0, le=MAX_INT32, description="Tasks to skip")]
Limit = Annotated[int, Query(ge=1, le=100, description="Page size")]


# The GETs take `AccessClaims` rather than `CurrentUser`: their own statement checks the
# caller's session (`taskapi.auth.LIVE_SESSION`), a query less per request.
@conditional_get("/api/tasks", TaskPage, PAGE_ETAG_HEADER, UNAUTHORIZED, "List the caller's tasks")
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
    if_none_match: IfNoneMatch = None,
) -> Response:
    """One page of the caller's tasks that are not deleted, filtered and sorted; with
    `If-None-Match` holding the page's `ETag`, 304 while the page is unchanged."""
    where = TaskFilter(
        statuses=tuple(status or ()),
        priorities=tuple(priority or ()),
        q=q,
        due_before=due_before,
        due_after=due_after,
        overdue=overdue,
    )
    items, total = tasks_queries.list_tasks(
        connection, claims=claims, where=where, sort=sort, skip=skip, limit=limit, now=utcnow()
    )
    body = page_json(items, total=total, skip=skip, limit=limit)
    # The page's own bytes (each task's `updated_at` changes with every write, and the
    # total with every create or delete) and the query that chose them: nothing is read
    # beyond the answer itself. The user is in the key too: two users' empty pages differ.
    query = repr((claims.user_id, where, sort, skip, limit)).encode()
    digest = hashlib.sha256(query + b"\0" + body).hexdigest()
    tag = f'"{digest[:32]}"'
    return not_modified(if_none_match, tag) or json_response(body, headers={"ETag": tag})


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
# The errors of the routes that create (and take an Idempotency-Key).
CREATE_ERRORS = error_responses(Detail, UNAUTHORIZED | CONFLICT)
# A route that answers 204 with no body.
NO_CONTENT: dict[str, Any] = {"status_code": http.HTTP_204_NO_CONTENT, "response_class": Response}
CREATED_HEADERS = {
    **ETAG_HEADER,
    "Location": {"description": "The new task", "schema": {"type": "string"}},
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored answer to an earlier request with "
        "the same Idempotency-Key",
        "schema": {"type": "string", "enum": ["true"]},
    },
}


def fingerprint(body: BaseModel) -> str:
    """The same request asked for twice hashes alike, however its JSON was spelled."""
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
                    "send a new key for a new request",
                }
            ]
        )
    # The headers the first answer had (a batch's has neither).
    headers = {"ETag": record.etag, "Location": record.location}
    return Response(
        record.body,
        status_code=record.status_code,
        headers={name: value for name, value in headers.items() if value}
        | {"Idempotent-Replayed": "true"},
        media_type="application/json",
    )


def quota_exceeded(max_tasks: int) -> HTTPException:
    return HTTPException(
        status_code=http.HTTP_409_CONFLICT,
        detail=(
            f"You hold {max_tasks} tasks, the most allowed; tasks in the trash count too. "
            "To free room, empty the trash (DELETE /api/tasks/trash), remove single tasks "
            "from it (DELETE /api/tasks/trash/{id}), or delete tasks and then empty it."
        ),
    )


def new_task(writes: Writes, body: TaskCreate, now: datetime) -> dict[str, Any]:
    """The row of a task to create, numbered and counted against the quota (else 409)."""
    completed = body.status is TaskStatus.COMPLETED
    values = {
        **body.model_dump(),
        "user_id": writes.user_id,
        "created_at": now,
        "updated_at": now,
        "completed_at": now if completed else None,
        # A completed task reminds no one.
        "remind_at": None if completed else body.remind_at,
        "version": 1,
        "change_seq": writes.change(),
    }
    writes.take_room(get_settings().max_tasks_per_user)
    return values


def created(row: Row[Any]) -> Response:
    """What POST /api/tasks answers for a task it inserted: 201, the task, its URL and ETag."""
    return json_response(
        task_json(row),
        status_code=http.HTTP_201_CREATED,
        headers={"ETag": etag_of(row.id, row.version), "Location": f"/api/tasks/{row.id}"},
    )


def create_one(session: Session, *, writes: Writes, body: TaskCreate, now: datetime) -> Response:
    """What POST /api/tasks answers (without an Idempotency-Key)."""
    (row,) = insert_tasks(session, rows=[new_task(writes, body, now)])
    return created(row)


@dataclass(frozen=True)
class IdempotentCreate:
    """A request that creates and may carry an `Idempotency-Key` (a create, a batch): the
    caller, the request's transaction, the key and the time it runs at."""

    session: Session
    user_id: uuid.UUID
    key: str | None
    now: datetime

    def answer(self, body: BaseModel, answer: Callable[[], Response]) -> Response:
        """`answer()`; with an Idempotency-Key, stored with it in the request's
        transaction, or the stored answer of an earlier request with that key (24 hours)."""
        session, user_id, key, now = self.session, self.user_id, self.key, self.now
        if key is None:
            return answer()
        lock_user_tasks(session, user_id=user_id)
        body_fingerprint = fingerprint(body)
        found = find_idempotency_record(session, user_id=user_id, key=key, now=now)
        if found is not None:
            return replay(found, body_fingerprint)
        response = answer()
        session.add(
            IdempotencyKey(
                user_id=user_id,
                key=key,
                fingerprint=body_fingerprint,
                status_code=response.status_code,
                body=bytes(response.body).decode(),
                location=response.headers.get("location", ""),
                etag=response.headers.get("etag", ""),
                created_at=now,
            )
        )
        try:
            session.flush()
        except IntegrityError:
            # A simultaneous request with the same key wrote it first (SQLite; on
            # PostgreSQL the user's lock makes this one wait and find that answer above).
            # Its answer is stored once it commits: a retry gets it.
            raise HTTPException(
                status_code=http.HTTP_409_CONFLICT,
                detail="A request with this Idempotency-Key is still in progress; retry it",
            ) from None
        return response


async def idempotent_create(
    user: CurrentUser, session: SessionDep, idempotency_key: IdempotencyKeyHeader = None
) -> IdempotentCreate:
    return IdempotentCreate(session=session, user_id=user.id, key=idempotency_key, now=utcnow())


IdempotentCreateDep = Annotated[IdempotentCreate, Depends(idempotent_create)]


@router.post(
    "/api/tasks",
    response_model=TaskPublic,
    status_code=http.HTTP_201_CREATED,
    responses={201: {"headers": CREATED_HEADERS}, **CREATE_ERRORS},
    summary="Create a task",
)
async def create_task(body: TaskCreate, idempotent: IdempotentCreateDep) -> Response:
    """A new task of the caller's; its URL is in `Location`, its version in `ETag`.

    With an `Idempotency-Key`, a retry within 24 hours gets the first answer again
    (`Idempotent-Replayed: true`) instead of a second task.
    """
    session, now = idempotent.session, idempotent.now
    writes = Writes(session, idempotent.user_id)
    return idempotent.answer(body, lambda: create_one(session, writes=writes, body=body, now=now))


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
    items, total = list_trash_page(connection, claims=claims, skip=skip, limit=limit, now=utcnow())
    return json_response(trash_json(items, total=total, skip=skip, limit=limit))


@router.delete(
    "/api/tasks/trash",
    **NO_CONTENT,
    responses=error_responses(Detail, UNAUTHORIZED),
    summary="Empty the trash: remove every deleted task of the caller's for good",
)
async def empty_the_trash(user: CurrentUser, session: SessionDep) -> Response:
    """Every task in the caller's trash is removed for good (and stops counting against
    the quota); the changes feed reports them deleted."""
    empty_trash(session, user_id=user.id, task_id=None, now=utcnow())
    return Response(status_code=http.HTTP_204_NO_CONTENT)


@router.delete(
    "/api/tasks/trash/{task_id}",
    **NO_CONTENT,
    responses=error_responses(
        Detail,
        UNAUTHORIZED
        | {
            403: "The task belongs to another user",
            404: "No such task, or it is not in the trash",
        },
    ),
    summary="Remove one deleted task for good",
)
async def remove_from_trash(task: TrashedTaskDep, session: SessionDep) -> Response:
    """The task, which must be in the caller's trash, is removed for good."""
    if not empty_trash(session, user_id=task.user_id, task_id=task.id, now=utcnow()):
        # Restored, or removed, by someone else since it was read.
        raise HTTPException(
            status_code=http.HTTP_404_NOT_FOUND, detail="Task not found in the trash"
        )
    return Response(status_code=http.HTTP_204_NO_CONTENT)


Cursor = Annotated[
    str | SkipJsonSchema[None],
    Query(
        max_length=200,
        description="The `cursor` of the previous page; none: from the beginning",
    ),
]


@router.get(
    "/api/tasks/changes",
    response_model=TaskChanges,
    responses={
        410: {
            "model": Detail,
            "description": "The cursor is older than the kept history: start again without one",
        },
        **error_responses(Detail, UNAUTHORIZED),
    },
    summary="What changed in the caller's tasks since a cursor (offline sync)",
)
async def list_changes(
    claims: AccessClaims,
    connection: ReadConnection,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Changes per page")] = 100,
) -> Response:
    """Tasks created or changed since `cursor`, as they are now, and the ids of those
    deleted, trashed or purged, in the order the changes committed. Follow `cursor` until
    `has_more` is false and apply each page in turn: the result is the server's list."""
    try:
        page = read_changes(connection, claims=claims, cursor=cursor, limit=limit, now=utcnow())
    except UnknownCursorError:
        raise RequestValidationError(
            [
                {
                    "type": "cursor_unknown",
                    "loc": ("query", "cursor"),
                    "msg": "This cursor was not handed out by this feed for this user; "
                    "start again without one",
                }
            ]
        ) from None
    except ExpiredCursorError:
        raise HTTPException(
            status_code=http.HTTP_410_GONE,
            detail="This cursor is older than the kept history of changes "
            "(CHANGES_RETENTION_DAYS): start again without a cursor",
        ) from None
    return json_response(changes_json(page))


@router.post(
    "/api/tasks/{task_id:id_segment}/restore",
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
        change_seq=Writes(session, task.user_id).change(),
        in_trash=True,
    )
    if restored is None and if_match is None:
        # Restored (or purged) by someone else since it was read.
        raise HTTPException(
            status_code=http.HTTP_404_NOT_FOUND, detail="Task not found in the trash"
        )
    return task_response(_written(restored, if_match))


@conditional_get("/api/tasks/{task_id:id_segment}", TaskPublic, ETAG_HEADER, BY_ID, "Read a task")
async def get_task(
    task_id: TaskId,
    claims: AccessClaims,
    connection: ReadConnection,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """One of the caller's tasks, with its version in `ETag`; with `If-None-Match` holding
    it, 304 while the task is unchanged."""
    found = tasks_queries.read_task(connection, task_id=task_id, claims=claims, now=utcnow())
    task = owned_task(found, claims.user_id, in_trash=False)
    tag = etag_of(task.id, task.version)
    return not_modified(if_none_match, tag) or json_response(task_json(task), headers={"ETag": tag})


def update_one(
    session: Session, *, writes: Writes, task: Task, body: TaskUpdate, if_match: str | None
) -> Response:
    """What PUT /api/tasks/{id} answers, once the task and the body passed their checks."""
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
        completed = changes["status"] is TaskStatus.COMPLETED
        values["completed_at"] = first_completion(now) if completed else None
        if completed:
            values["remind_at"] = None  # a completed task reminds no one
    written = tasks_queries.write_new_version(
        session, task=task, expected_version=version, values=values, change_seq=writes.change()
    )
    return task_response(_written(written, if_match))


def delete_one(session: Session, *, writes: Writes, task: Task, if_match: str | None) -> Response:
    """What DELETE /api/tasks/{id} answers, once the task passed its checks."""
    version = expected_version(task, if_match)
    deleted = soft_delete_task(
        session, task=task, expected_version=version, now=utcnow(), change_seq=writes.change()
    )
    if not deleted:
        _written(None, if_match)
    return Response(status_code=http.HTTP_204_NO_CONTENT)


def complete_one(session: Session, *, writes: Writes, task: Task, if_match: str | None) -> Response:
    """What PATCH /api/tasks/{id}/complete answers, once the task passed its checks."""
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
            "remind_at": None,
        },
        change_seq=writes.change(),
    )
    return task_response(_written(written, if_match))


@router.put(
    "/api/tasks/{task_id:id_segment}",
    response_model=TaskPublic,
    responses={200: {"headers": ETAG_HEADER}, **error_responses(Detail, BY_ID | PRECONDITION)},
    summary="Change some fields of a task",
)
async def update_task(
    task: OwnedTask, body: TaskUpdate, session: SessionDep, if_match: IfMatch = None
) -> Response:
    """Change the fields sent and keep the others; with `If-Match`, only if unchanged since.
    A new `remind_at` re-arms the reminder; completing the task cancels it."""
    writes = Writes(session, task.user_id)
    return update_one(session, writes=writes, task=task, body=body, if_match=if_match)


@router.delete(
    "/api/tasks/{task_id:id_segment}",
    status_code=http.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(Detail, BY_ID | PRECONDITION),
    summary="Delete a task (it stays in the database, marked deleted)",
)
async def delete_task(task: OwnedTask, session: SessionDep, if_match: IfMatch = None) -> Response:
    """Move a task out of every list and read, and cancel its reminder; the row stays,
    marked deleted, in the trash."""
    writes = Writes(session, task.user_id)
    return delete_one(session, writes=writes, task=task, if_match=if_match)


@router.patch(
    "/api/tasks/{task_id:id_segment}/complete",
    response_model=TaskPublic,
    responses={200: {"headers": ETAG_HEADER}, **error_responses(Detail, BY_ID | PRECONDITION)},
    summary="Mark a task completed (idempotent)",
)
async def complete_task(task: OwnedTask, session: SessionDep, if_match: IfMatch = None) -> Response:
    """Set the status to `Completed` and cancel the reminder; completing again keeps the
    first `completed_at`."""
    writes = Writes(session, task.user_id)
    return complete_one(session, writes=writes, task=task, if_match=if_match)


# ---------------------------------------------------------------------------------------
# Batch: the single routes' answers, many in one request and one transaction


def body_invalid(error: ValidationError) -> Response:
    """The 422 that FastAPI answers for a body that fails its model (`loc` from `body`)."""
    errors = [
        {**entry, "loc": ("body", *entry["loc"])} for entry in error.errors(include_url=False)
    ]
    return json_response(
        json.dumps({"detail": jsonable_encoder(without_input(errors))}).encode(),
        status_code=http.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def run_operation(session: Session, *, writes: Writes, operation: BatchOperation) -> Response:
    """The answer the operation's single route gives (update, complete, delete), its
    checks in the same order: the task (404, 403), then the body (422), then If-Match
    (412) and the write."""
    # Read afresh: an earlier operation of the batch may have changed the task.
    found = session.get(Task, operation.id, populate_existing=True)
    task = owned_task(found, writes.user_id, in_trash=False)
    if operation.op is BatchOp.UPDATE:
        try:
            update_body = TaskUpdate.model_validate(operation.body)
        except ValidationError as error:
            return body_invalid(error)
        return update_one(
            session, writes=writes, task=task, body=update_body, if_match=operation.if_match
        )
    if operation.op is BatchOp.COMPLETE:
        return complete_one(session, writes=writes, task=task, if_match=operation.if_match)
    return delete_one(session, writes=writes, task=task, if_match=operation.if_match)


def batch_result(response: Response) -> dict[str, Any]:
    """The single route's answer as a result: `body` and `etag` null where it sends none."""
    return {
        "status": response.status_code,
        "body": json.loads(bytes(response.body)) if response.body else None,
        "etag": response.headers.get("etag"),
    }


def error_result(error: HTTPException) -> dict[str, Any]:
    """What the single route answers for an HTTPException (a 4xx: nothing of it written)."""
    return {"status": error.status_code, "body": {"detail": error.detail}, "etag": None}


def answer_batch(
    session: Session, *, user_id: uuid.UUID, operations: list[BatchOperation], now: datetime
) -> Response:
    """Every operation's result, in order. Consecutive creates are inserted together, in
    one statement, once they are numbered and counted: their ids, numbers and results
    are what they would be one by one."""
    results: list[dict[str, Any]] = []
    writes = Writes(session, user_id, planned=len(operations))
    waiting: list[tuple[int, dict[str, Any]]] = []  # creates to insert: (result index, row)

    def insert_waiting() -> None:
        rows = insert_tasks(session, rows=[row for _, row in waiting]) if waiting else []
        for (index, _), row in zip(waiting, rows, strict=True):
            results[index] = batch_result(created(row))
        waiting.clear()

    for operation in operations:
        if operation.op is BatchOp.CREATE:
            try:
                body = TaskCreate.model_validate(operation.body)
                waiting.append((len(results), new_task(writes, body, now)))
                results.append({})
            except ValidationError as error:
                results.append(batch_result(body_invalid(error)))
            except HTTPException as error:
                results.append(error_result(error))
            continue
        insert_waiting()
        try:
            response = run_operation(session, writes=writes, operation=operation)
            results.append(batch_result(response))
        except HTTPException as error:
            results.append(error_result(error))
    insert_waiting()
    # UTF-8 as the single routes write it: ASCII escapes would triple a batch of emoji past
    # Lambda's 6 MB response limit.
    answer = json.dumps({"results": results}, separators=(",", ":"), ensure_ascii=False)
    return json_response(answer.encode())


@router.post(
    "/api/tasks/batch",
    response_model=BatchResponse,
    responses={
        200: {"headers": {"Idempotent-Replayed": CREATED_HEADERS["Idempotent-Replayed"]}},
        **CREATE_ERRORS,
    },
    summary="Create, change, complete and delete tasks in one request",
    # The largest valid batch: 100 operations, each no larger than a single route's body.
    openapi_extra=max_body_bytes(BATCH_MAX_OPERATIONS * DEFAULT_MAX_BODY_BYTES),
)
async def run_batch(body: BatchRequest, idempotent: IdempotentCreateDep) -> Response:
    """Up to 100 operations, in order, in one transaction: each result is what its single
    route would have answered (status, body, ETag), and an operation that fails (a 4xx)
    writes nothing while the others go ahead. An `Idempotency-Key` works as on a create:
    a retry within 24 hours gets the first answer again."""
    session, now = idempotent.session, idempotent.now
    operations, user_id = body.operations, idempotent.user_id
    return idempotent.answer(
        body, lambda: answer_batch(session, user_id=user_id, operations=operations, now=now)
    )
