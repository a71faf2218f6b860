"""Tables and the request/response schemas built on them.

Timestamps are stored as UTC and always come back timezone-aware, on SQLite too, so that
responses carry an explicit `+00:00` offset as the contract asks.
"""

import enum
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from email_validator import SPECIAL_USE_DOMAIN_NAMES
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    TypeAdapter,
    field_validator,
    model_validator,
)
from pydantic import Field as PydanticField
from pydantic.config import JsonDict
from pydantic.json_schema import SkipJsonSchema
from sqlmodel import Field, SQLModel
from typing_extensions import TypedDict

from taskapi.emails import EMAIL_MAX_LENGTH, signup_email
from taskapi.openapi import EXAMPLE_EMAIL, EXAMPLE_PASSWORD, RESPONSE_CONFIG
from taskapi.rules import (
    NEW_PASSWORD_DESCRIPTION,
    NO_NUL_PATTERN,
    PASSWORD_MAX_BYTES,
    PASSWORD_MIN_LENGTH,
    settable_password,
    storable_text,
    trimmed_pattern,
)

# Every constraint and index gets a predictable name, so migrations can refer to them.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

NAME_MAX_LENGTH = 100
TITLE_MAX_LENGTH = 200
DESCRIPTION_MAX_LENGTH = 5000
SEARCH_MAX_LENGTH = 200  # the list's `q`

# email-validator refuses addresses on special-use domains (RFC 6761: `.test`, `.local`,
# ...); the document says so by name, and as a pattern that generated data can follow
# (each letter in either case, as domains are compared).
RESERVED_EMAIL_DOMAINS = sorted(SPECIAL_USE_DOMAIN_NAMES)
_ANY_CASE = "|".join(
    "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in name)
    for name in RESERVED_EMAIL_DOMAINS
)
EMAIL_DOMAIN_PATTERN = rf"^[^@]+@(?!(?:[^@]*\.)?(?:{_ANY_CASE})\.?$)"


def trimmed_text_schema(max_length: int) -> Callable[[JsonDict], None]:
    """The document of a name or title: its limits count the text once trimmed, as the
    validators do, so they are stated by a pattern (`taskapi.rules.trimmed_pattern`) in
    place of `minLength` and `maxLength`, which would count the whitespace around it."""

    def document(schema: JsonDict) -> None:
        schema.pop("minLength", None)
        schema.pop("maxLength", None)
        schema["pattern"] = trimmed_pattern(max_length)

    return document


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores it naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class TaskStatus(enum.StrEnum):
    PENDING = "Pending"
    IN_PROGRESS = "In Progress"
    COMPLETED = "Completed"


class TaskPriority(enum.StrEnum):
    LOW = "Low"
    MEDIUM = "Medium"
    HIGH = "High"


def _string_enum(enum_cls: type[enum.StrEnum], name: str, *, length: int = 20) -> sa.Enum:
    # A VARCHAR with a CHECK constraint, storing the values clients see: no native enum type
    # that every new value would have to ALTER.
    return sa.Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=length,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


def _document_request_defaults(schema: JsonDict) -> None:
    # A request field's default is what the server fills in, not something the client must
    # send; openapi-typescript (default settings) types every property with a `default` as
    # required, so the default is said in the description instead.
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return
    for prop in properties.values():
        if not isinstance(prop, dict) or "default" not in prop:
            continue
        default = prop.pop("default")
        if default is not None:
            said = f"Default: `{default}`."
            prop["description"] = f"{prop['description']} {said}" if "description" in prop else said


# The base of every request body: unknown fields are refused (422), defaults documented.
class RequestModel(SQLModel):
    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid", json_schema_extra=_document_request_defaults
    )


def with_examples(*examples: JsonDict) -> ConfigDict:
    """A request model's `model_config` that adds valid bodies to its document (Swagger
    UI's "Try it out" sends the first) and keeps `RequestModel`'s own schema changes."""

    def document(schema: JsonDict) -> None:
        _document_request_defaults(schema)
        schema["examples"] = list(examples)

    return ConfigDict(json_schema_extra=document)


