"""Login throttling per (email, source IP), with a cap per email across sources, under real
concurrency: threads calling the real auth handler at the same moment, on SQLite and
PostgreSQL. Every bcrypt check is counted, so "at most the limit were checked" is seen,
not inferred from the statuses."""

from collections import Counter

import pytest

from taskapi.models import ANY_SOURCE
from tests.support.auth import login, login_attempt, record_bcrypt_checks, signup
from tests.support.client import Client
from tests.support.concurrency import at_once, each_at_once
from tests.support.database import Database
from tests.support.environment import configure

WRONG = "wrong password"
MAX_ATTEMPTS = 5


@pytest.fixture
def client(db: Database, monkeypatch: pytest.MonkeyPatch) -> Client:
    # One test process plays many containers, each of which would hold its own connection.
    configure(
        monkeypatch,
        database_pool_size="45",
        database_pool_timeout="60",
        login_max_attempts=str(MAX_ATTEMPTS),
        login_max_attempts_per_email="12",
        login_lockout_minutes="15",
    )
    client = Client("auth")
    assert signup(client).status == 201
    return client


@pytest.fixture
def bcrypt_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return record_bcrypt_checks(monkeypatch)


def test_simultaneous_wrong_passwords_from_one_source_check_at_most_the_limit(
    client: Client, db: Database, bcrypt_checks: list[str]
) -> None:
    responses = at_once(40, lambda: login(client, password=WRONG))
    statuses = Counter(response.status for response in responses)
    print(f"{db.backend}: 40 at once, {len(bcrypt_checks)} checked, {dict(statuses)}")
    assert len(bcrypt_checks) <= MAX_ATTEMPTS, statuses
    assert statuses == {401: len(bcrypt_checks), 429: 40 - len(bcrypt_checks)}, [
        r.body for r in responses if r.status not in (401, 429)
    ]
    for response in responses:
        if response.status == 429:
            assert int(response.headers["retry-after"]) > 0
    # The right password from the same source is refused too, without a check.
    checks_before = len(bcrypt_checks)
    assert login(client).status == 429
    assert len(bcrypt_checks) == checks_before
    attempt = login_attempt(db, "ada@example.com")
    assert attempt is not None
    assert attempt.failed_count == len(bcrypt_checks)
    # The owner, from their own address, still logs in: a stranger cannot lock them out.
    assert login(client, source_ip="127.0.0.2").status == 200


def test_the_cap_per_email_stops_a_spread_of_sources(
    client: Client, db: Database, bcrypt_checks: list[str]
) -> None:
    # 36 sources, 2 wrong passwords each, at once: within each source's limit, but the
    # email's cap across sources (12) holds.
    responses = each_at_once(
        36, lambda index: login(client, password=WRONG, source_ip=f"127.0.1.{index % 18 + 1}")
    )
    statuses = Counter(response.status for response in responses)
    print(f"{db.backend}: 36 from 18 sources, {len(bcrypt_checks)} checked, {dict(statuses)}")
    assert len(bcrypt_checks) <= 12, statuses
    assert statuses[401] == len(bcrypt_checks)
    assert statuses[429] == 36 - len(bcrypt_checks)
    total = login_attempt(db, "ada@example.com", ANY_SOURCE)
    assert total is not None
    assert total.failed_count == len(bcrypt_checks)
    # Every source is locked now, a fresh one with the right password included.
    response = login(client, source_ip="127.0.2.1")
    assert response.status == 429
    assert int(response.headers["retry-after"]) > 0
    # A refused attempt changes no count (the source's increment was taken back).
    fresh = login_attempt(db, "ada@example.com", "127.0.2.1")
    assert fresh is None or fresh.failed_count == 0
    total = login_attempt(db, "ada@example.com", ANY_SOURCE)
    assert total is not None
    assert total.failed_count == len(bcrypt_checks)


def test_a_success_takes_back_its_own_reservation(client: Client, db: Database) -> None:
    for _ in range(2):
        assert login(client, password=WRONG).status == 401
    assert login(client, password=WRONG, source_ip="127.0.0.9").status == 401
    assert login(client).status == 200
    # The source's run of failures ends; the email's count keeps the other failures.
    assert login_attempt(db, "ada@example.com") is None
    total = login_attempt(db, "ada@example.com", ANY_SOURCE)
    assert total is not None
    assert total.failed_count == 3
    # Unknown emails are throttled the same way, so a lockout reveals nothing.
    for _ in range(MAX_ATTEMPTS):
        assert login(client, email="nobody@example.com").status == 401
    assert login(client, email="nobody@example.com").status == 429
    assert login(client, email="nobody@example.com", source_ip="127.0.0.9").status == 401


def test_the_correct_password_during_a_burst_logs_in_at_most_once_per_check(
    client: Client, bcrypt_checks: list[str]
) -> None:
    # 20 right passwords at once from one source: each is reserved, checked, and its
    # reservation taken back, so none is refused for the others' sake beyond the limit.
    responses = at_once(20, lambda: login(client))
    statuses = Counter(response.status for response in responses)
    assert set(statuses) <= {200, 429}, [r.body for r in responses]
    assert statuses[200] == len(bcrypt_checks) >= 1
    assert login(client).status == 200
