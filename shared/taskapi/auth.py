"""Authentication, one path: `AccessClaims` checks the token, `CurrentUser` its session.

One query loads the user and checks the session together, so a logged-out session's
access token is refused at once, at no extra cost per request; a read that needs no
`User` puts the same check in its own statement (`LIVE_SESSION`).
"""

from datetime import datetime
from typing import Annotated, Any, NoReturn

import sqlalchemy as sa
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Connection
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from taskapi.db import SessionDep
from taskapi.models import AuthSession, User, utcnow
from taskapi.tokens import InvalidTokenError, TokenClaims, decode_token

bearer_scheme = HTTPBearer(auto_error=False, description="An access token from login or signup")


def unauthorized(detail: str) -> NoReturn:
    raise HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


async def get_access_claims(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> TokenClaims:
    """The one token check: the claims of a valid access token. Its session is checked by
    `CurrentUser`, or by a read that puts `LIVE_SESSION` in its own statement."""
    if credentials is None:
        unauthorized("Not authenticated")
    try:
        return decode_token(credentials.credentials, expected_type="access")
    except InvalidTokenError:
        unauthorized("Invalid or expired token")


AccessClaims = Annotated[TokenClaims, Depends(get_access_claims)]


# The session check, built once with bound parameters (`user_id`, `session_id`, `now`):
# building the statement on every request cost more than running it.
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


def _session_parameters(claims: TokenClaims, now: datetime) -> dict[str, Any]:
    return {"user_id": claims.user_id, "session_id": claims.session_id, "now": now}


def _refused(*, found: bool) -> NoReturn:
    """401 for a session check that found no user, or an inactive one."""
    unauthorized("Account is inactive" if found else "Session expired or revoked")


# For the routes that change or delete the user row itself (password change, account
# deletion): the lock they need, taken first, FOR NO KEY UPDATE or FOR UPDATE. The user
# row comes before any login-attempt row on every path (a login locks it before its
# throttling rows too), and no request upgrades a share lock that another request also
# holds: two such upgrades, or an upgrade and a login waiting for the other's rows, were
# deadlocks, answered 503 (docs/RELIABILITY.md).
_USER_TO_CHANGE = select(User.id).where(col(User.id) == sa.bindparam("user_id"))


async def get_current_user(session: SessionDep, claims: AccessClaims) -> User:
    """The user behind the access token, if its session is live and it is active: 401
    otherwise. Share-locked for a request that writes (`_LIVE_SESSION_USER_FOR_WRITE`)."""
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
    user = session.exec(query, params=_session_parameters(claims, utcnow())).first()
    if user is None or not user.is_active:
        _refused(found=user is not None)
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]
# For the routes that change the user row (the password, the email, the profile) or
# delete it: the row locked first, as every route that changes it takes it.
UserToChange = Annotated[User, Depends(get_user_to_change)]
UserToDelete = Annotated[User, Depends(get_user_to_delete)]


# `CurrentUser`'s check as a condition, for a read that puts it in its own statement
# (the task routes' GETs, which take `AccessClaims`): one statement where the dependency
# and the read would be two, a round trip less on PostgreSQL. Its parameters are the
# session check's.
LIVE_SESSION = (
    _LIVE_SESSION_USER.with_only_columns(col(User.id)).where(col(User.is_active)).exists()
)


def require_live_session(connection: Connection, claims: TokenClaims, *, now: datetime) -> None:
    """For a read whose statement, with `LIVE_SESSION` in it, found nothing: 401 if the
    session or the user is why (as `CurrentUser` would have answered); if neither is,
    there was simply nothing to find."""
    row = connection.execute(_LIVE_SESSION_USER, _session_parameters(claims, now)).first()
    if row is None or not row.is_active:
        _refused(found=row is not None)


async def get_source_ip(request: Request) -> str:
    """The client's address as API Gateway saw it (`requestContext.http.sourceIp` of the
    event, which Mangum keeps in the scope); the socket's peer outside Lambda."""
    event = request.scope.get("aws.event") or {}
    source = ((event.get("requestContext") or {}).get("http") or {}).get("sourceIp")
    if source:
        return str(source)
    return request.client.host if request.client else "unknown"


SourceIp = Annotated[str, Depends(get_source_ip)]
