"""The engine, the models and the schema on real SQLite and PostgreSQL."""

import time
from datetime import UTC, datetime
from typing import Any

import psycopg2.extensions
import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select

import taskapi.db
from taskapi.db import get_engine, open_read_connection, open_session
from taskapi.models import Task, TaskCreate, TaskStatus, TaskUpdate, User, UserCreate
from taskapi.settings import get_settings
from tests.support.database import Database
from tests.support.environment import configure


def make_user(session: Session, email: str = "ada@example.com") -> User:
    user = User(email=email, name="Ada", hashed_password="not-a-real-hash")
    session.add(user)
    session.commit()
    return user


def test_deleting_a_user_deletes_their_tasks(db: Database) -> None:
    with Session(get_engine()) as session:
        ada, bob = make_user(session), make_user(session, "bob@example.com")
        session.add_all([Task(user_id=ada.id, title=f"t{i}") for i in range(3)])
        session.add(Task(user_id=bob.id, title="bob's"))
        session.commit()
        session.delete(ada)
        session.commit()

    # The database itself cascades (ON DELETE CASCADE), not the ORM.
    assert db.scalar("SELECT count(*) FROM task") == 1
    with db.engine.begin() as connection:
        connection.execute(sa.text('DELETE FROM "user"'))
    assert db.scalar("SELECT count(*) FROM task") == 0


def test_timestamps_come_back_aware_and_utc(db: Database) -> None:
    with Session(get_engine()) as session:
        user = make_user(session)
        session.expire_all()
        loaded = session.get(User, user.id)
        assert loaded is not None
        assert loaded.created_at.tzinfo is not None
        assert loaded.created_at.utcoffset() == UTC.utcoffset(None)
        assert loaded.created_at.isoformat().endswith("+00:00")


def test_naive_datetimes_are_refused(db: Database) -> None:
    with Session(get_engine()) as session:
        user = make_user(session)
        user.last_login_at = datetime(2026, 1, 1)
        session.add(user)
        with pytest.raises(sa.exc.StatementError, match="naive datetimes"):
            session.commit()


def test_status_is_constrained_in_the_database(db: Database) -> None:
    with Session(get_engine(), expire_on_commit=False) as session:
        user = make_user(session)
    with pytest.raises(sa.exc.IntegrityError), db.engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO task (user_id, title, status, priority, created_at, updated_at,"
                " version) VALUES (:user, 't', 'Bogus', 'Low', :now, :now, 1)"
            ),
            {
                "user": user.id.hex if db.backend == "sqlite" else str(user.id),
                "now": datetime.now(UTC).isoformat(),
            },
        )


def test_email_is_unique(db: Database) -> None:
    with Session(get_engine()) as session:
        make_user(session)
        with pytest.raises(sa.exc.IntegrityError):
            make_user(session)


@pytest.mark.sqlite_only
def test_sqlite_connection_settings(db: Database) -> None:
    with get_engine().connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000


