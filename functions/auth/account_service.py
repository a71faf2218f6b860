"""Data access for the account's own records: the security log, the tokens that emails
carry (password reset, email change), and the throttling of reset requests.

As in `auth_service`, the helpers take keyword-only arguments and never commit or roll
back (the request's unit of work, `taskapi.db`): an event is written in the transaction
of what it records, so a login that does not commit leaves no "login" event.
"""

import hashlib
import math
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, func, select

from taskapi.models import (
    LOGIN_SOURCE_MAX_LENGTH,
    USER_AGENT_MAX_LENGTH,
    AccountToken,
    AccountTokenPurpose,
    AuthSession,
    LoginAttempt,
    SecurityEvent,
    SecurityEventType,
    User,
    UTCDateTime,
)
from taskapi.settings import get_settings

# ---------------------------------------------------------------------------------------
# The device a request comes from


@dataclass(frozen=True)
class Device:
    """Where a request comes from, as a session and the security log keep it."""

    ip: str
    user_agent: str | None

    @classmethod
    def of(cls, *, ip: str, user_agent: str | None) -> "Device":
        # Cut to the columns' lengths; NUL removed (PostgreSQL text cannot hold it, and a
        # header is the client's to fill).
        agent = user_agent.replace("\x00", "")[:USER_AGENT_MAX_LENGTH] if user_agent else None
        return cls(ip=ip[:LOGIN_SOURCE_MAX_LENGTH], user_agent=agent or None)


# ---------------------------------------------------------------------------------------
# The security log


@dataclass(frozen=True)
class SecurityLog:
    """The security log as one request writes it: in the request's transaction, with
    its device and time, so an event commits with what it records or not at all."""

    session: Session
    device: Device
    now: datetime

    def record(
        self, type: SecurityEventType, user_id: uuid.UUID, *, session_id: uuid.UUID | None = None
    ) -> None:
        """Stage one entry of the user's log (committed with the request)."""
        self.session.add(
            SecurityEvent(
                user_id=user_id,
                type=type,
                created_at=self.now,
                ip=self.device.ip,
                user_agent=self.device.user_agent,
                session_id=session_id,
            )
        )


def list_events(
    session: Session, *, user_id: uuid.UUID, skip: int, limit: int
) -> tuple[list[SecurityEvent], int]:
    """A page of the user's events, newest first, and how many there are in all."""
    mine = col(SecurityEvent.user_id) == user_id
    total = session.exec(select(func.count()).select_from(SecurityEvent).where(mine)).one()
    items = session.exec(
        select(SecurityEvent)
        .where(mine)
        .order_by(col(SecurityEvent.created_at).desc(), col(SecurityEvent.id).desc())
        .offset(skip)
        .limit(limit)
    ).all()
    return list(items), total


# ---------------------------------------------------------------------------------------
# Emailed tokens: random, stored as their SHA-256, one per user and purpose, single use


def token_hash(token: str) -> str:
    # SHA-256 rather than bcrypt: the token is 256 random bits, so there is nothing to
    # guess, and the lookup by hash must be one indexed equality.
    return hashlib.sha256(token.encode()).hexdigest()


def issue_account_token(
    session: Session,
    *,
    user_id: uuid.UUID,
    purpose: AccountTokenPurpose,
    now: datetime,
    new_email: str | None = None,
) -> str:
    """A new token for the user and purpose, valid PASSWORD_RESET_MINUTES or
    EMAIL_CHANGE_MINUTES; it replaces any earlier one (which stops working). Returns the
    token itself, which only the email carries."""
    settings = get_settings()
    minutes = (
        settings.password_reset_minutes
        if purpose is AccountTokenPurpose.PASSWORD_RESET
        else settings.email_change_minutes
    )
    token = secrets.token_urlsafe(32)
    values = {
        "user_id": user_id,
        "purpose": purpose,
        "token_hash": token_hash(token),
        "new_email": new_email,
        "created_at": now,
        "expires_at": now + timedelta(minutes=minutes),
    }
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(AccountToken).values(values)
    session.exec(
        statement.on_conflict_do_update(
            index_elements=["user_id", "purpose"],
            set_={name: statement.excluded[name] for name in values if name != "user_id"},
        )
    )
    return token


