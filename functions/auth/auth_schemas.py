"""Request and response bodies of `/api/auth/*` (the user schemas are in the layer)."""

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, field_validator
from sqlmodel import SQLModel

from taskapi.emails import EMAIL_MAX_LENGTH, normalise_email
from taskapi.models import NewPassword, RequestModel, UserCreate, UserPublic
from taskapi.openapi import RESPONSE_CONFIG
from taskapi.rules import (
    NO_NUL_PATTERN,
    PASSWORD_MAX_BYTES,
    fits_bcrypt,
    storable_text,
)
from taskapi.tokens import TokenPair

# A password that a body presents to be checked: anything bcrypt can take. One that
# could never have been set is refused as input rather than checked.
GivenPassword = Annotated[
    str,
    Field(
        max_length=PASSWORD_MAX_BYTES,
        description="At most 72 bytes in UTF-8; no NUL character",
        json_schema_extra={"pattern": NO_NUL_PATTERN},
    ),
    AfterValidator(fits_bcrypt),
]


# Body of POST /api/auth/signup: the layer's `UserCreate` (its rules are the sign-up's),
# under the name the API documents.
class SignupRequest(UserCreate):
    pass


# Longer than any token the server issues (43 characters), short enough to hash at once.
DEVICE_TOKEN_MAX_LENGTH = 128


# Body of POST /api/auth/login. The email is not validated as an address: no account can
# have a malformed one, so it simply fails to log in.
class LoginRequest(RequestModel):
    email: str = Field(
        min_length=1, max_length=EMAIL_MAX_LENGTH, json_schema_extra={"pattern": NO_NUL_PATTERN}
    )
    password: GivenPassword
    device_token: str | None = Field(
        default=None,
        max_length=DEVICE_TOKEN_MAX_LENGTH,
        description="The `device_token` this device got at an earlier login or sign-up: "
        "the login is then limited only by this device's own failed attempts",
    )

    @field_validator("email")
    @classmethod
    def normalise_email(cls, value: str) -> str:
        # The sign-up rule's normalisation, so the same string finds the same account.
        return normalise_email(storable_text(value))


# Body of POST /api/auth/refresh.
class RefreshRequest(RequestModel):
    refresh_token: str


# Optional body of POST /api/auth/logout: a refresh token whose session ends too.
class LogoutRequest(RequestModel):
    refresh_token: str | None = None


# Body of POST /api/auth/password.
class PasswordChangeRequest(RequestModel):
    current_password: GivenPassword
    new_password: NewPassword


# Body of DELETE /api/auth/me: the password, so that a stolen access token alone
# cannot delete the account.
class AccountDeletionRequest(RequestModel):
    password: GivenPassword


# One of the caller's live sessions (a login, or the sign-up's session).
class SessionPublic(SQLModel):
    model_config = RESPONSE_CONFIG  # type: ignore[assignment]

    id: uuid.UUID
    created_at: datetime
    expires_at: datetime = Field(description="When it ends unless refreshed again")
    current: bool = Field(description="Whether this request's access token belongs to it")


# What GET /api/auth/sessions returns: the caller's live sessions, newest first.
class SessionList(SQLModel):
    model_config = RESPONSE_CONFIG  # type: ignore[assignment]

    items: list[SessionPublic]


# The token pair that signup, login and refresh return.
class TokenResponse(SQLModel):
    model_config = RESPONSE_CONFIG  # type: ignore[assignment]

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"]
    expires_in: int = Field(description="Seconds until the access token expires")

    @classmethod
    def from_pair(cls, pair: TokenPair, **extra: Any) -> Self:
        return cls(
            access_token=pair.access.token,
            refresh_token=pair.refresh.token,
            token_type="bearer",  # noqa: S106 (the OAuth token type, no secret)
            expires_in=pair.expires_in,
            **extra,
        )


# What signup and login return: the user, a token pair and the device's token.
class AuthResponse(TokenResponse):
    user: UserPublic
    device_token: str = Field(
        description="Keep it on this device and send it with every later login: a login "
        "that presents it is not locked out by other sources' failed attempts"
    )
