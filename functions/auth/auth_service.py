"""Data access for the auth function: users, sessions and login throttling.

The helpers take keyword-only arguments and never commit or roll back: each request is
one unit of work (`taskapi.db`). Writes that race (failed-login counting, refresh rotation)
are single atomic statements, never read-modify-write.
"""

import enum
import hashlib
import math
import secrets
import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from account_service import Device
from taskapi.models import (
    ANY_SOURCE,
    LOGIN_SOURCE_MAX_LENGTH,
    AuthSession,
    LoginAttempt,
    LoginDevice,
    User,
    UserCreate,
    UTCDateTime,
)
from taskapi.passwords import hash_password
from taskapi.settings import get_settings
from taskapi.tokens import TokenClaims, TokenPair, issue_token_pair

# ---------------------------------------------------------------------------------------
# Users and sessions


def add_user(session: Session, *, body: UserCreate, now: datetime) -> User:
    """Insert a new user (uncommitted); a taken email raises `IntegrityError` here.

    Flushed at once because sessions reference it and the unit of work does not order
    tables that have no relationship between them.
    """
    user = User.model_validate(
        body,
        update={
            "hashed_password": hash_password(body.password),
            "created_at": now,
            "updated_at": now,
        },
    )
    session.add(user)
    session.flush()
    return user


def start_session(
    session: Session, *, user_id: uuid.UUID, password_hash: str, now: datetime, device: Device
) -> TokenPair | None:
    """Stage a new login session, on this device, and return its first token pair; None if
    `password_hash`
    is no longer the user's (or the user is gone or inactive).

    One INSERT ... SELECT checks the hash the caller verified and writes the session: a
    password change that committed after the check (at any moment, on SQLite as on
    PostgreSQL) leaves no session of the old password behind, because the statement sees
    it, or it comes later and revokes the session with every other one.
    """
    session_id = uuid.uuid4()
    pair = issue_token_pair(user_id=user_id, session_id=session_id, now=now)
    table = AuthSession.__table__  # type: ignore[attr-defined]
    values = {
        "id": session_id,
        "user_id": user_id,
        "refresh_jti": pair.refresh.claims.jti,
        "created_at": now,
        "expires_at": pair.refresh.claims.expires_at,
        "ip": device.ip,
        "user_agent": device.user_agent,
        "last_used_at": now,
    }
    still_current = (
        select(User.id)
        .where(
            col(User.id) == user_id,
            col(User.hashed_password) == password_hash,
            col(User.is_active).is_(True),
        )
        .exists()
    )
    row = sa.select(
        *(sa.literal(value, table.c[name].type).label(name) for name, value in values.items())
    ).where(still_current)
    inserted = session.exec(sa.insert(table).from_select(list(values), row))
    return pair if inserted.rowcount == 1 else None


def lock_user_for_login(session: Session, *, user_id: uuid.UUID, password_hash: str) -> bool:
    """Lock the user row for the rest of the login (FOR NO KEY UPDATE on PostgreSQL), if its
    hash is still the one the login verified; False if a password change came first.

    Taken before any login-attempt or device row: every path that touches a user row and
    its throttling rows takes the user row first (password change and account deletion
    lock it in their dependency), so no two of them wait on each other in a cycle.
    """
    found = session.exec(
        select(User.id)
        .where(col(User.id) == user_id, col(User.hashed_password) == password_hash)
        .with_for_update(key_share=True)
    ).first()
    return found is not None


