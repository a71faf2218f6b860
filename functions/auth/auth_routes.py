"""`/api/auth/*`: sign-up, login, token refresh, logout and the current user."""

from typing import Annotated

from fastapi import Body, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic.json_schema import SkipJsonSchema
from sqlalchemy.exc import IntegrityError

from auth_common import (
    INACTIVE,
    LOCKED_OUT,
    LOCKED_OUT_HEADERS,
    REGISTERED,
    TOKEN_ERRORS,
    UNAUTHORIZED,
    SecurityLogDep,
    logger,
    too_many_attempts,
)
from auth_schemas import (
    AuthResponse,
    LoginRequest,
    LogoutRequest,
    RefreshRequest,
    SignupRequest,
    TokenResponse,
)
from auth_service import (
    RefreshFailure,
    add_device,
    add_user,
    find_device,
    find_user,
    lock_user_for_login,
    record_login,
    release_device_attempt,
    release_login_attempt,
    reserve_device_attempt,
    reserve_login_attempt,
    revoke_sessions,
    rotate_refresh_token,
    start_session,
)
from taskapi.auth import AccessClaims, CurrentUser, unauthorized
from taskapi.db import SessionDep
from taskapi.factory import function_router
from taskapi.models import Detail, SecurityEventType, User, UserPublic
from taskapi.openapi import error_responses
from taskapi.passwords import hash_password, needs_rehash, verify_password
from taskapi.tokens import InvalidTokenError, TokenPair, decode_token

router = function_router(prefix="/api/auth", tags=["auth"])


def auth_response(
    user: User, pair: TokenPair, device_token: str, **changed: object
) -> AuthResponse:
    """The answer of a sign-up or login; `changed` holds what the request wrote to the user
    row by a statement (the ORM object still has the values it read)."""
    public = UserPublic.model_validate(user).model_copy(update=changed)
    return AuthResponse.from_pair(pair, user=public, device_token=device_token)


@router.post(
    "/signup",
    summary="Sign up (and log in)",
    status_code=status.HTTP_201_CREATED,
    response_model=AuthResponse,
    responses=error_responses(Detail, REGISTERED),
)
async def signup(body: SignupRequest, session: SessionDep, events: SecurityLogDep) -> AuthResponse:
    """Create an account and log it in."""
    now = events.now
    try:
        user = add_user(session, body=body, now=now)
    except IntegrityError:
        # The unique index on the (lower-cased) email is the only constraint a new user
        # can break, and only it is race-free: two sign-ups at once both pass any check.
        raise HTTPException(
            status.HTTP_409_CONFLICT, "A user with this email already exists"
        ) from None
    pair = start_session(
        session, user_id=user.id, password_hash=user.hashed_password, now=now, device=events.device
    )
    if pair is None:  # the user was made by this very transaction
        raise RuntimeError("a new user's session was not written")
    device_token = add_device(session, user_id=user.id, now=now)
    events.record(SecurityEventType.SIGNUP, user.id, session_id=pair.access.claims.session_id)
    logger.info("signed up", extra={"user_id": str(user.id)})
    return auth_response(user, pair, device_token)


