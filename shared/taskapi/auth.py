"""`CurrentUser`: the user behind a valid access token of a live session.

One query loads the user and checks the session together, so a logged-out session's
access token is refused at once, at no extra cost per request.
"""

import uuid
from datetime import UTC, datetime
from typing import Annotated, NamedTuple, NoReturn

import sqlalchemy as sa
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Connection
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from taskapi.db import SessionDep
from taskapi.models import AuthSession, User
from taskapi.tokens import InvalidTokenError, TokenClaims, decode_token

bearer_scheme = HTTPBearer(auto_error=False, description="An access token from login or signup")


def unauthorized(detail: str) -> NoReturn:
    raise HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


# `async def` although nothing awaits: the reason is in the `taskapi` package docstring.
async def get_access_claims(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> TokenClaims:
    """The claims of a valid access token; its session is not checked here."""
    return _access_claims(credentials)


def _access_claims(credentials: HTTPAuthorizationCredentials | None) -> TokenClaims:
    if credentials is None:
        unauthorized("Not authenticated")
    try:
        return decode_token(credentials.credentials, expected_type="access")
    except InvalidTokenError:
        unauthorized("Invalid or expired token")


AccessClaims = Annotated[TokenClaims, Depends(get_access_claims)]
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


# Built once, with bound parameters: building the statement on every request cost more
# than running it (docs/PERFORMANCE.md). Each parameter takes its column's type.
_LIVE_SESSION_USER = (
    select(User)
    .join(AuthSession, col(AuthSession.user_id) == col(User.id))
    .where(
        col(User.id) == sa.bindparam("user_id"),
        col(AuthSession.id) == sa.bindparam("session_id"),
        col(AuthSession.revoked_at).is_(None),
        col(AuthSession.expires_at) > sa.bindparam("now"),
    )
)
# For a request that writes, the user row is also share-locked (FOR KEY SHARE on
# PostgreSQL, which blocks only deleting the user or changing its key; SQLite has one
# writer at a time anyway) until the request commits: an account deletion, which locks
# the row FOR UPDATE, waits for the user's writes under way, and a write that starts
# during a deletion waits for it and then finds no user (401). Without it, a write that
# passed this check just before a deletion would find its task gone (404) or its row
# refused (foreign key), instead of either completing first or getting 401.
_LIVE_SESSION_USER_FOR_WRITE = _LIVE_SESSION_USER.with_for_update(
    read=True, key_share=True, of=User
)


# What the task routes need of the user, as a Core row: loading an ORM `User` (identity
# map, instance state, every column) cost more than the query (docs/PERFORMANCE.md).
_LIVE_SESSION_USER_ID = _LIVE_SESSION_USER.with_only_columns(col(User.id), col(User.is_active))
_LIVE_SESSION_USER_ID_FOR_WRITE = _LIVE_SESSION_USER_ID.with_for_update(
    read=True, key_share=True, of=User
)


# For the routes that change or delete the user row itself (password change, account
# deletion): the lock they need, taken first, FOR NO KEY UPDATE or FOR UPDATE. The user
# row comes before any login-attempt row on every path (a login locks it before its
# throttling rows too), and no request upgrades a share lock that another request also
# holds: two such upgrades, or an upgrade and a login waiting for the other's rows, were
# deadlocks, answered 503 (docs/RELIABILITY.md).
_USER_TO_CHANGE = select(User.id).where(col(User.id) == sa.bindparam("user_id"))


async def get_current_user(session: SessionDep, claims: AccessClaims) -> User:
    """The whole `User`, for the routes that show or change it (/me, the account routes)."""
    query = _LIVE_SESSION_USER if session.info.get("read_only") else _LIVE_SESSION_USER_FOR_WRITE
    return _current_user(session, claims, query)


async def get_user_to_change(session: SessionDep, claims: AccessClaims) -> User:
    """`CurrentUser`, its row locked for an update until the request ends."""
    return _lock_current_user(session, claims, for_deletion=False)


async def get_user_to_delete(session: SessionDep, claims: AccessClaims) -> User:
    """`CurrentUser`, its row locked for deletion until the request ends (a second
    deletion waits, then finds no user: 401)."""
    return _lock_current_user(session, claims, for_deletion=True)


def _lock_current_user(session: Session, claims: TokenClaims, *, for_deletion: bool) -> User:
    # The lock first, then the session check in a statement of its own: run after any
    # change that held the lock has committed, it sees that change's revocations (a
    # locking read re-checks only the locked row, not the session it was joined with).
    lock = _USER_TO_CHANGE.with_for_update(key_share=not for_deletion)
    session.exec(lock, params={"user_id": claims.user_id}).first()
    return _current_user(session, claims, _LIVE_SESSION_USER)


def _current_user(session: Session, claims: TokenClaims, query: SelectOfScalar[User]) -> User:
    user = session.exec(
        query,
        params={
            "user_id": claims.user_id,
            "session_id": claims.session_id,
            "now": datetime.now(UTC),
        },
    ).first()
    if user is None:
        unauthorized("Session expired or revoked")
    if not user.is_active:
        unauthorized("Account is inactive")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


class UserRef(NamedTuple):
    """The user behind a live session, as the task routes need it: its id."""

    id: uuid.UUID


async def get_current_user_ref(session: SessionDep, credentials: BearerCredentials) -> UserRef:
    """`CurrentUser`'s checks (and its share lock for a request that writes), in one
    dependency that decodes the token itself and reads two columns: each dependency
    level costs FastAPI a resolution step per request (docs/PERFORMANCE.md)."""
    claims = _access_claims(credentials)
    query = (
        _LIVE_SESSION_USER_ID if session.info.get("read_only") else _LIVE_SESSION_USER_ID_FOR_WRITE
    )
    return _live_user_ref(session.connection(), query, claims, now=datetime.now(UTC))


def _live_user_ref(
    connection: Connection,
    query: sa.Select[uuid.UUID, bool],
    claims: TokenClaims,
    *,
    now: datetime,
) -> UserRef:
    row = connection.execute(
        query, {"user_id": claims.user_id, "session_id": claims.session_id, "now": now}
    ).first()
    if row is None:
        unauthorized("Session expired or revoked")
    if not row.is_active:
        unauthorized("Account is inactive")
    return UserRef(row.id)


CurrentUserRef = Annotated[UserRef, Depends(get_current_user_ref)]


# `CurrentUserRef`'s check as a condition, for a read that puts it in its own statement
# (the task routes' GETs, which take `AccessClaims`): one statement where the dependency
# and the read would be two, a round trip less on PostgreSQL (docs/PERFORMANCE.md). Its
# parameters are `user_id`, `session_id` and `now`, as the dependency's.
LIVE_SESSION = _LIVE_SESSION_USER_ID.where(col(User.is_active)).exists()


def require_live_session(connection: Connection, claims: TokenClaims, *, now: datetime) -> None:
    """For a read whose statement, with `LIVE_SESSION` in it, found nothing: 401 if the
    session or the user is why (as `CurrentUserRef` would have answered first); if
    neither is, there was simply nothing to find."""
    _live_user_ref(connection, _LIVE_SESSION_USER_ID, claims, now=now)


async def get_source_ip(request: Request) -> str:
    """The client's address as API Gateway saw it (`requestContext.http.sourceIp` of the
    event, which Mangum keeps in the scope); the socket's peer outside Lambda."""
    event = request.scope.get("aws.event") or {}
    source = ((event.get("requestContext") or {}).get("http") or {}).get("sourceIp")
    if source:
        return str(source)
    return request.client.host if request.client else "unknown"


SourceIp = Annotated[str, Depends(get_source_ip)]
