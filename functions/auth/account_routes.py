"""`/api/auth/*` for a logged-in user's account: change the password, list and revoke
sessions, delete the account. Routes are `async def` for the reason in the `taskapi`
package docstring."""

import uuid
from typing import Annotated

from fastapi import HTTPException, Path, Response, status

from auth_common import (
    PASSWORD_CHECK_ERRORS,
    TOKEN_ERRORS,
    UNAUTHORIZED,
    SecurityLogDep,
    confirm_password,
    logger,
)
from auth_schemas import AccountDeletionRequest, PasswordChangeRequest, SessionList, SessionPublic
from auth_service import (
    delete_user,
    live_sessions,
    revoke_sessions,
    set_password,
)
from taskapi.auth import (
    AccessClaims,
    CurrentUser,
    UserToChange,
    UserToDelete,
    unauthorized,
)
from taskapi.db import SessionDep
from taskapi.factory import function_router
from taskapi.models import Detail, SecurityEventType, utcnow
from taskapi.openapi import error_responses
from taskapi.passwords import hash_password

router = function_router(prefix="/api/auth", tags=["auth"])


@router.post("/password", response_model=Detail, responses=PASSWORD_CHECK_ERRORS)
async def change_password(
    body: PasswordChangeRequest,
    user: UserToChange,
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
        **TOKEN_ERRORS,
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
    responses=PASSWORD_CHECK_ERRORS,
)
async def delete_account(
    body: AccountDeletionRequest,
    user: UserToDelete,
    session: SessionDep,
    events: SecurityLogDep,
) -> Response:
    """Delete the account with its tasks and sessions, for good; the email is free again."""
    confirm_password(events, user=user, password=body.password)
    if not delete_user(session, user_id=user.id, email=user.email):
        unauthorized("Session expired or revoked")
    logger.info("account deleted", extra={"user_id": str(user.id)})
    return Response(status_code=status.HTTP_204_NO_CONTENT)
