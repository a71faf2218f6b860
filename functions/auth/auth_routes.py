"""`/api/auth/*`: sign-up, login, token refresh, logout and the current user."""

import logging
from typing import Annotated, NoReturn

from fastapi import Body, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic.json_schema import SkipJsonSchema
from sqlalchemy.exc import IntegrityError

from auth_schemas import (
    AuthResponse,
    LoginRequest,
    LogoutRequest,
    RefreshRequest,
    SignupRequest,
    TokenResponse,
)
from auth_service import (
    add_user,
    find_user,
    release_login_attempt,
    reserve_login_attempt,
    revoke_sessions,
    rotate_refresh_token,
    start_session,
)
from taskapi.auth import AccessClaims, CurrentUser, SourceIp, unauthorized
from taskapi.db import SessionDep
from taskapi.factory import function_router
from taskapi.models import Detail, User, UserPublic, utcnow
from taskapi.openapi import error_responses, retry_after_header
from taskapi.passwords import verify_password
from taskapi.tokens import InvalidTokenError, TokenPair, decode_token

logger = logging.getLogger("taskapi.auth")

router = function_router(prefix="/api/auth", tags=["auth"])


# What each error status of the auth routes means (their OpenAPI descriptions).
UNAUTHORIZED = {
    status.HTTP_401_UNAUTHORIZED: "Missing, invalid, expired or revoked token or credentials"
}
INACTIVE = {status.HTTP_403_FORBIDDEN: "The account is inactive"}
REGISTERED = {status.HTTP_409_CONFLICT: "The email is already registered"}
LOCKED_OUT = {status.HTTP_429_TOO_MANY_REQUESTS: "Too many failed logins for this email"}
LOCKED_OUT_HEADERS = {
    status.HTTP_429_TOO_MANY_REQUESTS: retry_after_header("Seconds until the lockout ends")
}


def too_many_attempts(retry_after: int) -> NoReturn:
    """429 for an email locked out by failed logins (login and the password checks)."""
    logger.warning("refused: locked out", extra={"retry_after": retry_after})
    raise HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        "Too many failed login attempts; try again later",
        headers={"Retry-After": str(retry_after)},
    )


def auth_response(user: User, pair: TokenPair) -> AuthResponse:
    return AuthResponse.from_pair(pair, user=UserPublic.model_validate(user))


@router.post(
    "/signup",
    summary="Sign up (and log in)",
    status_code=status.HTTP_201_CREATED,
    response_model=AuthResponse,
    responses=error_responses(Detail, REGISTERED),
)
async def signup(body: SignupRequest, session: SessionDep) -> AuthResponse:
    """Create an account and log it in."""
    now = utcnow()
    try:
        user = add_user(session, body=body, now=now)
    except IntegrityError:
        # The unique index on the (lower-cased) email is the only constraint a new user
        # can break, and only it is race-free: two sign-ups at once both pass any check.
        raise HTTPException(
            status.HTTP_409_CONFLICT, "A user with this email already exists"
        ) from None
    pair = start_session(session, user_id=user.id, now=now)
    logger.info("signed up", extra={"user_id": str(user.id)})
    return auth_response(user, pair)


@router.post(
    "/login",
    summary="Log in",
    response_model=AuthResponse,
    responses=error_responses(
        Detail, UNAUTHORIZED | INACTIVE | LOCKED_OUT, headers=LOCKED_OUT_HEADERS
    ),
)
async def login(body: LoginRequest, session: SessionDep, source_ip: SourceIp) -> AuthResponse:
    """Exchange an email and password for a new session's tokens."""
    now = utcnow()
    # The attempt counts as a failure before bcrypt runs, and that count is committed at
    # once, ending the transaction early: simultaneous attempts cannot all slip under the
    # limit (docs/API.md), and no row lock is held through bcrypt.
    retry_after = reserve_login_attempt(session, email=body.email, source_ip=source_ip, now=now)
    session.commit()
    if retry_after:
        too_many_attempts(retry_after)
    user = find_user(session, email=body.email)
    # An unknown email is checked against a dummy hash, so it takes as long as a wrong
    # password, and both count towards the lockout: neither reveals whether it exists.
    password_ok = verify_password(body.password, user.hashed_password if user else None)
    if user is None or not password_ok:
        logger.info("login failed")
        unauthorized("Invalid email or password")
    release_login_attempt(session, email=body.email, source_ip=source_ip)
    if not user.is_active:
        # The right password's attempt is given back although the login is refused.
        session.commit()
        raise HTTPException(status.HTTP_403_FORBIDDEN, "This account is inactive")
    user.last_login_at = now
    session.add(user)
    pair = start_session(session, user_id=user.id, now=now)
    logger.info(
        "logged in",
        extra={"user_id": str(user.id), "session_id": str(pair.access.claims.session_id)},
    )
    return auth_response(user, pair)


@router.post(
    "/refresh",
    summary="Exchange a refresh token for a new pair",
    response_model=TokenResponse,
    responses=error_responses(Detail, UNAUTHORIZED),
)
async def refresh(body: RefreshRequest, session: SessionDep) -> TokenResponse:
    """Exchange a refresh token for a new pair; the presented token stops working."""
    try:
        claims = decode_token(body.refresh_token, expected_type="refresh")
    except InvalidTokenError:
        unauthorized("Invalid or expired refresh token")
    outcome = rotate_refresh_token(session, claims=claims, now=utcnow())
    if not isinstance(outcome, TokenPair):
        # A reused token's revocation must stick although the request is refused.
        session.commit()
        logger.warning(
            "refresh refused",
            extra={
                "reason": outcome.name,
                "user_id": str(claims.user_id),
                "session_id": str(claims.session_id),
            },
        )
        unauthorized(outcome.value)
    return TokenResponse.from_pair(outcome)


@router.post(
    "/logout",
    summary="Log out",
    response_model=Detail,
    responses=error_responses(Detail, UNAUTHORIZED),
)
async def logout(
    request: Request,
    user: CurrentUser,
    claims: AccessClaims,
    session: SessionDep,
    # Optional, so omitted rather than null: the None stays out of the document.
    body: Annotated[LogoutRequest | SkipJsonSchema[None], Body()] = None,
) -> Detail:
    """End the access token's session (and the refresh token's, if one is given)."""
    if body is None and (await request.body()).strip() == b"null":
        # FastAPI reads a JSON `null` as no body; the document allows an object or nothing.
        raise RequestValidationError(
            [{"type": "model_type", "loc": ("body",), "msg": "Input should be an object"}]
        )
    session_ids = {claims.session_id}
    if body is not None and body.refresh_token is not None:
        try:
            refresh_claims = decode_token(body.refresh_token, expected_type="refresh")
        except InvalidTokenError:
            unauthorized("Invalid or expired refresh token")
        if refresh_claims.user_id != user.id:
            unauthorized("Invalid or expired refresh token")
        session_ids.add(refresh_claims.session_id)
    revoke_sessions(session, user_id=user.id, session_ids=session_ids, now=utcnow())
    logger.info(
        "logged out",
        extra={"user_id": str(user.id), "session_ids": sorted(map(str, session_ids))},
    )
    return Detail(detail="Logged out")


@router.get(
    "/me",
    summary="The current user",
    response_model=UserPublic,
    responses=error_responses(Detail, UNAUTHORIZED),
)
async def get_me(user: CurrentUser) -> User:
    """The user the access token belongs to."""
    return user
