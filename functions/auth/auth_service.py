"""Data access for the auth function: users, sessions and login throttling.

The helpers take keyword-only arguments and never commit or roll back: each request is
one unit of work (`taskapi.db`). Writes that race (failed-login counting, refresh rotation)
are single atomic statements, never read-modify-write.
"""

import enum
import math
import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from taskapi.models import (
    ANY_SOURCE,
    LOGIN_SOURCE_MAX_LENGTH,
    AuthSession,
    LoginAttempt,
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


def start_session(session: Session, *, user_id: uuid.UUID, now: datetime) -> TokenPair:
    """Stage a new login session and return its first token pair."""
    session_id = uuid.uuid4()
    pair = issue_token_pair(user_id=user_id, session_id=session_id, now=now)
    session.add(
        AuthSession(
            id=session_id,
            user_id=user_id,
            refresh_jti=pair.refresh.claims.jti,
            created_at=now,
            expires_at=pair.refresh.claims.expires_at,
        )
    )
    return pair


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
        .values(refresh_jti=pair.refresh.claims.jti, expires_at=pair.refresh.claims.expires_at)
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


# First key of the advisory locks that serialise deletions of one account (the second is
# a hash of the user id); the two-key form never meets the migrations' one-key lock.
ACCOUNT_DELETION_LOCK = 17


def wait_for_other_deletions(session: Session, *, user_id: uuid.UUID) -> None:
    """On PostgreSQL, wait (until commit) for any other deletion of this account.

    Taken before the user row's share lock (`CurrentUser`): two deletions that both held
    it would each wait for the other's to lock the row FOR UPDATE, a deadlock. SQLite
    has one writer at a time already.
    """
    if session.get_bind().dialect.name == "postgresql":
        key = sa.func.hashtext(str(user_id))
        session.exec(select(sa.func.pg_advisory_xact_lock(ACCOUNT_DELETION_LOCK, key)))


def delete_user(session: Session, *, user_id: uuid.UUID, email: str) -> bool:
    """Delete the user and every row that names them, in the request's transaction;
    False if the user is already gone.

    The user row is locked first (FOR UPDATE on PostgreSQL; SQLite has one writer at a
    time anyway): a request of the user that already holds it (a task insert's
    foreign-key check takes a share lock) finishes first and its rows are deleted
    with the rest; one that comes later waits and then finds no user. Tables that
    reference the user carry `ON DELETE CASCADE`; rows that name the user without a
    foreign key (failed logins, keyed by email) are deleted here.
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
