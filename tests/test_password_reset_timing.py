"""`POST /api/auth/password-reset` takes as long for an unknown email as for a known one
(whose request writes a token and sends a mail to a real SMTP server): medians within 10 %
at BCRYPT_ROUNDS=12, through the real handler. A timing test, so `perf`: `make test-perf`
runs it (`make test` leaves it out). It prints both medians, with the route's fixed answer
time (PASSWORD_RESET_ANSWER_SECONDS) and, for comparison, without it."""

import statistics
import time
from typing import Any

import pytest

from tests.support.auth import signup
from tests.support.client import Client
from tests.support.database import Database
from tests.support.environment import configure
from tests.support.smtp import Mailbox

pytestmark = [pytest.mark.perf, pytest.mark.client("auth")]

ROUNDS = 20


def medians(client: Client) -> dict[str, float]:
    """Median milliseconds of known and unknown emails, requests interleaved."""
    times: dict[str, list[float]] = {"known": [], "unknown": []}
    for _ in range(ROUNDS):
        for kind, email in (("known", "ada@example.com"), ("unknown", "nobody@example.com")):
            started = time.perf_counter()
            response = client.post("/api/auth/password-reset", json_body={"email": email})
            times[kind].append((time.perf_counter() - started) * 1000)
            assert response.status == 202, response.body
    return {kind: statistics.median(values) for kind, values in times.items()}


def test_known_and_unknown_emails_take_the_same_time(
    client: Client,
    db: Database,
    mailbox: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
    record_property: Any,
) -> None:
    configure(
        monkeypatch,
        bcrypt_rounds="12",
        password_reset_max_per_email="1000",
        password_reset_max_per_source="1000",
        password_reset_answer_seconds="0",
    )
    signup(client)
    unpadded = medians(client)
    configure(monkeypatch, password_reset_answer_seconds="0.5")
    padded = medians(client)
    print(f"\nwithout the fixed time: {unpadded}\nwith PASSWORD_RESET_ANSWER_SECONDS=0.5: {padded}")
    record_property("reset_ms", {"unpadded": unpadded, "padded": padded})
    assert len(mailbox.to("ada@example.com")) == 2 * ROUNDS
    assert abs(padded["known"] - padded["unknown"]) <= 0.1 * padded["unknown"], padded
