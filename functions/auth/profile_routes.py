"""`/api/auth/*` for what an account does by email, and its own records: the forgotten
password, the profile and email change, and the security log. Routes are `async def` for
the reason in the `taskapi` package docstring.

Mails go out after the commit, which these routes make themselves rather than leave to
the request's unit of work: a token in a mail always exists in the database, and no row
lock is held while a mail server answers. They go through `taskapi.mail`, which never
raises: an answer never depends on a mail server.
"""

import asyncio
import time
from typing import Annotated

from fastapi import HTTPException, Query, status
from sqlalchemy.exc import IntegrityError

from account_service import (
    count_reset_request,
    issue_account_token,
    list_events,
    redeem_account_token,
    reset_password,
)
from auth_common import (
    LOCKED_OUT_HEADERS,
    PASSWORD_CHECKED,
    REGISTERED,
    TOKEN_ERRORS,
    SecurityLogDep,
    confirm_password,
    logger,
)
from auth_schemas import (
    EmailChangeConfirm,
    EmailChangeRequest,
    PasswordResetConfirm,
    PasswordResetRequest,
    ProfileUpdate,
    SecurityEventPage,
    SecurityEventPublic,
)
from auth_service import find_user
from taskapi.auth import AccessClaims, CurrentUser, UserToChange, unauthorized
from taskapi.db import SessionDep
from taskapi.factory import function_router
from taskapi.mail import send_email
from taskapi.models import (
    AccountTokenPurpose,
    Detail,
    SecurityEventType,
    User,
    UserPublic,
    utcnow,
)
from taskapi.openapi import error_responses, retry_after_header
from taskapi.passwords import hash_password
from taskapi.settings import get_settings

router = function_router(prefix="/api/auth", tags=["auth"])

SAME_EMAIL = {status.HTTP_409_CONFLICT: "The new email is the account's email already"}

RESET_THROTTLED = {
    status.HTTP_429_TOO_MANY_REQUESTS: "Too many reset requests for this email or from this source"
}
RESET_THROTTLED_HEADERS = {
    status.HTTP_429_TOO_MANY_REQUESTS: retry_after_header("Seconds until a request is taken again")
}
RESET_ACCEPTED = "If an account has this email, a link to reset its password is on its way"


def link(path: str, token: str) -> str:
    """The line of a mail that carries its token: a link to the web app (PUBLIC_URL), or
    the token alone when there is none."""
    base = get_settings().link_base
    return f"{base}{path}?token={token}" if base else f"Your token: {token}"


# ---------------------------------------------------------------------------------------
# Forgotten password


@router.post(
    "/password-reset",
    summary="Ask for a password reset email",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Detail,
    responses=error_responses(Detail, RESET_THROTTLED, headers=RESET_THROTTLED_HEADERS),
)
async def request_password_reset(
    body: PasswordResetRequest, session: SessionDep, events: SecurityLogDep
) -> Detail:
    """Mail a single-use reset link if an account has this email. The answer, and its
    time, are the same either way."""
    started = time.monotonic()
    settings = get_settings()
    now = events.now
    retry_after = count_reset_request(
        session, email=body.email, source_ip=events.device.ip, now=now
    )
    if retry_after:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "Too many password reset requests; try again later",
            headers={"Retry-After": str(retry_after)},
        )
    user = find_user(session, email=body.email)
    token = None
    if user is not None and user.is_active:
        token = issue_account_token(
            session, user_id=user.id, purpose=AccountTokenPurpose.PASSWORD_RESET, now=now
        )
        events.record(SecurityEventType.PASSWORD_RESET_REQUESTED, user.id)
    # Committed before the mail goes out (the module docstring), and so that the
    # throttling rows are not held locked while a mail server answers.
    session.commit()
    if user is not None and token is not None:
        send_email(
            to=user.email,
            subject="Reset your Task API password",
            text=(
                f"Someone asked to reset the password of the Task API account {user.email}.\n\n"
                f"To choose a new one, open this link within "
                f"{settings.password_reset_minutes} minutes:\n\n"
                f"{link('/reset-password', token)}\n\n"
                "The link works once, and a newer request replaces it. If you did not ask, "
                "ignore this email: your password stays as it is.\n"
            ),
        )
    # Whatever happened, answer no sooner than PASSWORD_RESET_ANSWER_SECONDS after the
    # request arrived: the time must not tell whether a mail went out.
    await asyncio.sleep(settings.password_reset_answer_seconds - (time.monotonic() - started))
    return Detail(detail=RESET_ACCEPTED)


@router.post(
    "/password-reset/confirm",
    summary="Set a new password with the emailed token",
    response_model=Detail,
    responses=error_responses(
        Detail, {status.HTTP_401_UNAUTHORIZED: "The token is unknown, used, replaced or expired"}
    ),
)
async def confirm_password_reset(
    body: PasswordResetConfirm, session: SessionDep, events: SecurityLogDep
) -> Detail:
    """Set the new password; the token is used up, and every session of the user ends."""
    now = events.now
    # Hashed before the token's row is locked: bcrypt takes a while.
    hashed = hash_password(body.new_password)
    redeemed = redeem_account_token(
        session, token=body.token, purpose=AccountTokenPurpose.PASSWORD_RESET, now=now
    )
    if redeemed is None:
        unauthorized("Invalid, used or expired reset token; ask for a new one")
    reset_password(session, user_id=redeemed.user_id, hashed_password=hashed, now=now)
    events.record(SecurityEventType.PASSWORD_RESET, redeemed.user_id)
    logger.info("password reset", extra={"user_id": str(redeemed.user_id)})
    return Detail(detail="Password reset; log in with the new password")


