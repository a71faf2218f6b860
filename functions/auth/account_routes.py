"""`/api/auth/*` for a logged-in user's account: change the password, list and revoke
sessions, delete the account. Routes are `async def` for the reason in the `taskapi`
package docstring."""

import uuid
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Response, status

from account_service import SecurityLog
from auth_common import (
    LOCKED_OUT,
    LOCKED_OUT_HEADERS,
    UNAUTHORIZED,
    SecurityLogDep,
    logger,
    too_many_attempts,
)
from auth_schemas import AccountDeletionRequest, PasswordChangeRequest, SessionList, SessionPublic
from auth_service import (
    delete_user,
    live_sessions,
    release_login_attempt,
    reserve_login_attempt,
    revoke_sessions,
    set_password,
)
from taskapi.auth import (
    AccessClaims,
    CurrentUser,
    get_user_to_change,
    get_user_to_delete,
    unauthorized,
)
from taskapi.db import SessionDep
from taskapi.factory import function_router
from taskapi.models import Detail, SecurityEventType, User, utcnow
from taskapi.openapi import error_responses
from taskapi.passwords import hash_password, verify_password

router = function_router(prefix="/api/auth", tags=["auth"])

WRONG_PASSWORD = {status.HTTP_403_FORBIDDEN: "The password is wrong (it counts as a failed login)"}


def confirm_password(events: SecurityLog, *, user: User, password: str) -> None:
    """Refuse a password re-entered for a sensitive change unless it is right: 429 while
    the email is locked out from this source, as at login; 403 for a wrong one, counted
    as a failed login. The only place these routes touch login throttling.

    The attempt is reserved as login reserves it (`reserve_login_attempt`), but inside
    the route's transaction rather than committed before bcrypt: the route's dependency
    (`get_user_to_change`, `get_user_to_delete`) holds the user's row lock until it
    commits, taken before these login-attempt rows, as every path takes them. A wrong
    password commits the failure before answering; a right one gives the attempt back,
    committed with the change itself.
    """
    session, now = events.session, events.now
    retry_after = reserve_login_attempt(
        session, email=user.email, source_ip=events.device.ip, now=now
    )
    if retry_after:
        too_many_attempts(retry_after)
    if not verify_password(password, user.hashed_password):
        # The failure stays counted, and logged, although the request is refused.
        events.record(SecurityEventType.LOGIN_FAILED, user.id)
        session.commit()
        logger.info("password check failed", extra={"user_id": str(user.id)})
        raise HTTPException(status.HTTP_403_FORBIDDEN, "The password is wrong")
    release_login_attempt(session, email=user.email, source_ip=events.device.ip)


@router.post(
    "/password",
    response_model=Detail,
    responses=error_responses(
        Detail, WRONG_PASSWORD | UNAUTHORIZED | LOCKED_OUT, headers=LOCKED_OUT_HEADERS
    ),
)
async def change_password(
    body: PasswordChangeRequest,
    user: Annotated[User, Depends(get_user_to_change)],
    claims: AccessClaims,
    session: SessionDep,
    events: SecurityLogDep,
) -> Detail:
    """Set a new password; every other session of the user ends, this one stays."""
    now = events.now
    confirm_password(events, user=user, password=body.current_password)
    changed = set_password(
        session,
        user_id=user.id,
        hashed_password=hash_password(body.new_password),
        keep_session_id=claims.session_id,
        now=now,
    )
    if not changed:
        # The account was deleted or this session revoked while the request ran.
        unauthorized("Session expired or revoked")
    events.record(SecurityEventType.PASSWORD_CHANGED, user.id, session_id=claims.session_id)
    logger.info(
        "password changed",
        extra={"user_id": str(user.id), "session_id": str(claims.session_id)},
    )
    return Detail(detail="Password changed")


@router.get(
    "/sessions",
    response_model=SessionList,
    responses={
        status.HTTP_200_OK: {
            # For clients and stateful API testing: a listed id is what revoke takes.
            "links": {
                "RevokeNewestSession": {
                    # By id: a JSON pointer to the path would hold `{`/`}`, which a URI
                    # reference may not (Spectral's oas3-schema).
                    "operationId": "revokeSession",
                    "parameters": {"session_id": "$response.body#/items/0/id"},
                    "description": "Revoke the newest session (the first listed)",
                }
            }
        },
        **error_responses(Detail, UNAUTHORIZED),
    },
)
async def list_sessions(
    user: CurrentUser, claims: AccessClaims, session: SessionDep
) -> SessionList:
    """The caller's live sessions (not revoked, not expired), newest first."""
    found = live_sessions(session, user_id=user.id, now=utcnow())
    return SessionList(
        items=[
            SessionPublic(
                id=row.id,
                created_at=row.created_at,
                expires_at=row.expires_at,
                current=row.id == claims.session_id,
                ip=row.ip,
                user_agent=row.user_agent,
                last_used_at=row.last_used_at,
            )
            for row in found
        ]
    )


@router.delete(
    "/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={
        **error_responses(
            Detail,
            {status.HTTP_404_NOT_FOUND: "No live session of the caller has this id"} | UNAUTHORIZED,
        ),
    },
)
async def revoke_session(
    session_id: Annotated[uuid.UUID, Path(description="A session id from GET /sessions")],
    user: CurrentUser,
    session: SessionDep,
    events: SecurityLogDep,
) -> Response:
    """End one of the caller's sessions: its tokens get 401 from then on (the current one
    too: that is a logout)."""
    now = events.now
    # Another user's session is 404 like an unknown one: a session id reveals nothing.
    if not revoke_sessions(session, user_id=user.id, session_ids={session_id}, now=now):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Session not found")
    events.record(SecurityEventType.SESSION_REVOKED, user.id, session_id=session_id)
    logger.info("session revoked", extra={"user_id": str(user.id), "session_id": str(session_id)})
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(
        Detail, WRONG_PASSWORD | UNAUTHORIZED | LOCKED_OUT, headers=LOCKED_OUT_HEADERS
    ),
)
async def delete_account(
    body: AccountDeletionRequest,
    user: Annotated[User, Depends(get_user_to_delete)],
    session: SessionDep,
    events: SecurityLogDep,
) -> Response:
    """Delete the account with its tasks and sessions, for good; the email is free again."""
    confirm_password(events, user=user, password=body.password)
    if not delete_user(session, user_id=user.id, email=user.email):
        unauthorized("Session expired or revoked")
    logger.info("account deleted", extra={"user_id": str(user.id)})
    return Response(status_code=status.HTTP_204_NO_CONTENT)
