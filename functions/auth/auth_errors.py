"""What the auth function's routes answer in common: the logger, the meaning of each
error status (their OpenAPI descriptions), and the lockout's 429."""

import logging
from typing import NoReturn

from fastapi import HTTPException, status

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
