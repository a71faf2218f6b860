"""Re-hash on login (issue 29, finding 6): after `BCRYPT_ROUNDS` changes, a successful
login stores the password again at the new cost, so a wrong password for a known email
and an unknown email take alike again (both are checked at the configured cost)."""

import statistics
import time

import pytest

from taskapi.passwords import prepare_password_checks
from tests.support.auth import PASSWORD, login, signup, tokens, user_row
from tests.support.client import Client
from tests.support.database import Database
from tests.support.environment import configure

pytestmark = pytest.mark.client("auth")


def test_a_login_rewrites_a_hash_of_another_cost(
    client: Client, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    signup(client)
    old_hash = user_row(db, "ada@example.com").hashed_password
    assert old_hash.startswith("$2b$04$")
    configure(monkeypatch, bcrypt_rounds="5")
    # A wrong password changes nothing.
    assert login(client, password="not the password").status == 401
    assert user_row(db, "ada@example.com").hashed_password == old_hash
    first = login(client)
    assert first.status == 200, first.body
    new_hash = user_row(db, "ada@example.com").hashed_password
    assert new_hash.startswith("$2b$05$")
    # The same password still logs in, and the hash stays as it is now.
    access, _ = tokens(login(client))
    assert user_row(db, "ada@example.com").hashed_password == new_hash
    assert client.get("/api/auth/me", token=access).status == 200


SAMPLES = 24


def median_seconds(client: Client, emails: list[str], password: str) -> float:
    durations: list[float] = []
    for email in emails:
        started = time.perf_counter()
        response = login(
            client, email=email, password=password, source_ip=f"10.0.0.{len(durations)}"
        )
        durations.append(time.perf_counter() - started)
        assert response.status == 401
    return statistics.median(durations)


@pytest.mark.perf
def test_after_a_cost_change_known_and_unknown_emails_take_alike(
    client: Client, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The review's oracle: accounts made at a lower cost, the server restarted at a
    higher one. Each account logs in once (re-hashed), then wrong passwords for them and
    unknown emails: medians within 10 %."""
    configure(monkeypatch, bcrypt_rounds="8")
    known = [f"known{n}@example.com" for n in range(SAMPLES)]
    for email in known:
        assert signup(client, email=email).status == 201
    # configure() drops the dummy hash made at the old cost (taskapi.state).
    configure(monkeypatch, bcrypt_rounds="10")
    prepare_password_checks()
    for email in known:
        assert login(client, email=email).status == 200
    unknown = [f"nobody{n}@example.com" for n in range(SAMPLES)]
    known_median = median_seconds(client, known, "a wrong password")
    unknown_median = median_seconds(client, unknown, PASSWORD)
    assert abs(known_median - unknown_median) <= 0.1 * unknown_median, (
        known_median,
        unknown_median,
    )