def record_login(
    session: Session,
    *,
    user_id: uuid.UUID,
    verified_hash: str,
    new_hash: str | None,
    now: datetime,
) -> bool:
    """Note the login's time on the user row and, when `new_hash` is given (the stored
    cost is not `BCRYPT_ROUNDS`), store it in place of the verified hash; False if the
    password changed or the user went away meanwhile."""
    values: dict[str, object] = {"last_login_at": now}
    if new_hash is not None:
        values["hashed_password"] = new_hash
    updated = session.exec(
        sa.update(User)
        .where(col(User.id) == user_id, col(User.hashed_password) == verified_hash)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(updated.rowcount == 1)


class RefreshFailure(enum.Enum):
    # The session is revoked or expired, or its user was deactivated.
    SESSION_ENDED = "Session expired or revoked"
    # The token was already exchanged: whoever presents it now may have stolen it.
    TOKEN_REUSED = "Refresh token already used; the session has been revoked"  # noqa: S105


def rotate_refresh_token(
    session: Session, *, claims: TokenClaims, now: datetime
) -> TokenPair | RefreshFailure:
    """Swap the session's refresh token for a new pair, or say why not.

    One conditional UPDATE decides: of several requests presenting the same token at
    once, exactly one matches `refresh_jti`; the others find it changed and count as
    reuse. Each refresh also extends the session (it lives as long as its newest
    refresh token).
    """
    pair = issue_token_pair(user_id=claims.user_id, session_id=claims.session_id, now=now)
    user_is_active = (
        select(User.id).where(User.id == claims.user_id, col(User.is_active).is_(True)).exists()
    )
    rotated = session.exec(
        sa.update(AuthSession)
        .where(
            col(AuthSession.id) == claims.session_id,
            col(AuthSession.user_id) == claims.user_id,
            col(AuthSession.refresh_jti) == claims.jti,
            col(AuthSession.revoked_at).is_(None),
            col(AuthSession.expires_at) > now,
            user_is_active,
        )
        .values(
            refresh_jti=pair.refresh.claims.jti,
            expires_at=pair.refresh.claims.expires_at,
            last_used_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if rotated.rowcount == 1:
        return pair
    # Not rotated: if the session is live but holds another refresh token, this one was
    # already used, so end the session, as OAuth's security best practice for
    # refresh token rotation asks.
    revoked = session.exec(
        sa.update(AuthSession)
        .where(
            col(AuthSession.id) == claims.session_id,
            col(AuthSession.user_id) == claims.user_id,
            col(AuthSession.refresh_jti) != claims.jti,
            col(AuthSession.revoked_at).is_(None),
        )
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    return RefreshFailure.TOKEN_REUSED if revoked.rowcount else RefreshFailure.SESSION_ENDED


def revoke_sessions(
    session: Session, *, user_id: uuid.UUID, session_ids: set[uuid.UUID], now: datetime
) -> int:
    """End the user's live sessions among `session_ids`; returns how many were live."""
    result = session.exec(
        sa.update(AuthSession)
        .where(
            col(AuthSession.id).in_(session_ids),
            col(AuthSession.user_id) == user_id,
            col(AuthSession.revoked_at).is_(None),
            col(AuthSession.expires_at) > now,
        )
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


def live_sessions(session: Session, *, user_id: uuid.UUID, now: datetime) -> list[AuthSession]:
    """The user's sessions that are neither revoked nor expired, newest first."""
    return list(
        session.exec(
            select(AuthSession)
            .where(
                col(AuthSession.user_id) == user_id,
                col(AuthSession.revoked_at).is_(None),
                col(AuthSession.expires_at) > now,
            )
            .order_by(col(AuthSession.created_at).desc(), col(AuthSession.id).desc())
        ).all()
    )


def set_password(
    session: Session,
    *,
    user_id: uuid.UUID,
    hashed_password: str,
    keep_session_id: uuid.UUID,
    now: datetime,
) -> bool:
    """Store a new hash and revoke every other session of the user, in the request's
    transaction; False if the user or the kept session ended meanwhile (the route refuses,
    and the request's rollback undoes the writes).

    The UPDATE of the user row comes first: it serialises concurrent changes of one
    user's password, and the check of the kept session, a statement after it, sees
    what a change that committed first revoked (READ COMMITTED), so of two sessions
    changing the password at once the second one finds itself revoked.
    """
    updated = session.exec(
        sa.update(User)
        .where(col(User.id) == user_id)
        .values(hashed_password=hashed_password, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if updated.rowcount != 1:
        return False
    session.exec(
        sa.update(AuthSession)
        .where(
            col(AuthSession.user_id) == user_id,
            col(AuthSession.id) != keep_session_id,
            col(AuthSession.revoked_at).is_(None),
        )
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    kept = session.exec(
        select(AuthSession.id).where(
            col(AuthSession.id) == keep_session_id,
            col(AuthSession.revoked_at).is_(None),
            col(AuthSession.expires_at) > now,
        )
    ).first()
    return kept is not None


def delete_user(session: Session, *, user_id: uuid.UUID, email: str) -> bool:
    """Delete the user and every row that names them, in the request's transaction;
    False if the user is already gone.

    The user row is locked FOR UPDATE (on PostgreSQL; SQLite has one writer at a time
    anyway), as the route's dependency already did: a request of the user that already
    holds it (a task insert's foreign-key check takes a share lock) finishes first and
    its rows are deleted with the rest; one that comes later waits and then finds no
    user. Tables that reference the user carry `ON DELETE CASCADE`; rows that name the
    user without a foreign key (failed logins, keyed by email) are deleted here.
    """
    locked = session.exec(select(User.id).where(User.id == user_id).with_for_update()).first()
    if locked is None:
        return False
    session.exec(sa.delete(LoginAttempt).where(col(LoginAttempt.email) == email))
    session.exec(
        sa.delete(User).where(col(User.id) == user_id).execution_options(synchronize_session=False)
    )
    return True


# ---------------------------------------------------------------------------------------
# Login and its throttling


def find_user(session: Session, *, email: str) -> User | None:
    """The user with this (normalised) email, if any."""
    return session.exec(select(User).where(col(User.email) == email)).first()


def reserve_login_attempt(session: Session, *, email: str, source_ip: str, now: datetime) -> int:
    """Count a login attempt as a failure before its password is checked; 0 if it may go on,
    else the seconds until the email may try again from this source.

    One statement upserts both counters, the (email, source) one and the email's one
    across sources (`ANY_SOURCE`), each only while it is below its limit
    (`LOGIN_MAX_ATTEMPTS`, `LOGIN_MAX_ATTEMPTS_PER_EMAIL`), and returns the rows it
    changed. The database serialises the upserts of one row, so of any number of
    simultaneous attempts at most the limit get through. A refused attempt changes
    nothing: it neither counts nor extends the lockout. The caller commits at once (the
    row locks must not be held through bcrypt) and takes the reservation back with
    `release_login_attempt` if the password was right.
    """
    settings = get_settings()
    window_start = now - timedelta(minutes=settings.login_lockout_minutes)
    source = source_ip[:LOGIN_SOURCE_MAX_LENGTH]
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    now_value = sa.literal(now, UTCDateTime())
    count = col(LoginAttempt.failed_count)
    limit = sa.case(
        (col(LoginAttempt.source) == ANY_SOURCE, settings.login_max_attempts_per_email),
        else_=settings.login_max_attempts,
    )
    # A run of failures starts afresh once its first failure has left the window; a
    # lockout lasts the window from the failure that reached the limit.
    locked = sa.and_(count >= limit, col(LoginAttempt.last_failed_at) > window_start)
    run_expired = col(LoginAttempt.first_failed_at) <= window_start
    first = {"failed_count": 1, "first_failed_at": now, "last_failed_at": now}
    statement = insert(LoginAttempt).values(
        [
            {"email": email, "source": source, **first},
            {"email": email, "source": ANY_SOURCE, **first},
        ]
    )
    reserved: list[str] = session.scalars(
        statement.on_conflict_do_update(
            index_elements=["email", "source"],
            set_={
                "failed_count": sa.case((run_expired, 1), else_=count + 1),
                "first_failed_at": sa.case(
                    (run_expired, now_value), else_=col(LoginAttempt.first_failed_at)
                ),
                "last_failed_at": now_value,
            },
            where=sa.not_(locked),
        ).returning(col(LoginAttempt.source))
    ).all()  # type: ignore[assignment]
    if len(reserved) == 2:
        return 0
    if reserved:
        # One counter is at its limit: take back the other's increment (in this
        # transaction, without a rollback that would drop the caller's other work).
        _decrement(session, email=email, sources=reserved)
    return _retry_after(session, email=email, source=source, now=now)


def _decrement(session: Session, *, email: str, sources: list[str]) -> None:
    session.exec(
        sa.update(LoginAttempt)
        .where(
            col(LoginAttempt.email) == email,
            col(LoginAttempt.source).in_(sources),
            col(LoginAttempt.failed_count) > 0,
        )
        .values(failed_count=col(LoginAttempt.failed_count) - 1)
        .execution_options(synchronize_session=False)
    )


def _retry_after(session: Session, *, email: str, source: str, now: datetime) -> int:
    settings = get_settings()
    lockout = timedelta(minutes=settings.login_lockout_minutes)
    rows = session.exec(
        select(LoginAttempt).where(
            col(LoginAttempt.email) == email, col(LoginAttempt.source).in_([source, ANY_SOURCE])
        )
    ).all()
    waits = [
        math.ceil((row.last_failed_at + lockout - now).total_seconds())
        for row in rows
        if row.failed_count
        >= (
            settings.login_max_attempts_per_email
            if row.source == ANY_SOURCE
            else settings.login_max_attempts
        )
    ]
    # At least a second: the attempt was refused, so the client must wait.
    return max([1, *waits])


def release_login_attempt(session: Session, *, email: str, source_ip: str) -> None:
    """Take back a reservation whose password was right: the source's run of failures
    ends, and the email's count across sources drops by this attempt."""
    source = source_ip[:LOGIN_SOURCE_MAX_LENGTH]
    session.exec(
        sa.delete(LoginAttempt).where(
            col(LoginAttempt.email) == email, col(LoginAttempt.source) == source
        )
    )
    _decrement(session, email=email, sources=[ANY_SOURCE])


# ---------------------------------------------------------------------------------------
# Known devices


def _device_token_hash(token: str) -> str:
    # The token is 256 random bits: a fast hash is enough (nothing to guess offline).
    return hashlib.sha256(token.encode()).hexdigest()


def add_device(session: Session, *, user_id: uuid.UUID, now: datetime) -> str:
    """Stage a new known device of the user; its token, which only the client keeps."""
    token = secrets.token_urlsafe(32)
    session.add(
        LoginDevice(
            user_id=user_id, token_hash=_device_token_hash(token), created_at=now, last_used_at=now
        )
    )
    return token


def find_device(session: Session, *, token: str, email: str) -> uuid.UUID | None:
    """The id of the known device with this token, if it belongs to the account of this
    (normalised) email; a token of another account counts as none."""
    found: uuid.UUID | None = session.exec(
        select(LoginDevice.id)
        .join(User, col(User.id) == col(LoginDevice.user_id))
        .where(col(LoginDevice.token_hash) == _device_token_hash(token), col(User.email) == email)
    ).first()
    return found


def reserve_device_attempt(session: Session, *, device_id: uuid.UUID, now: datetime) -> int:
    """`reserve_login_attempt` for a known device: its own count of failures alone, up to
    `LOGIN_MAX_ATTEMPTS` in the lockout window; 0 if it may go on, else the seconds until
    it may try again. One conditional UPDATE, so simultaneous attempts cannot all slip
    under the limit."""
    settings = get_settings()
    lockout = timedelta(minutes=settings.login_lockout_minutes)
    window_start = now - lockout
    now_value = sa.literal(now, UTCDateTime())
    count = col(LoginDevice.failed_count)
    first = col(LoginDevice.first_failed_at)
    locked = sa.and_(
        count >= settings.login_max_attempts, col(LoginDevice.last_failed_at) > window_start
    )
    run_expired = sa.or_(first.is_(None), first <= window_start)
    reserved = session.exec(
        sa.update(LoginDevice)
        .where(col(LoginDevice.id) == device_id, sa.not_(locked))
        .values(
            failed_count=sa.case((run_expired, 1), else_=count + 1),
            first_failed_at=sa.case((run_expired, now_value), else_=first),
            last_failed_at=now_value,
        )
        .execution_options(synchronize_session=False)
    )
    if reserved.rowcount == 1:
        return 0
    last_failed_at = session.exec(
        select(LoginDevice.last_failed_at).where(col(LoginDevice.id) == device_id)
    ).first()
    if last_failed_at is None:
        return 1
    return max(1, math.ceil((last_failed_at + lockout - now).total_seconds()))


def release_device_attempt(session: Session, *, device_id: uuid.UUID, now: datetime) -> None:
    """Take back a reservation whose password was right: the device's run of failures
    ends, and it counts as used (the maintenance run forgets devices long unused)."""
    session.exec(
        sa.update(LoginDevice)
        .where(col(LoginDevice.id) == device_id)
        .values(failed_count=0, first_failed_at=None, last_failed_at=None, last_used_at=now)
        .execution_options(synchronize_session=False)
    )