# The body of every answer that is only a message: errors other than request validation
# (`{"detail": "..."}`, as the contract has them) and confirmations such as logout's.
class Detail(SQLModel):
    model_config = RESPONSE_CONFIG  # type: ignore[assignment]

    detail: str


# ---------------------------------------------------------------------------------------
# Users

# A counter column: 0 for rows written before it existed, and by any INSERT that leaves it out.
COUNTER: dict[str, Any] = {"server_default": sa.text("0")}


# Fields a client may see and set at sign-up.
class UserBase(SQLModel):
    email: str = Field(
        max_length=EMAIL_MAX_LENGTH,
        description="A bare address (no display name), stored trimmed, NFC and lower-cased. "
        "An address on a special-use domain ("
        + ", ".join(f".{name}" for name in RESERVED_EMAIL_DOMAINS)
        + ") is refused",
        schema_extra={"json_schema_extra": {"format": "email", "pattern": EMAIL_DOMAIN_PATTERN}},
    )
    name: str = Field(
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        description="1 to 100 characters once trimmed; no NUL character",
        schema_extra={"json_schema_extra": trimmed_text_schema(NAME_MAX_LENGTH)},
    )


# The `user` table.
class User(UserBase, table=True):
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    email: str = Field(max_length=EMAIL_MAX_LENGTH, unique=True, index=True)
    hashed_password: str = Field(max_length=255)
    is_active: bool = Field(default=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_login_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # The changes feed (`GET /api/tasks/changes`): the number of the user's last task
    # change, taken under this row's lock, so that the user's changes are numbered in the
    # order they commit; and the highest change number whose tombstone the maintenance
    # run has removed (a cursor below it is 410).
    task_change_seq: int = Field(default=0, sa_type=sa.BigInteger, sa_column_kwargs=COUNTER)
    task_changes_pruned: int = Field(default=0, sa_type=sa.BigInteger, sa_column_kwargs=COUNTER)


# A password that a body sets (sign-up, password change, reset): its rules, once.
NewPassword = Annotated[
    str,
    PydanticField(
        min_length=PASSWORD_MIN_LENGTH,
        # A character is at least one byte: 72 characters is the most that can fit.
        max_length=PASSWORD_MAX_BYTES,
        description=NEW_PASSWORD_DESCRIPTION,
        json_schema_extra={"pattern": NO_NUL_PATTERN},
    ),
    AfterValidator(settable_password),
]


# Body of POST /api/auth/signup.
class UserCreate(UserBase, RequestModel):
    model_config = with_examples(
        {"email": EXAMPLE_EMAIL, "name": "Ada Lovelace", "password": EXAMPLE_PASSWORD}
    )

    password: NewPassword

    # A bare address, normalised as every email is (taskapi.emails).
    _email = field_validator("email")(signup_email)

    @field_validator("name", mode="before")
    @classmethod
    def strip_name(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    _name = field_validator("name")(storable_text)


# What the API returns for a user: never the password hash.
class UserPublic(UserBase):
    model_config = RESPONSE_CONFIG  # type: ignore[assignment]

    email: str
    id: uuid.UUID
    is_active: bool
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None


# ---------------------------------------------------------------------------------------
# Sessions and login throttling (used by the auth function and `CurrentUser`)


# Longest source address API Gateway reports (IPv6 text is at most 45 characters).
LOGIN_SOURCE_MAX_LENGTH = 64
# A session's or security event's User-Agent is cut to this: enough to tell one browser
# or app from another, and a client cannot grow the tables with a huge header.
USER_AGENT_MAX_LENGTH = 256


# One row per login: the refresh token in force is the one whose `jti` matches
# `refresh_jti`; every access token carries the session id, so revoking the row logs
# that device out at once. `ip` and `user_agent` are the login's, `last_used_at` the
# last login or refresh.
class AuthSession(SQLModel, table=True):
    __tablename__ = "auth_session"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="user.id", ondelete="CASCADE", index=True)
    refresh_jti: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    ip: str | None = Field(default=None, max_length=LOGIN_SOURCE_MAX_LENGTH)
    user_agent: str | None = Field(default=None, max_length=USER_AGENT_MAX_LENGTH)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


# The `source` of the row that counts an email's failures from every source together.
ANY_SOURCE = "*"


# Failed logins per (email, source IP) inside the lockout window, for throttling; the
# row whose source is `ANY_SOURCE` caps the email's failures from all sources. A source's
# row is deleted on a successful login from it.
class LoginAttempt(SQLModel, table=True):
    __tablename__ = "login_attempt"

    email: str = Field(max_length=EMAIL_MAX_LENGTH, primary_key=True)
    source: str = Field(max_length=LOGIN_SOURCE_MAX_LENGTH, primary_key=True)
    failed_count: int = Field(default=0)
    first_failed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_failed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


# A device that has logged in before (its client keeps the `device_token` that login and
# sign-up return; only the token's SHA-256 is stored). A login presenting it is throttled
# by the device's own failures alone, so a stranger's guesses cannot lock it out (OWASP's
# "device cookies"). Deleted with its user, or by the maintenance run once it has not
# logged in for KNOWN_DEVICE_LIFETIME (a login without a token adds a device each time).
KNOWN_DEVICE_LIFETIME = timedelta(days=90)


class LoginDevice(SQLModel, table=True):
    __tablename__ = "login_device"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="user.id", ondelete="CASCADE", index=True)
    token_hash: str = Field(max_length=64, unique=True)
    failed_count: int = Field(default=0)
    first_failed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_failed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # Its creation, then each login that presented its token. The server's default is
    # for the code of the release before, which inserts devices without it.
    last_used_at: datetime = Field(
        default_factory=utcnow,
        sa_type=UTCDateTime,
        index=True,
        sa_column_kwargs={"server_default": sa.text("CURRENT_TIMESTAMP")},
    )