@router.post(
    "/login",
    summary="Log in",
    response_model=AuthResponse,
    responses=error_responses(
        Detail, UNAUTHORIZED | INACTIVE | LOCKED_OUT, headers=LOCKED_OUT_HEADERS
    ),
)
async def login(body: LoginRequest, session: SessionDep, events: SecurityLogDep) -> AuthResponse:
    """Exchange an email and password for a new session's tokens."""
    now = events.now
    # A known device of this account counts its own failures alone; any other login
    # counts towards its source's and the email's limits (docs/API.md, "Known devices").
    device_id = (
        find_device(session, token=body.device_token, email=body.email)
        if body.device_token
        else None
    )
    # The attempt counts as a failure before bcrypt runs, and that count is committed at
    # once, ending the transaction early: simultaneous attempts cannot all slip under the
    # limit (docs/API.md), and no row lock is held through bcrypt.
    if device_id is not None:
        retry_after = reserve_device_attempt(session, device_id=device_id, now=now)
    else:
        retry_after = reserve_login_attempt(
            session, email=body.email, source_ip=events.device.ip, now=now
        )
    session.commit()
    if retry_after:
        too_many_attempts(retry_after)
    user = find_user(session, email=body.email)
    # An unknown email is checked against a dummy hash, so it takes as long as a wrong
    # password, and both count towards the lockout: neither reveals whether it exists.
    password_ok = verify_password(body.password, user.hashed_password if user else None)
    if user is None or not password_ok:
        if user is not None:
            # The known user's log keeps the failure although the request is refused.
            events.record(SecurityEventType.LOGIN_FAILED, user.id)
            session.commit()
        logger.info("login failed")
        unauthorized("Invalid email or password")
    verified_hash = user.hashed_password
    # Made before any row is locked: bcrypt takes a quarter of a second.
    new_hash = hash_password(body.password) if needs_rehash(verified_hash) else None
    # From here the user row is locked, and the session is only written if the verified
    # hash is still the user's: a password change that commits meanwhile ends this login.
    if not lock_user_for_login(session, user_id=user.id, password_hash=verified_hash):
        logger.info("login failed: the password changed meanwhile")
        unauthorized("Invalid email or password")
    if device_id is not None:
        release_device_attempt(session, device_id=device_id, now=now)
    else:
        release_login_attempt(session, email=body.email, source_ip=events.device.ip)
    if not user.is_active:
        # The right password's attempt is given back although the login is refused.
        session.commit()
        raise HTTPException(status.HTTP_403_FORBIDDEN, "This account is inactive")
    recorded = record_login(
        session, user_id=user.id, verified_hash=verified_hash, new_hash=new_hash, now=now
    )
    pair = (
        start_session(
            session,
            user_id=user.id,
            password_hash=new_hash or verified_hash,
            now=now,
            device=events.device,
        )
        if recorded
        else None
    )
    if pair is None:
        logger.info("login failed: the password changed meanwhile")
        unauthorized("Invalid email or password")
    device_token = body.device_token if device_id is not None else None
    if device_token is None:
        device_token = add_device(session, user_id=user.id, now=now)
    events.record(SecurityEventType.LOGIN, user.id, session_id=pair.access.claims.session_id)
    logger.info(
        "logged in",
        extra={"user_id": str(user.id), "session_id": str(pair.access.claims.session_id)},
    )
    return auth_response(user, pair, device_token, last_login_at=now)


@router.post(
    "/refresh",
    summary="Exchange a refresh token for a new pair",
    response_model=TokenResponse,
    responses=TOKEN_ERRORS,
)
async def refresh(
    body: RefreshRequest, session: SessionDep, events: SecurityLogDep
) -> TokenResponse:
    """Exchange a refresh token for a new pair; the presented token stops working."""
    try:
        claims = decode_token(body.refresh_token, expected_type="refresh")
    except InvalidTokenError:
        unauthorized("Invalid or expired refresh token")
    now = events.now
    outcome = rotate_refresh_token(session, claims=claims, now=now)
    if outcome is RefreshFailure.TOKEN_REUSED:
        events.record(
            SecurityEventType.REFRESH_TOKEN_REUSED, claims.user_id, session_id=claims.session_id
        )
    if not isinstance(outcome, TokenPair):
        # A reused token's revocation, and its event, must stick although the request is
        # refused.
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


@router.post("/logout", summary="Log out", response_model=Detail, responses=TOKEN_ERRORS)
async def logout(
    request: Request,
    user: CurrentUser,
    claims: AccessClaims,
    session: SessionDep,
    events: SecurityLogDep,
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
    now = events.now
    revoke_sessions(session, user_id=user.id, session_ids=session_ids, now=now)
    events.record(SecurityEventType.LOGOUT, user.id, session_id=claims.session_id)
    logger.info(
        "logged out",
        extra={"user_id": str(user.id), "session_ids": sorted(map(str, session_ids))},
    )
    return Detail(detail="Logged out")


@router.get("/me", summary="The current user", response_model=UserPublic, responses=TOKEN_ERRORS)
async def get_me(user: CurrentUser) -> User:
    """The user the access token belongs to."""
    return user