@dataclass(frozen=True)
class RedeemedToken:
    user_id: uuid.UUID
    new_email: str | None


def redeem_account_token(
    session: Session, *, token: str, purpose: AccountTokenPurpose, now: datetime
) -> RedeemedToken | None:
    """Use a token up: one DELETE decides, so of two confirmations at once exactly one
    finds the row (the other waits for its lock, then finds nothing). None if the token
    is unknown, used, replaced by a newer one, or expired."""
    row = session.exec(
        sa.delete(AccountToken)
        .where(
            col(AccountToken.token_hash) == token_hash(token),
            col(AccountToken.purpose) == purpose,
            col(AccountToken.expires_at) > now,
        )
        .returning(col(AccountToken.user_id), col(AccountToken.new_email))
    ).first()
    return RedeemedToken(user_id=row[0], new_email=row[1]) if row else None


# ---------------------------------------------------------------------------------------
# Password reset


def reset_password(
    session: Session, *, user_id: uuid.UUID, hashed_password: str, now: datetime
) -> None:
    """Store the new hash and end every session of the user.

    The user row is updated first: a login that is about to write its session holds that
    row's lock (`auth_service.lock_verified_password`) and either commits before this
    UPDATE (and its session, committed by then, is revoked by the next statement) or
    finds the new hash once this commits (and writes no session).
    """
    session.exec(
        sa.update(User)
        .where(col(User.id) == user_id)
        .values(hashed_password=hashed_password, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.exec(
        sa.update(AuthSession)
        .where(col(AuthSession.user_id) == user_id, col(AuthSession.revoked_at).is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )


# The rows of `login_attempt` that count reset requests: per email (this source), and per
# source IP (this email, which no address can be).
RESET_PER_EMAIL_SOURCE = "reset:*"
RESET_PER_SOURCE_EMAIL = "*"
RESET_SOURCE_PREFIX = "reset:"


def count_reset_request(session: Session, *, email: str, source_ip: str, now: datetime) -> int:
    """Count a reset request for the email and for the source, in the login throttle's
    table; 0 if it may go on, else the seconds until the busier counter's window ends.

    Each counter is one upsert, which the database serialises per row, so simultaneous
    requests are counted exactly. A refused request is rolled back with its route and
    does not count.
    """
    settings = get_settings()
    window = timedelta(minutes=settings.login_lockout_minutes)
    source = (RESET_SOURCE_PREFIX + source_ip)[:LOGIN_SOURCE_MAX_LENGTH]
    counters = [
        (email, RESET_PER_EMAIL_SOURCE, settings.password_reset_max_per_email),
        (RESET_PER_SOURCE_EMAIL, source, settings.password_reset_max_per_source),
    ]
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    now_value = sa.literal(now, UTCDateTime())
    run_over = col(LoginAttempt.first_failed_at) <= now - window
    waits = [0]
    for key, row_source, limit in counters:
        statement = insert(LoginAttempt).values(
            email=key, source=row_source, failed_count=1, first_failed_at=now, last_failed_at=now
        )
        count, first = session.exec(
            statement.on_conflict_do_update(
                index_elements=["email", "source"],
                set_={
                    "failed_count": sa.case(
                        (run_over, 1), else_=col(LoginAttempt.failed_count) + 1
                    ),
                    "first_failed_at": sa.case(
                        (run_over, now_value), else_=col(LoginAttempt.first_failed_at)
                    ),
                    "last_failed_at": now_value,
                },
            ).returning(col(LoginAttempt.failed_count), col(LoginAttempt.first_failed_at))
        ).one()
        if count > limit:
            waits.append(max(1, math.ceil((first + window - now).total_seconds())))
    return max(waits)