@pytest.mark.postgres_only
def test_postgresql_pool_holds_one_connection(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = get_engine()
    assert isinstance(engine.pool, sa.pool.QueuePool)
    assert engine.pool.size() == 1
    assert engine.pool._max_overflow == 0
    configure(monkeypatch, database_null_pool="true")
    assert isinstance(get_engine().pool, sa.pool.NullPool)


def _backend_pid(session: Session) -> int:
    pid: int = session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    return pid


def _terminate(db: Database, pid: int) -> None:
    """End one server process and wait until it is gone, as `pg_terminate_backend` alone
    only signals it."""
    assert db.scalar("SELECT pg_terminate_backend(:pid)", pid=pid) is True
    deadline = time.monotonic() + 5
    while db.scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid", pid=pid):
        assert time.monotonic() < deadline, f"backend {pid} still alive"
        time.sleep(0.01)


def _kill_the_pooled_connection(
    db: Database, monkeypatch: pytest.MonkeyPatch, *, ping_after_idle: float
) -> int:
    """Use the pool's connection once, then end its server process, as a database
    restart, a failover or an idle timeout would; the dead connection's backend pid."""
    monkeypatch.setattr(taskapi.db, "PING_AFTER_IDLE_SECONDS", ping_after_idle)
    with open_session() as session:
        pid = _backend_pid(session)
    # Gone, so its FATAL message has reached the pooled connection's socket. A kill that
    # lands between a checkout and the first statement is the request's to retry
    # (`RetryAfterLostConnection`, tests/test_faults_database.py).
    _terminate(db, pid)
    return pid


@pytest.mark.postgres_only
def test_a_connection_that_died_while_idle_is_replaced_unseen(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _kill_the_pooled_connection(db, monkeypatch, ping_after_idle=0.0)
    # A frozen container thaws: the pool pings the idle connection, finds it dead and
    # connects again, so the request's own statement never meets the dead one.
    with open_session() as session:
        assert session.exec(select(User)).all() == []
        assert _backend_pid(session) != first


@pytest.mark.postgres_only
def test_a_connection_in_steady_use_is_not_pinged_and_its_death_is_unseen(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _kill_the_pooled_connection(db, monkeypatch, ping_after_idle=3600.0)
    pings = count_pings(monkeypatch)
    # Checked in moments ago, the connection is handed out without a ping: the first
    # statement meets the dead connection, and runs again on a new one.
    with open_session() as session:
        assert session.exec(select(User)).all() == []
        assert _backend_pid(session) != first
    assert pings == []


def count_pings(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every ping the engine's dialect sends from now on (each still reaches the server)."""
    dialect = get_engine().dialect
    pings: list[object] = []
    do_ping = dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings.append(dbapi_connection)
        return do_ping(dbapi_connection)

    monkeypatch.setattr(dialect, "do_ping", counted)
    return pings


@pytest.mark.postgres_only
def test_a_first_write_on_a_dead_connection_runs_once_on_a_new_one(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transaction's first statement is an INSERT: replayed, it is written once."""
    _kill_the_pooled_connection(db, monkeypatch, ping_after_idle=3600.0)
    with open_session() as session:
        make_user(session)
    assert db.scalar('SELECT count(*) FROM "user"') == 1


@pytest.mark.postgres_only
def test_a_write_after_the_transaction_began_is_never_replayed(db: Database) -> None:
    with open_session() as session:
        user = make_user(session)
    with open_session() as session:
        pid = _backend_pid(session)  # the transaction's first statement
        _terminate(db, pid)
        session.add(Task(user_id=user.id, title="lost with its connection"))
        with pytest.raises(sa.exc.OperationalError) as raised:
            session.commit()
        assert raised.value.connection_invalidated
    assert db.scalar("SELECT count(*) FROM task") == 0
    # The pool's connection was replaced for the next session.
    with open_session() as session:
        assert _backend_pid(session) != pid


@pytest.mark.postgres_only
def test_read_only_sessions_autocommit_and_refuse_writes(db: Database) -> None:
    with open_session(read_only=True) as session:
        dbapi_connection = session.connection().connection.dbapi_connection
        assert dbapi_connection is not None
        session.exec(select(User)).all()
        # No transaction was begun around the statement: no BEGIN, no ROLLBACK to send.
        assert (
            dbapi_connection.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        )
    # The pool hands the connection to the next session in its usual transactional mode.
    assert dbapi_connection.autocommit is False
    with open_session() as session:
        session.exec(select(User)).all()
        assert session.connection().connection.dbapi_connection is dbapi_connection
        assert (
            dbapi_connection.info.transaction_status
            == psycopg2.extensions.TRANSACTION_STATUS_INTRANS
        )


def test_a_read_only_session_refuses_to_write(db: Database) -> None:
    with open_session(read_only=True) as session:
        with pytest.raises(RuntimeError, match="read-only session"):
            make_user(session)
        session.rollback()
        with pytest.raises(RuntimeError, match="read-only session"):
            session.exec(sa.update(User).values(name="x"))
    assert db.scalar('SELECT count(*) FROM "user"') == 0


def test_a_read_connection_autocommits_and_refuses_to_write(db: Database) -> None:
    with open_session() as session:
        make_user(session)
    with open_read_connection() as connection:
        assert connection.execute(sa.select(col(User.name))).scalars().all() == ["Ada"]
        dbapi_connection = connection.connection.dbapi_connection
        if connection.dialect.name == "postgresql":
            assert dbapi_connection.info.transaction_status == (  # type: ignore[union-attr]
                psycopg2.extensions.TRANSACTION_STATUS_IDLE
            )
        with pytest.raises(RuntimeError, match="read-only session or connection"):
            connection.execute(sa.update(User).values(name="x"))
    assert db.scalar('SELECT "name" FROM "user"') == "Ada"
    # Back in the pool, the connection is an ordinary one again for the next session.
    with open_session() as session:
        connection = session.connection()
        assert connection.get_execution_options().get("taskapi_read_only") is None
        if connection.dialect.name == "postgresql":
            assert connection.connection.dbapi_connection.autocommit is False  # type: ignore[union-attr]
        make_user(session, email="grace@example.com")


def test_engine_is_created_once_per_container(db: Database) -> None:
    assert get_engine() is get_engine()
    assert get_settings() is get_settings()


@pytest.mark.perf
def test_unreachable_database_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    # Port 1 on loopback: nothing listens, so the connection is refused at once.
    configure(
        monkeypatch, stage="test", database_url="postgresql+psycopg2://postgres@127.0.0.1:1/x"
    )
    started = time.monotonic()
    with pytest.raises(sa.exc.OperationalError), get_engine().connect():
        pass
    assert time.monotonic() - started < 5


def test_create_schemas_normalise_and_reject() -> None:
    user = UserCreate(email=" Ada@Example.COM ", name="  Ada ", password="correct horse")
    assert (user.email, user.name) == ("ada@example.com", "Ada")
    task = TaskCreate(title="  Buy milk  ")
    assert (task.title, task.status) == ("Buy milk", TaskStatus.PENDING)
    with pytest.raises(ValueError, match="at most 72 bytes"):
        UserCreate(email="a@example.com", name="A", password="é" * 37)
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        TaskCreate.model_validate({"title": "x", "owner": "someone"})
    with pytest.raises(ValueError, match="may be omitted but not null"):
        TaskUpdate.model_validate({"title": None})
    assert TaskUpdate.model_validate({"priority": "High"}).model_dump(exclude_unset=True) == {
        "priority": "High"
    }


def test_sql_echo_hides_bound_parameters(
    db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """SQL_ECHO logs statements, never the values bound to them (password hashes, tokens)."""
    configure(monkeypatch, sql_echo="true")
    with caplog.at_level("INFO", logger="sqlalchemy.engine"), Session(get_engine()) as session:
        session.add(User(email="ada@example.com", name="Ada", hashed_password="$2b$SECRET-HASH"))
        session.commit()
    assert "INSERT INTO" in caplog.text
    assert "SECRET-HASH" not in caplog.text
