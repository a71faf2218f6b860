"""`CurrentUser`: the user behind a valid access token of a live session.

One query loads the user and checks the session together, so a logged-out session's
access token is refused at once, at no extra cost per request.
"""

from datetime import UTC, datetime
from typing import Annotated, NoReturn

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import col, select

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


# `async def` although nothing here awaits: FastAPI would run a plain `def` dependency in
# a worker thread, which costs more than the work itself (docs/PERFORMANCE.md).
async def get_access_claims(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> TokenClaims:
    if credentials is None:
        unauthorized("Not authenticated")
    try:
        return decode_token(credentials.credentials, expected_type="access")
    except InvalidTokenError:
        unauthorized("Invalid or expired token")


AccessClaims = Annotated[TokenClaims, Depends(get_access_claims)]


async def get_current_user(session: SessionDep, claims: AccessClaims) -> User:
    user = session.exec(
        select(User)
        .join(AuthSession, col(AuthSession.user_id) == col(User.id))
        .where(
            User.id == claims.user_id,
            AuthSession.id == claims.session_id,
            col(AuthSession.revoked_at).is_(None),
            col(AuthSession.expires_at) > datetime.now(UTC),
        )
    ).first()
    if user is None:
        unauthorized("Session expired or revoked")
    if not user.is_active:
        unauthorized("Account is inactive")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]
