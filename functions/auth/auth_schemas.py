"""Request and response bodies of `/api/auth/*` (the user schemas are in the layer)."""

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, field_validator
from sqlmodel import SQLModel

from taskapi.emails import EMAIL_MAX_LENGTH, normalise_email
from taskapi.models import RequestModel, UserCreate, UserPublic, request_config
from taskapi.openapi import (
    EXAMPLE_EMAIL,
    EXAMPLE_NEW_PASSWORD,
    EXAMPLE_PASSWORD,
    RESPONSE_CONFIG,
)
from taskapi.rules import (
    NO_NUL_PATTERN,
    PASSWORD_MAX_BYTES,
    PASSWORD_MIN_LENGTH,
    fits_bcrypt,
    storable_text,
)
from taskapi.tokens import TokenPair

# A password that a body sets (sign-up, password change): the sign-up rules, in one place.
NewPassword = Annotated[
    str,
    Field(
        min_length=PASSWORD_MIN_LENGTH,
        # A character is at least one byte: 72 characters is the most that can fit.
        max_length=PASSWORD_MAX_BYTES,
        description="At least 8 characters and at most 72 bytes in UTF-8; no NUL character",
        json_schema_extra={"pattern": NO_NUL_PATTERN},
    ),
    AfterValidator(fits_bcrypt),
]
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


# Body of POST /api/auth/login. The email is not validated as an address: no account can
# have a malformed one, so it simply fails to log in.
class LoginRequest(RequestModel):
    model_config = request_config({"email": EXAMPLE_EMAIL, "password": EXAMPLE_PASSWORD})

    email: str = Field(
        min_length=1, max_length=EMAIL_MAX_LENGTH, json_schema_extra={"pattern": NO_NUL_PATTERN}
    )
    password: GivenPassword

    @field_validator("email")
    @classmethod
    def normalise_email(cls, value: str) -> str:
        # The sign-up rule's normalisation, so the same string finds the same account.
        return normalise_email(storable_text(value))


# Body of POST /api/auth/refresh.
class RefreshRequest(RequestModel):
    model_config = request_config(
        {"refresh_token": "the refresh_token of a sign-up, login or refresh"}
    )

    refresh_token: str


# Optional body of POST /api/auth/logout: a refresh token whose session ends too.
class LogoutRequest(RequestModel):
    model_config = request_config({})

    refresh_token: str | None = None


# Body of POST /api/auth/password.
class PasswordChangeRequest(RequestModel):
    model_config = request_config(
        {"current_password": EXAMPLE_PASSWORD, "new_password": EXAMPLE_NEW_PASSWORD}
    )

    current_password: GivenPassword
    new_password: NewPassword


# Body of DELETE /api/auth/me: the password, so that a stolen access token alone
# cannot delete the account.
class AccountDeletionRequest(RequestModel):
    # The password the password change's example sets: "Try it out" runs that one first.
    model_config = request_config({"password": EXAMPLE_NEW_PASSWORD})

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


# What signup and login return: the user and a token pair.
class AuthResponse(TokenResponse):
    user: UserPublic
