"""`/api/auth/*` for a logged-in user's account: change the password, list and revoke
sessions, delete the account. Routes are `async def` for the reason given in
auth_routes.py."""

import logging
import uuid
from datetime import datetime
from typing import Annotated, Any

from auth_routes import errors, too_many_attempts
from auth_schemas import AccountDeletionRequest, PasswordChangeRequest, SessionList, SessionPublic
from auth_service import (
    delete_user,
    find_login,
    live_sessions,
    lockout_seconds,
    record_failed_login,
    revoke_sessions,
    set_password,
    wait_for_other_deletions,
)
from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response, status
from sqlmodel import Session

from taskapi.auth import AccessClaims, CurrentUser, get_current_user, unauthorized
from taskapi.db import SessionDep
from taskapi.models import Detail, User, utcnow
from taskapi.passwords import hash_password, verify_password

logger = logging.getLogger("taskapi.auth")

router = APIRouter(prefix="/api/auth", tags=["auth"])

WRONG_PASSWORD: dict[int | str, dict[str, Any]] = {
    status.HTTP_403_FORBIDDEN: {
        "model": Detail,
        "description": "The password is wrong (it counts as a failed login)",
    }
}


def confirm_password(
    session: Session, request: Request, *, user: User, password: str, now: datetime
) -> None:
    """Refuse a password re-entered for a sensitive change unless it is right: 429 while
    the email is locked out, as at login; 403 for a wrong one, counted as a failed login.

    The only place these routes touch login throttling. `request` is here for the
    source address (`requestContext.http.sourceIp`) that throttling per email and
    source, as version 2 of the contract has it, keys on.
    """
    _, attempt = find_login(session, email=user.email)
    retry_after = lockout_seconds(attempt, now=now)
    if retry_after:
        too_many_attempts(retry_after)
    if not verify_password(password, user.hashed_password):
        record_failed_login(session, email=user.email, now=now)
        session.commit()
        logger.info("password check failed", extra={"user_id": str(user.id)})
        raise HTTPException(status.HTTP_403_FORBIDDEN, "The password is wrong")


async def get_user_to_delete(session: SessionDep, claims: AccessClaims) -> User:
    """`CurrentUser`, once no other deletion of the account is under way (a second click
    of "delete" then finds no user: 401)."""
    wait_for_other_deletions(session, user_id=claims.user_id)
    return await get_current_user(session, claims)


@router.post(
    "/password",
    response_model=Detail,
    responses={
        **WRONG_PASSWORD,
        **errors(status.HTTP_401_UNAUTHORIZED, status.HTTP_429_TOO_MANY_REQUESTS),
    },
)
async def change_password(
    body: PasswordChangeRequest,
    user: CurrentUser,
    claims: AccessClaims,
    session: SessionDep,
    request: Request,
) -> Detail:
    """Set a new password; every other session of the user ends, this one stays."""
    now = utcnow()
    confirm_password(session, request, user=user, password=body.current_password, now=now)
    changed = set_password(
        session,
        user_id=user.id,
        hashed_password=hash_password(body.new_password),
        keep_session_id=claims.session_id,
        now=now,
    )
    if not changed:
        # The account was deleted or this session revoked while the request ran.
        session.rollback()
        unauthorized("Session expired or revoked")
    session.commit()
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
                    "operationRef": "#/paths/~1api~1auth~1sessions~1{session_id}/delete",
                    "parameters": {"session_id": "$response.body#/items/0/id"},
                    "description": "Revoke the newest session (the first listed)",
                }
            }
        },
        **errors(status.HTTP_401_UNAUTHORIZED),
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
            )
            for row in found
        ]
    )


@router.delete(
    "/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={
        status.HTTP_404_NOT_FOUND: {
            "model": Detail,
            "description": "No live session of the caller has this id",
        },
        **errors(status.HTTP_401_UNAUTHORIZED),
    },
)
async def revoke_session(
    session_id: Annotated[uuid.UUID, Path(description="A session id from GET /sessions")],
    user: CurrentUser,
    session: SessionDep,
) -> Response:
    """End one of the caller's sessions: its tokens get 401 from then on (the current one
    too: that is a logout)."""
    # Another user's session is 404 like an unknown one: a session id reveals nothing.
    if not revoke_sessions(session, user_id=user.id, session_ids={session_id}, now=utcnow()):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Session not found")
    session.commit()
    logger.info("session revoked", extra={"user_id": str(user.id), "session_id": str(session_id)})
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={
        **WRONG_PASSWORD,
        **errors(status.HTTP_401_UNAUTHORIZED, status.HTTP_429_TOO_MANY_REQUESTS),
    },
)
async def delete_account(
    body: AccountDeletionRequest,
    user: Annotated[User, Depends(get_user_to_delete)],
    session: SessionDep,
    request: Request,
) -> Response:
    """Delete the account with its tasks and sessions, for good; the email is free again."""
    confirm_password(session, request, user=user, password=body.password, now=utcnow())
    if not delete_user(session, user_id=user.id, email=user.email):
        session.rollback()
        unauthorized("Session expired or revoked")
    session.commit()
    logger.info("account deleted", extra={"user_id": str(user.id)})
    return Response(status_code=status.HTTP_204_NO_CONTENT)
