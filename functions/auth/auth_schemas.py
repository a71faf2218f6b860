"""Request and response bodies of `/api/auth/*` (the user schemas are in the layer)."""

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, StringConstraints, field_validator
from pydantic.json_schema import SkipJsonSchema
from sqlmodel import SQLModel

from taskapi.emails import EMAIL_MAX_LENGTH, normalise_email, signup_email
from taskapi.models import (
    NAME_MAX_LENGTH,
    NewPassword,
    RequestModel,
    SecurityEventType,
    UserBase,
    UserCreate,
    UserPublic,
    trimmed_text_schema,
    with_examples,
)
from taskapi.openapi import (
    EXAMPLE_EMAIL,
    EXAMPLE_NEW_PASSWORD,
    EXAMPLE_PASSWORD,
    RESPONSE_CONFIG,
)
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


# An email that a body presents to find an account (login, password reset). Not validated
# as an address: no account can have a malformed one, so it simply finds none.
GivenEmail = Annotated[
    str,
    Field(min_length=1, max_length=EMAIL_MAX_LENGTH, json_schema_extra={"pattern": NO_NUL_PATTERN}),
    # The sign-up rule's normalisation, so the same string finds the same account.
    AfterValidator(lambda value: normalise_email(storable_text(value))),
]
# A token that an email carried (password reset, email change).
EmailedToken = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        description="The token from the email's link (`?token=...`)",
    ),
]


# Body of POST /api/auth/signup: the layer's `UserCreate` (its rules are the sign-up's),
# under the name the API documents.
class SignupRequest(UserCreate):
    pass


# Longer than any token the server issues (43 characters), short enough to hash at once.
DEVICE_TOKEN_MAX_LENGTH = 128


# Body of POST /api/auth/login.
class LoginRequest(RequestModel):
    model_config = with_examples({"email": EXAMPLE_EMAIL, "password": EXAMPLE_PASSWORD})

    email: GivenEmail
    password: GivenPassword
    device_token: str | None = Field(
        default=None,
        max_length=DEVICE_TOKEN_MAX_LENGTH,
        description="The `device_token` this device got at an earlier login or sign-up: "
        "the login is then limited only by this device's own failed attempts",
    )


# Body of POST /api/auth/refresh.
class RefreshRequest(RequestModel):
    model_config = with_examples(
        {"refresh_token": "the refresh_token of a sign-up, login or refresh"}
    )

    refresh_token: str


# Optional body of POST /api/auth/logout: a refresh token whose session ends too.
class LogoutRequest(RequestModel):
    model_config = with_examples({})

    refresh_token: str | None = None


# Body of POST /api/auth/password.
class PasswordChangeRequest(RequestModel):
    model_config = with_examples(
        {"current_password": EXAMPLE_PASSWORD, "new_password": EXAMPLE_NEW_PASSWORD}
    )

    current_password: GivenPassword
    new_password: NewPassword


# Body of DELETE /api/auth/me: the password, so that a stolen access token alone
# cannot delete the account.
class AccountDeletionRequest(RequestModel):
    # The password the password change's example sets: "Try it out" runs that one first.
    model_config = with_examples({"password": EXAMPLE_NEW_PASSWORD})

    password: GivenPassword


# Body of POST /api/auth/password-reset.
class PasswordResetRequest(RequestModel):
    model_config = with_examples({"email": EXAMPLE_EMAIL})

    email: GivenEmail


# Body of POST /api/auth/password-reset/confirm.
class PasswordResetConfirm(RequestModel):
    model_config = with_examples(
        {"token": "the-token-from-the-email", "new_password": EXAMPLE_NEW_PASSWORD}
    )

    token: EmailedToken
    new_password: NewPassword


# A name that PATCH /api/auth/me sets: the sign-up's limits, on `str` itself (on the
# optional field's union they would also meet the None).
ProfileName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=NAME_MAX_LENGTH),
    Field(json_schema_extra=trimmed_text_schema(NAME_MAX_LENGTH)),
]


# Body of PATCH /api/auth/me: the fields to change (absent: unchanged; null: 422).
class ProfileUpdate(RequestModel):
    model_config = with_examples({"name": "Ada Lovelace"})

    name: ProfileName | SkipJsonSchema[None] = Field(
        default=None, description=UserBase.model_fields["name"].description
    )

    @field_validator("name", mode="before")
    @classmethod
    def strip_name(cls, value: Any) -> Any:
        if value is None:
            # Absent means "leave as is"; an explicit null would blank a required column.
            raise ValueError("may be omitted but not null")
        return value.strip() if isinstance(value, str) else value

    _name = field_validator("name")(storable_text)


# Body of POST /api/auth/email: the password again, so that a stolen access token alone
# cannot move the account to another address.
class EmailChangeRequest(RequestModel):
    model_config = with_examples(
        {"password": EXAMPLE_PASSWORD, "new_email": "ada.lovelace@example.com"}
    )

    password: GivenPassword
    new_email: str = Field(
        max_length=EMAIL_MAX_LENGTH,
        description=UserBase.model_fields["email"].description,
        json_schema_extra=UserBase.model_fields["email"].json_schema_extra,
    )

    # The sign-up rule: a bare address, normalised.
    _email = field_validator("new_email")(signup_email)


# Body of POST /api/auth/email/confirm.
class EmailChangeConfirm(RequestModel):
    model_config = with_examples({"token": "the-token-from-the-email"})

    token: EmailedToken


# One of the caller's live sessions (a login, or the sign-up's session), with the device
# it was opened from.
class SessionPublic(SQLModel):
    model_config = RESPONSE_CONFIG  # type: ignore[assignment]

    id: uuid.UUID
    created_at: datetime
    expires_at: datetime = Field(description="When it ends unless refreshed again")
    current: bool = Field(description="Whether this request's access token belongs to it")
    ip: str | None = Field(description="The source address of the login")
    user_agent: str | None = Field(description="The login's User-Agent (first 256 characters)")
    last_used_at: datetime | None = Field(description="The last login or refresh")


# One entry of the caller's security log.
class SecurityEventPublic(SQLModel):
    model_config = RESPONSE_CONFIG  # type: ignore[assignment]

    id: uuid.UUID
    type: SecurityEventType
    created_at: datetime
    ip: str | None
    user_agent: str | None
    session_id: uuid.UUID | None = Field(description="The session it concerns, if any")


# What GET /api/auth/events returns: a page of the caller's security log, newest first.
class SecurityEventPage(SQLModel):
    model_config = RESPONSE_CONFIG  # type: ignore[assignment]

    items: list[SecurityEventPublic]
    total: int
    skip: int
    limit: int


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