# ---------------------------------------------------------------------------------------
# Profile and email change


@router.patch(
    "/me", summary="Change the profile", response_model=UserPublic, responses=TOKEN_ERRORS
)
async def update_me(body: ProfileUpdate, user: UserToChange, session: SessionDep) -> User:
    """Change the fields given (the name); absent ones stay as they are."""
    user.sqlmodel_update(body.model_dump(exclude_unset=True))
    user.updated_at = utcnow()
    session.add(user)
    return user


@router.post(
    "/email",
    summary="Ask to change the email",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Detail,
    responses=error_responses(
        Detail,
        PASSWORD_CHECKED
        | {status.HTTP_409_CONFLICT: "The new email is the account's email already"},
        headers=LOCKED_OUT_HEADERS,
    ),
)
async def request_email_change(
    body: EmailChangeRequest,
    user: UserToChange,
    claims: AccessClaims,
    session: SessionDep,
    events: SecurityLogDep,
) -> Detail:
    """Mail a confirmation link to the new address; the email changes once it is opened."""
    settings = get_settings()
    now = events.now
    confirm_password(events, user=user, password=body.password)
    if body.new_email == user.email:
        raise HTTPException(status.HTTP_409_CONFLICT, "This is already the account's email")
    token = issue_account_token(
        session,
        user_id=user.id,
        purpose=AccountTokenPurpose.EMAIL_CHANGE,
        now=now,
        new_email=body.new_email,
    )
    events.record(SecurityEventType.EMAIL_CHANGE_REQUESTED, user.id, session_id=claims.session_id)
    # Committed before the mail goes out (the module docstring).
    session.commit()
    send_email(
        to=body.new_email,
        subject="Confirm your new Task API email",
        text=(
            f"To make {body.new_email} the email of your Task API account, open this link "
            f"within {settings.email_change_minutes} minutes:\n\n"
            f"{link('/confirm-email', token)}\n\n"
            "If you did not ask for this, ignore this email.\n"
        ),
    )
    return Detail(detail="A confirmation link is on its way to the new address")


@router.post(
    "/email/confirm",
    summary="Confirm an email change with the emailed token",
    response_model=UserPublic,
    responses=error_responses(
        Detail,
        {status.HTTP_401_UNAUTHORIZED: "The token is unknown, used, replaced or expired"}
        | REGISTERED,
    ),
)
async def confirm_email_change(
    body: EmailChangeConfirm, session: SessionDep, events: SecurityLogDep
) -> User:
    """Move the account to the new email; the old address gets a notice."""
    now = events.now
    redeemed = redeem_account_token(
        session, token=body.token, purpose=AccountTokenPurpose.EMAIL_CHANGE, now=now
    )
    user = session.get(User, redeemed.user_id) if redeemed else None
    if redeemed is None or user is None or redeemed.new_email is None:
        unauthorized("Invalid, used or expired confirmation token; ask for a new one")
    old_email, user.email, user.updated_at = user.email, redeemed.new_email, now
    session.add(user)
    try:
        # The unique index decides, race-free: an account that took the address since
        # the request (or takes it now) wins. The token stays usable (rolled back).
        session.flush()
    except IntegrityError:
        raise HTTPException(
            status.HTTP_409_CONFLICT, "A user with this email already exists"
        ) from None
    events.record(SecurityEventType.EMAIL_CHANGED, user.id)
    # Committed before the notice goes out: the old address never hears of a change that
    # did not happen.
    session.commit()
    logger.info("email changed", extra={"user_id": str(user.id)})
    send_email(
        to=old_email,
        subject="Your Task API email was changed",
        text=(
            f"The email of your Task API account is now {user.email}, no longer this one.\n\n"
            "If you did not do this, reset your password with the new address at once, "
            "or contact support.\n"
        ),
    )
    return user


# ---------------------------------------------------------------------------------------
# The security log


Skip = Annotated[int, Query(ge=0, le=2**31 - 1, description="Events to skip")]
Limit = Annotated[int, Query(ge=1, le=100, description="Page size")]


@router.get("/events", summary="The caller's security log", responses=TOKEN_ERRORS)
async def list_security_events(
    user: CurrentUser, session: SessionDep, skip: Skip = 0, limit: Limit = 20
) -> SecurityEventPage:
    """Sign-ups, logins, failed logins, refresh-token reuse, password changes and resets,
    email changes, session revocations and logouts, newest first."""
    items, total = list_events(session, user_id=user.id, skip=skip, limit=limit)
    return SecurityEventPage(
        items=[SecurityEventPublic.model_validate(item) for item in items],
        total=total,
        skip=skip,
        limit=limit,
    )
