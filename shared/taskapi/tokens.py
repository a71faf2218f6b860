"""Every use of the JWT library (PyJWT) is in this module, so it can be swapped in one place.

Tokens carry `sub` (user id), `type` (`access` or `refresh`), `jti`, `iat`, `exp` and `sid`
(the session id), and their header the `kid` of the key that signed them: new tokens use
the key ring's current key, and a token of any key in the ring is accepted until it
expires, so keys rotate without logging anyone out (`taskapi.settings.KeyRing`).
Decoding allows exactly the configured algorithm, requires every claim, and checks the
token type, so a refresh token is never accepted as an access token or the other way
round.

Whatever bytes a client sends, decoding ends in a `TokenClaims` or an `InvalidTokenError`:
the token's size and alphabet are checked before any decoding, and any exception the
library raises on the unverified parts (a header nested past the recursion limit, a
timestamp of `Infinity`) counts as an invalid token, never as a server error.

An access token comes back on every request of its life, so a container remembers the
ones it has verified (`VERIFIED_TOKENS`), as Envoy's JWT filter and API Gateway's
authorizer cache do: a token met again is accepted without verifying it again only if it
is the same text, was verified by the same key ring and algorithm as are in use now, and
has not expired. Its session is still checked in the database on every request
(`taskapi.auth`), so logging out or revoking a session takes effect at once.
"""

import base64
import json
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import jwt

from taskapi import state
from taskapi.settings import DEFAULT_KID, KeyRing, get_jwt_keys, get_settings

TokenType = Literal["access", "refresh"]
REQUIRED_CLAIMS = ("sub", "type", "jti", "iat", "exp", "sid")
JTI_MAX_LENGTH = 64
# The tokens this module issues are about 350 characters; a longer one is not ours, and
# is refused before the library spends time or memory on it.
TOKEN_MAX_LENGTH = 2048
# Three base64url segments (compact JWS), nothing else.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# Tolerated clock difference for `iat`; a token issued further in the future is forged.
CLOCK_SKEW = timedelta(seconds=30)


class InvalidTokenError(Exception):
    """The token is malformed, forged, expired, of the wrong type, or lacks a claim."""


@dataclass(frozen=True)
class TokenClaims:
    user_id: uuid.UUID
    session_id: uuid.UUID
    token_type: TokenType
    jti: str
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class IssuedToken:
    token: str
    claims: TokenClaims


def issue_token(
    *,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    token_type: TokenType,
    lifetime: timedelta,
    now: datetime | None = None,
) -> IssuedToken:
    issued_at = (now or datetime.now(UTC)).replace(microsecond=0)
    claims = TokenClaims(
        user_id=user_id,
        session_id=session_id,
        token_type=token_type,
        jti=uuid.uuid4().hex,
        issued_at=issued_at,
        expires_at=issued_at + lifetime,
    )
    payload = {
        "sub": str(user_id),
        "sid": str(session_id),
        "type": token_type,
        "jti": claims.jti,
        "iat": int(issued_at.timestamp()),
        "exp": int(claims.expires_at.timestamp()),
    }
    key = get_jwt_keys().current
    token = jwt.encode(
        payload, key.key, algorithm=get_settings().jwt_algorithm, headers={"kid": key.kid}
    )
    return IssuedToken(token=token, claims=claims)


@dataclass(frozen=True)
class TokenPair:
    """What login, signup and refresh hand out: both tokens of one session."""

    access: IssuedToken
    refresh: IssuedToken

    @property
    def expires_in(self) -> int:
        """Seconds the access token lives."""
        return int((self.access.claims.expires_at - self.access.claims.issued_at).total_seconds())


def issue_token_pair(
    *, user_id: uuid.UUID, session_id: uuid.UUID, now: datetime | None = None
) -> TokenPair:
    """An access and a refresh token for the session, with the configured lifetimes."""
    settings = get_settings()
    now = now or datetime.now(UTC)
    return TokenPair(
        access=issue_token(
            user_id=user_id,
            session_id=session_id,
            token_type="access",  # noqa: S106 (a token type, no secret)
            lifetime=timedelta(minutes=settings.access_token_expire_minutes),
            now=now,
        ),
        refresh=issue_token(
            user_id=user_id,
            session_id=session_id,
            token_type="refresh",  # noqa: S106
            lifetime=timedelta(days=settings.refresh_token_expire_days),
            now=now,
        ),
    )


