"""What the auth function's route modules share: the logger, the meaning of each error
status (their OpenAPI descriptions), the lockout's 429, and the request's device and
security log as dependencies."""

import logging
from typing import Annotated, NoReturn

from fastapi import Depends, HTTPException, Request, status

from account_service import Device, SecurityLog
from taskapi.auth import SourceIp
from taskapi.db import SessionDep
from taskapi.models import utcnow
from taskapi.openapi import retry_after_header

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