# ---------------------------------------------------------------------------------------
# The security log and the tokens that emails carry (auth function; maintenance purges)


# What the security log records (`GET /api/auth/events`).
class SecurityEventType(enum.StrEnum):
    SIGNUP = "signup"
    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    REFRESH_TOKEN_REUSED = "refresh_token_reused"  # noqa: S105 (an event name)
    PASSWORD_CHANGED = "password_changed"  # noqa: S105
    PASSWORD_RESET_REQUESTED = "password_reset_requested"  # noqa: S105
    PASSWORD_RESET = "password_reset"  # noqa: S105
    EMAIL_CHANGE_REQUESTED = "email_change_requested"
    EMAIL_CHANGED = "email_changed"
    SESSION_REVOKED = "session_revoked"
    LOGOUT = "logout"


# One entry of a user's security log, written in the transaction of what it records.
# Never a password, token or hash: who, what, when, from where.
class SecurityEvent(SQLModel, table=True):
    __tablename__ = "security_event"
    # The user's page, newest first, is one backward scan of this index.
    __table_args__ = (sa.Index("ix_security_event_user_newest", "user_id", "created_at", "id"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="user.id", ondelete="CASCADE")
    type: SecurityEventType = Field(
        sa_type=_string_enum(SecurityEventType, "security_event_type", length=32)
    )
    # Indexed for the maintenance run, which deletes events older than SECURITY_EVENT_DAYS.
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    ip: str | None = Field(default=None, max_length=LOGIN_SOURCE_MAX_LENGTH)
    user_agent: str | None = Field(default=None, max_length=USER_AGENT_MAX_LENGTH)
    # The session it concerns, if any (no foreign key: events outlive their sessions).
    session_id: uuid.UUID | None = Field(default=None)


# What an emailed token is for.
class AccountTokenPurpose(enum.StrEnum):
    PASSWORD_RESET = "password_reset"  # noqa: S105
    EMAIL_CHANGE = "email_change"


# The one outstanding emailed token of a user for each purpose: a newer one replaces the
# row, so an older token no longer matches anything. Only the token's SHA-256 is kept;
# redeeming deletes the row (single use).
class AccountToken(SQLModel, table=True):
    __tablename__ = "account_token"

    user_id: uuid.UUID = Field(foreign_key="user.id", ondelete="CASCADE", primary_key=True)
    purpose: AccountTokenPurpose = Field(
        sa_type=_string_enum(AccountTokenPurpose, "account_token_purpose"), primary_key=True
    )
    token_hash: str = Field(max_length=64, unique=True, index=True)
    # The address an email change moves to (null for a password reset).
    new_email: str | None = Field(default=None, max_length=EMAIL_MAX_LENGTH)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # Indexed for the maintenance run, which deletes expired tokens.
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)


