"""What the auth function's route modules share: the logger, the meaning of each error
status (their OpenAPI descriptions), the lockout's 429, the request's device and
security log as dependencies, and the password check of a sensitive change."""

import logging
from typing import Annotated, NoReturn

from fastapi import Depends, HTTPException, Request, status

from account_service import Device, SecurityLog
from auth_service import release_login_attempt, reserve_login_attempt
from taskapi.auth import SourceIp
from taskapi.db import SessionDep
from taskapi.models import Detail, SecurityEventType, User, utcnow
from taskapi.openapi import error_responses, retry_after_header
from taskapi.passwords import verify_password

logger = logging.getLogger("taskapi.auth")

UNAUTHORIZED = {
    status.HTTP_401_UNAUTHORIZED: "Missing, invalid, expired or revoked token or credentials"
}
INACTIVE = {status.HTTP_403_FORBIDDEN: "The account is inactive"}
REGISTERED = {status.HTTP_409_CONFLICT: "The email is already registered"}
LOCKED_OUT = {status.HTTP_429_TOO_MANY_REQUESTS: "Too many failed logins for this email"}
LOCKED_OUT_HEADERS = {
    status.HTTP_429_TOO_MANY_REQUESTS: retry_after_header("Seconds until the lockout ends")
}
# The responses of a route whose only error of its own is a refused token.
TOKEN_ERRORS = error_responses(Detail, UNAUTHORIZED)


def too_many_attempts(retry_after: int) -> NoReturn:
    """429 for an email locked out by failed logins (login and the password checks)."""
    logger.warning("refused: locked out", extra={"retry_after": retry_after})
    raise HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        "Too many failed login attempts; try again later",
        headers={"Retry-After": str(retry_after)},
    )


async def get_device(request: Request, source_ip: SourceIp) -> Device:
    """The request's source address and User-Agent, as sessions and events keep them."""
    return Device.of(ip=source_ip, user_agent=request.headers.get("user-agent"))


DeviceDep = Annotated[Device, Depends(get_device)]


async def get_security_log(session: SessionDep, device: DeviceDep) -> SecurityLog:
    """The request's security log: its transaction, device and time."""
    return SecurityLog(session=session, device=device, now=utcnow())


SecurityLogDep = Annotated[SecurityLog, Depends(get_security_log)]


WRONG_PASSWORD = {status.HTTP_403_FORBIDDEN: "The password is wrong (it counts as a failed login)"}
# What a route that asks for the password again (`confirm_password`) may answer.
PASSWORD_CHECKED = WRONG_PASSWORD | UNAUTHORIZED | LOCKED_OUT
PASSWORD_CHECK_ERRORS = error_responses(Detail, PASSWORD_CHECKED, headers=LOCKED_OUT_HEADERS)


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