class VerifiedTokens:
    """Access tokens this container has verified, by their exact text, each with the key
    ring and algorithm that verified it: verifying one again with PyJWT cost a tenth of
    a warm list request.

    Only a token that passed every check gets in, so a client cannot fill it with
    tokens of its own making; it holds at most `size` of them, the oldest leaving first.
    A hit is an exact match of the whole text, so a token that differs in one character,
    signature included, is verified in full.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._tokens: dict[str, tuple[TokenClaims, KeyRing, str]] = {}
        # Only for adding and evicting; a lookup is one atomic `dict.get`.
        self._lock = threading.Lock()

    def get(self, token: str, keys: KeyRing, algorithm: str) -> TokenClaims | None:
        entry = self._tokens.get(token)
        if entry is None:
            return None
        claims, verified_by, verified_with = entry
        # A ring that lost the token's key (a rotation) or another algorithm: verify
        # again, which refuses it; an expired token goes the same way.
        if verified_with != algorithm or verified_by != keys:
            return None
        if datetime.now(UTC) >= claims.expires_at:
            return None
        return claims

    def add(self, token: str, claims: TokenClaims, keys: KeyRing, algorithm: str) -> None:
        with self._lock:
            while len(self._tokens) >= self.size:
                del self._tokens[next(iter(self._tokens))]
            self._tokens[token] = (claims, keys, algorithm)

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()

    def __len__(self) -> int:
        return len(self._tokens)


# About 1 KiB each (the text and its claims): a warm container serving a thousand users
# whose tokens are all alive holds about 1 MiB.
VERIFIED_TOKENS = VerifiedTokens(size=1024)
# A token's entry names the key ring that verified it: a rotated ring verifies it afresh.
state.register(VERIFIED_TOKENS.clear, kept_on_restore=True)


def decode_token(token: str, *, expected_type: TokenType) -> TokenClaims:
    """Verify the signature, expiry and claims; raise `InvalidTokenError` on any doubt.
    An access token this container verified before is accepted from `VERIFIED_TOKENS`
    while it has not expired and the key ring and algorithm are those that verified it."""
    keys, algorithm = get_jwt_keys(), get_settings().jwt_algorithm
    if expected_type == "access":
        claims = VERIFIED_TOKENS.get(token, keys, algorithm)
        if claims is not None:
            return claims
    claims = _verify(token, expected_type, keys, algorithm)
    # Refresh tokens are used once each (rotation), so remembering them would only evict
    # access tokens.
    if expected_type == "access":
        VERIFIED_TOKENS.add(token, claims, keys, algorithm)
    return claims


def _verify(token: str, expected_type: TokenType, keys: KeyRing, algorithm: str) -> TokenClaims:
    if len(token) > TOKEN_MAX_LENGTH or not _COMPACT_JWS.fullmatch(token):
        raise InvalidTokenError("not a compact JWS of a plausible size")
    try:
        # The key is found by the header's `kid` (unverified, so it only picks a key of
        # the ring); a token from before tokens had one was signed by the default key.
        kid = _unverified_header(token).get("kid", DEFAULT_KID)
        key = keys.find(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidTokenError("signed by a key this service does not have")
        payload: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[algorithm],
            options={"require": ["sub", "jti", "iat", "exp"]},
        )
    # Any failure of the library on attacker-controlled input is an invalid token: its
    # own errors, and whatever else its parsing lets through (RecursionError,
    # OverflowError, ...). Only a token that decoded without error goes further.
    except InvalidTokenError:
        raise
    except Exception as error:
        raise InvalidTokenError(f"{type(error).__name__}: {error}") from error
    if not isinstance(payload, dict):
        raise InvalidTokenError("the payload is not a JSON object")
    return _claims(payload, expected_type)


def _unverified_header(token: str) -> dict[str, Any]:
    """The header, only to pick the key by: `jwt.decode` reads and checks it again.
    PyJWT's `get_unverified_header` would decode and check every segment, as `decode` does
    next, for a third of the decoding's time; the token's size
    and alphabet are already checked."""
    segment = token.partition(".")[0]
    header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    if not isinstance(header, dict):
        raise InvalidTokenError("the header is not a JSON object")
    return header


def _claims(payload: dict[str, Any], expected_type: TokenType) -> TokenClaims:
    missing = [claim for claim in REQUIRED_CLAIMS if claim not in payload]
    if missing:
        raise InvalidTokenError(f"missing claims: {', '.join(missing)}")
    if payload["type"] != expected_type:
        raise InvalidTokenError(f"expected a {expected_type} token")
    jti, iat, exp = payload["jti"], payload["iat"], payload["exp"]
    if not isinstance(jti, str) or not 0 < len(jti) <= JTI_MAX_LENGTH:
        raise InvalidTokenError("malformed jti")
    if not all(_is_timestamp(value) for value in (iat, exp)):
        raise InvalidTokenError("malformed timestamps")
    sub, sid = payload["sub"], payload["sid"]
    if not isinstance(sub, str) or not isinstance(sid, str):
        raise InvalidTokenError("malformed sub or sid")
    try:
        claims = TokenClaims(
            user_id=uuid.UUID(sub),
            session_id=uuid.UUID(sid),
            token_type=expected_type,
            jti=jti,
            issued_at=datetime.fromtimestamp(iat, UTC),
            expires_at=datetime.fromtimestamp(exp, UTC),
        )
    except (ValueError, OverflowError, OSError) as error:
        raise InvalidTokenError("malformed claims") from error
    if claims.issued_at > datetime.now(UTC) + CLOCK_SKEW:
        raise InvalidTokenError("issued in the future")
    return claims


# Seconds since the epoch that a datetime can hold (years 1 to 9999), as an int.
_TIMESTAMP_RANGE = range(-62135596800, 253402300800)


def _is_timestamp(value: Any) -> bool:
    # `bool` is an `int`; floats (and so NaN and Infinity) are never issued by this module.
    return isinstance(value, int) and not isinstance(value, bool) and value in _TIMESTAMP_RANGE