# ---------------------------------------------------------------------------------------
# Tasks


def _strip_title(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


_NUMBER = re.compile(r"[+-]?\d+(\.\d*)?")


def _iso_8601_text(value: Any) -> Any:
    # pydantic would also read a number, or a string of digits, as Unix time.
    if isinstance(value, datetime) or (isinstance(value, str) and not _NUMBER.fullmatch(value)):
        return value
    raise ValueError("must be an ISO 8601 timestamp with an offset, such as 2026-12-01T09:00:00Z")


def _as_utc(value: datetime) -> datetime:
    # In UTC, as every answer writes it. One that UTC cannot hold
    # (`0001-01-01T00:00:00+01:00` is in year 0 there) is bad input, not a 500.
    try:
        return value.astimezone(UTC)
    except OverflowError as error:
        raise ValueError("is outside the years 1 to 9999 once converted to UTC") from error


# A timestamp a client sends (`due_at`, the list's due-date filters): ISO 8601 with an
# offset, as the contract asks; without one it is 422 rather than a guess at a zone.
Timestamp = Annotated[AwareDatetime, BeforeValidator(_iso_8601_text), AfterValidator(_as_utc)]


def description_field(description: str) -> Any:
    """A task's optional `description`, as the create and the update bodies declare it."""
    return Field(
        default=None,
        max_length=DESCRIPTION_MAX_LENGTH,
        description=description,
        schema_extra={"json_schema_extra": {"pattern": NO_NUL_PATTERN}},
    )


# Fields a client may set on a task.
class TaskBase(SQLModel):
    title: str = Field(
        min_length=1,
        max_length=TITLE_MAX_LENGTH,
        description="1 to 200 characters once trimmed (not only whitespace); no NUL character",
        schema_extra={"json_schema_extra": trimmed_text_schema(TITLE_MAX_LENGTH)},
    )
    description: str | None = description_field("At most 5000 characters, no NUL character")
    status: TaskStatus = Field(default=TaskStatus.PENDING)
    priority: TaskPriority = Field(default=TaskPriority.MEDIUM)
    due_at: Timestamp | None = Field(default=None)
    remind_at: Timestamp | None = Field(
        default=None,
        description="When to email the owner a reminder (ISO 8601 with an offset); "
        "cleared when the task is completed or deleted",
    )


# PostgreSQL's pg_trgm index for the list's `ILIKE '%text%'` search (migration 0003 says
# why it leads with user_id). SQLite has none; `migrations/env.py` leaves an index marked
# for one dialect out of the comparison on the others.
TASK_SEARCH_INDEX = sa.Index(
    "ix_task_search_trgm",
    "user_id",
    "title",
    "description",
    postgresql_using="gin",
    postgresql_ops={"title": "gin_trgm_ops", "description": "gin_trgm_ops"},
    info={"dialect": "postgresql"},
).ddl_if(dialect="postgresql")


# A task whose reminder is set and not sent yet (the reminders run adds "due by now").
REMINDER_DUE = sa.text("remind_at IS NOT NULL AND reminded_at IS NULL")


# The `task` table; `deleted_at` marks a soft delete and `version` backs the ETag.
class Task(TaskBase, table=True):
    __table_args__ = (
        sa.Index("ix_task_user_status", "user_id", "status"),
        # One user's tasks by due date (and id, the sort's tie-break): the overdue view's
        # range and the `due_at` sort read it in order and stop at the page (docs/API.md).
        sa.Index("ix_task_user_due_at", "user_id", "due_at", "id"),
        # The trash, and nothing else: one user's newest deletions first, and the whole
        # (small) index for the maintenance run's purge of tasks past the retention.
        sa.Index(
            "ix_task_user_deleted_at",
            "user_id",
            "deleted_at",
            postgresql_where=sa.text("deleted_at IS NOT NULL"),
            sqlite_where=sa.text("deleted_at IS NOT NULL"),
        ),
        # The live tasks with the list's filter columns: `total` is an index-only count
        # (`deleted_at` too, always NULL here, for SQLite: migration 0009 says why).
        sa.Index(
            "ix_task_user_live",
            "user_id",
            "status",
            "priority",
            "due_at",
            "deleted_at",
            postgresql_where=sa.text("deleted_at IS NULL"),
            sqlite_where=sa.text("deleted_at IS NULL"),
        ),
        TASK_SEARCH_INDEX,
        # The changes feed: one user's changes in the order they committed.
        sa.Index("ix_task_user_change_seq", "user_id", "change_seq"),
        # Reminders still to send, soonest first, and nothing else (most tasks have none).
        sa.Index(
            "ix_task_reminder_due",
            "remind_at",
            postgresql_where=REMINDER_DUE,
            sqlite_where=REMINDER_DUE,
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="user.id", ondelete="CASCADE", index=True)
    title: str = Field(max_length=TITLE_MAX_LENGTH, index=True)
    status: TaskStatus = Field(
        default=TaskStatus.PENDING, sa_type=_string_enum(TaskStatus, "task_status"), index=True
    )
    priority: TaskPriority = Field(
        default=TaskPriority.MEDIUM, sa_type=_string_enum(TaskPriority, "task_priority")
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    due_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    deleted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    version: int = Field(default=1)
    remind_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # When the reminder for the current `remind_at` went out; a new `remind_at` clears it.
    reminded_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # The user's change number of this task's last change (`User.task_change_seq`).
    change_seq: int = Field(default=0, sa_type=sa.BigInteger, sa_column_kwargs=COUNTER)


# Body of POST /api/tasks.
class TaskCreate(TaskBase, RequestModel):
    model_config = with_examples(
        {
            "title": "Write the quarterly report",
            "description": "Figures from the finance sheet",
            "priority": "High",
            "due_at": "2030-03-31T17:00:00Z",
            "remind_at": "2030-03-30T09:00:00Z",
        }
    )

    _strip = field_validator("title", mode="before")(_strip_title)
    _storable = field_validator("title", "description")(storable_text)


# Body of PUT /api/tasks/{id}: any subset of the create fields. `title`, `status` and
# `priority` may be omitted but not null: `SkipJsonSchema[None]` keeps the None that means
# "absent" out of the document, and `not_null` refuses an explicit null.
class TaskUpdate(RequestModel):
    model_config = with_examples({"status": "In Progress", "remind_at": "2030-03-30T15:00:00Z"})

    # The length limits go on `str` itself: on the union they would also meet the None.
    title: (
        Annotated[str, StringConstraints(min_length=1, max_length=TITLE_MAX_LENGTH)]
        | SkipJsonSchema[None]
    ) = Field(
        default=None,
        description=TaskBase.model_fields["title"].description,
        schema_extra={"json_schema_extra": trimmed_text_schema(TITLE_MAX_LENGTH)},
    )
    description: str | None = description_field(
        "At most 5000 characters, no NUL character; null clears it"
    )
    status: TaskStatus | SkipJsonSchema[None] = None
    priority: TaskPriority | SkipJsonSchema[None] = None
    due_at: Timestamp | None = Field(
        default=None, description="ISO 8601 with an offset; null clears the due date"
    )
    remind_at: Timestamp | None = Field(
        default=None,
        description="ISO 8601 with an offset; a new time re-arms the reminder, null cancels it",
    )

    _strip = field_validator("title", mode="before")(_strip_title)
    _storable = field_validator("title", "description")(storable_text)

    @field_validator("title", "status", "priority")
    @classmethod
    def not_null(cls, value: Any) -> Any:
        # Absent means "leave as is"; an explicit null would blank a required column.
        if value is None:
            raise ValueError("may be omitted but not null")
        return value


# What the API returns for a task.
class TaskPublic(TaskBase):
    model_config = RESPONSE_CONFIG  # type: ignore[assignment]

    id: int
    user_id: uuid.UUID
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


# The page that GET /api/tasks returns.
class TaskPage(SQLModel):
    model_config = RESPONSE_CONFIG  # type: ignore[assignment]

    items: list[TaskPublic]
    total: int
    skip: int
    limit: int


# A task in the trash: when it was deleted, and the ETag that `If-Match` on its restore
# takes (deleting changed the version, and a DELETE answers with no ETag).
class TrashedTask(TaskPublic):
    deleted_at: datetime
    etag: str


# The page that GET /api/tasks/trash returns.
class TrashPage(SQLModel):
    items: list[TrashedTask]
    total: int
    skip: int
    limit: int


# The page that GET /api/tasks/changes returns.
class TaskChanges(SQLModel):
    model_config = RESPONSE_CONFIG  # type: ignore[assignment]

    items: list[TaskPublic] = Field(description="Tasks created or changed, as they are now")
    deleted: list[int] = Field(description="Ids of tasks deleted, trashed or purged")
    cursor: str = Field(description="Where the next page starts: pass it back as `cursor`")
    has_more: bool = Field(description="true: more changes follow; ask again with `cursor`")


BATCH_MAX_OPERATIONS = 100


class BatchOp(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    COMPLETE = "complete"
    DELETE = "delete"


# One operation of POST /api/tasks/batch: what the single route takes, in one object.
class BatchOperation(RequestModel):
    op: BatchOp = Field(
        description="create: POST /api/tasks; update: PUT, complete: PATCH .../complete, "
        "delete: DELETE /api/tasks/{id}"
    )
    id: Annotated[int, Field(ge=1, le=2**31 - 1)] | SkipJsonSchema[None] = Field(
        default=None,
        description="The task's id: required by update, complete and delete; not by create",
    )
    if_match: Annotated[str, Field(max_length=1024)] | SkipJsonSchema[None] = Field(
        default=None, description="The single route's If-Match header"
    )
    body: dict[str, Any] | SkipJsonSchema[None] = Field(
        default=None,
        description="The single route's body: TaskCreate for create (required), "
        "TaskUpdate for update (required); none for complete and delete",
    )

    @model_validator(mode="after")
    def _id_where_needed(self) -> "BatchOperation":
        if (self.op is BatchOp.CREATE) != (self.id is None):
            raise ValueError("`id` is required by update, complete and delete, and not by create")
        if (self.op in (BatchOp.CREATE, BatchOp.UPDATE)) != (self.body is not None):
            raise ValueError("`body` is required by create and update, and not by the others")
        if self.op is BatchOp.CREATE and self.if_match is not None:
            raise ValueError("`if_match` applies to an existing task, not to create")
        return self


# Body of POST /api/tasks/batch.
class BatchRequest(RequestModel):
    model_config = with_examples(
        {
            "operations": [
                {"op": "create", "body": {"title": "Buy milk", "priority": "Low"}},
                {"op": "create", "body": {"title": "Call the plumber"}},
            ]
        }
    )

    operations: list[BatchOperation] = Field(
        min_length=1, max_length=BATCH_MAX_OPERATIONS, description="1 to 100, run in order"
    )


# One operation's answer: the single route's status, body and ETag (null where the single
# route sends none).
class BatchResult(SQLModel):
    model_config = RESPONSE_CONFIG  # type: ignore[assignment]

    status: int
    body: dict[str, Any] | None = Field(
        description="The single route's body: a Task, or an error's `detail`; null for a 204"
    )
    etag: str | None = Field(description="The single route's ETag; null where it sends none")


# The answer of POST /api/tasks/batch: one result per operation, in order.
class BatchResponse(SQLModel):
    model_config = RESPONSE_CONFIG  # type: ignore[assignment]

    results: list[BatchResult]


# A task removed for good (emptied from the trash, or purged by the maintenance run): the
# changes feed's record that it is gone, at the change number of its deletion, kept
# CHANGES_RETENTION_DAYS. Its primary key leads with the feed's order; the task id is in
# it because tasks written outside the API (before the feed existed) share number 0.
class TaskTombstone(SQLModel, table=True):
    __tablename__ = "task_tombstone"

    user_id: uuid.UUID = Field(foreign_key="user.id", ondelete="CASCADE", primary_key=True)
    change_seq: int = Field(sa_type=sa.BigInteger, primary_key=True)
    task_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    removed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)


# ---------------------------------------------------------------------------------------
# The one way a task's JSON is written, by reads and writes alike: from the values of an
# ORM `Task` or of a row of its columns, which already have the fields' types (the
# columns' own), through serializers made from the models above, without validating the
# values into models first (that cost about three times the writing). What is written is
# what those models document.


def _shape_of(model: type[SQLModel], *, items: type[SQLModel] | None = None) -> Any:
    """`model`'s fields as a TypedDict (a page's `items` as a list of the item's): pydantic
    writes a dict of that type as `model_dump_json` writes the model."""
    fields: dict[str, Any] = {name: field.annotation for name, field in model.model_fields.items()}
    if items is not None:
        fields["items"] = list[_shape_of(items)]  # type: ignore[misc]
    # The functional form, with fields known only at import: mypy cannot follow it.
    return TypedDict(f"{model.__name__}Values", fields)  # type: ignore[operator]


_TASK_FIELDS = tuple(TaskPublic.model_fields)
# The columns that hold `TaskPublic`'s fields, in its order: a query that reads tasks as
# rows selects these first, so that `task_values` reads them by position.
TASK_PUBLIC_COLUMNS = tuple(getattr(Task, name) for name in _TASK_FIELDS)
_TASK_JSON = TypeAdapter(_shape_of(TaskPublic))
_PAGE_JSON = TypeAdapter(_shape_of(TaskPage, items=TaskPublic))
_TRASH_JSON = TypeAdapter(_shape_of(TrashPage, items=TrashedTask))
_CHANGES_JSON = TypeAdapter(_shape_of(TaskChanges, items=TaskPublic))


def task_values(task: Task | sa.Row[Any]) -> dict[str, Any]:
    """What clients see of a task (`TaskPublic`'s fields), from an ORM task or a row that
    starts with `TASK_PUBLIC_COLUMNS` (by position: by name cost twice as much a row)."""
    if isinstance(task, sa.Row):
        # Not strict: the query's own columns (a total, a version) may follow.
        return dict(zip(_TASK_FIELDS, task))  # noqa: B905
    return {name: getattr(task, name) for name in _TASK_FIELDS}


def task_json(task: Task | sa.Row[Any]) -> bytes:
    """`TaskPublic`'s JSON of an ORM task or a row of its columns."""
    return _TASK_JSON.dump_json(task_values(task))


def page_json(items: list[dict[str, Any]], *, total: int, skip: int, limit: int) -> bytes:
    """`TaskPage`'s JSON: `items` are `task_values`."""
    return _PAGE_JSON.dump_json({"items": items, "total": total, "skip": skip, "limit": limit})


def trash_json(items: list[dict[str, Any]], *, total: int, skip: int, limit: int) -> bytes:
    """`TrashPage`'s JSON: `items` are `task_values` with `deleted_at` and `etag`."""
    return _TRASH_JSON.dump_json({"items": items, "total": total, "skip": skip, "limit": limit})


def changes_json(page: dict[str, Any]) -> bytes:
    """`TaskChanges`' JSON of a page as plain data: `items` are `task_values`."""
    return _CHANGES_JSON.dump_json(page)


# ---------------------------------------------------------------------------------------
# Idempotent creates (the `Idempotency-Key` header of POST /api/tasks)

IDEMPOTENCY_KEY_MAX_LENGTH = 255
# How long a key's first answer is replayed; the maintenance run deletes older records.
IDEMPOTENCY_KEY_LIFETIME = timedelta(hours=24)


# The first answer to a create sent with an Idempotency-Key, written in the transaction
# that inserts the task. The primary key makes keys per user and lets only one of
# simultaneous requests with the same key commit.
class IdempotencyKey(SQLModel, table=True):
    __tablename__ = "idempotency_key"

    user_id: uuid.UUID = Field(foreign_key="user.id", ondelete="CASCADE", primary_key=True)
    key: str = Field(max_length=IDEMPOTENCY_KEY_MAX_LENGTH, primary_key=True)
    # SHA-256 of the validated body: the same key with another body is refused.
    fingerprint: str = Field(max_length=64)
    status_code: int
    body: str = Field(sa_type=sa.Text)
    location: str = Field(max_length=64)
    etag: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
