"""Issue 29 as the review found it, over real HTTP through the local server (`python -m
localapi`, several workers per function) on PostgreSQL, with real threads: a password
change ends the logins in flight (finding 1), deletion, password change and logins racing
never answer 503 (finding 4), and a known device is not locked out by strangers
(finding 7)."""

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.auth import NEW_PASSWORD, PASSWORD
from tests.support.concurrency import each_at_once
from tests.support.database import Database
from tests.support.functions import ROOT
from tests.support.local_server import (
    bearer,
    local_server,
    server_environment,
    signup_over_http,
)

pytestmark = pytest.mark.postgres_only

LOGIN = "/api/auth/login"
ME = "/api/auth/me"
REFRESH = "/api/auth/refresh"


def from_source(api: httpx.Client, address: str) -> httpx.Client:
    """A client of the same server whose requests come from `address` (a 127.0.0.0/8
    address: the local server reports the peer's address as the source, as API Gateway
    does)."""
    return httpx.Client(
        base_url=api.base_url,
        timeout=api.timeout,
        transport=httpx.HTTPTransport(local_address=address),
    )


# ---------------------------------------------------------------------------------------
# Finding 1: a password change ends every login that was being checked meanwhile


@pytest.fixture(scope="module")
def slow_hash_api(
    migrated_database: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """The real template, with bcrypt at cost 10: a login's check takes tens of
    milliseconds, so logins are in flight whenever the password changes (the review ran
    at 12)."""
    folder = tmp_path_factory.mktemp("slow-hash")
    template = folder / "template.yaml"
    template.symlink_to(ROOT / "template.yaml")
    environment = {**server_environment(migrated_database), "BCRYPT_ROUNDS": "10"}
    with local_server(template.resolve(), env=environment, cwd=folder) as (client, _):
        yield client


CHANGES = 5
LOOPS = 2


def test_a_password_change_ends_the_logins_in_flight(slow_hash_api: httpx.Client) -> None:
    api = slow_hash_api
    leaked: list[str] = []
    logged_in = 0
    for change in range(CHANGES):
        email = f"victim{change}@example.com"
        victim = signup_over_http(api, email)
        stop = threading.Event()
        tokens: list[tuple[str, str]] = []

        def attacker(
            number: int,
            email: str = email,
            stop: threading.Event = stop,
            tokens: list[tuple[str, str]] = tokens,
        ) -> None:
            with from_source(api, f"127.0.0.{10 + number}") as client:
                while not stop.is_set():
                    response = client.post(LOGIN, json={"email": email, "password": PASSWORD})
                    if response.status_code == 200:
                        body = response.json()
                        tokens.append((body["access_token"], body["refresh_token"]))

        with ThreadPoolExecutor(LOOPS) as pool:
            loops = [pool.submit(attacker, number) for number in range(LOOPS)]
            # Change once the loops are logging in steadily.
            deadline = time.monotonic() + 30
            while len(tokens) < 2 * LOOPS and time.monotonic() < deadline:
                time.sleep(0.02)
            changed = api.post(
                "/api/auth/password",
                json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
                headers=bearer(victim["access_token"]),
            )
            # The logins that were being checked as the change committed finish too.
            time.sleep(0.3)
            stop.set()
            for loop in loops:
                loop.result(timeout=60)
        assert changed.status_code == 200, changed.text
        logged_in += len(tokens)
        for access, refresh in tokens:
            me = api.get(ME, headers=bearer(access))
            refreshed = api.post(REFRESH, json={"refresh_token": refresh})
            if me.status_code != 401 or refreshed.status_code != 401:
                leaked.append(
                    f"change {change}: /me {me.status_code}, refresh {refreshed.status_code}"
                )
        # The victim's own session stays, and only the new password logs in.
        assert api.get(ME, headers=bearer(victim["access_token"])).status_code == 200
        assert api.post(LOGIN, json={"email": email, "password": NEW_PASSWORD}).status_code == 200
    assert logged_in > 0, "no login of the old password succeeded before a change"
    assert leaked == []


# ---------------------------------------------------------------------------------------
# Finding 4: one lock order, and no 503 for a deadlock that still happens

ROUNDS = 24


def test_deletion_password_change_and_logins_racing_never_answer_503(
    api: httpx.Client,
) -> None:
    outcomes: dict[str, set[int]] = {"delete": set(), "change": set(), "login": set()}
    for round_number in range(ROUNDS):
        email = f"racer{round_number}@example.com"
        first = signup_over_http(api, email)
        second = api.post(LOGIN, json={"email": email, "password": PASSWORD})
        assert second.status_code == 200, second.text
        tokens = (first["access_token"], second.json()["access_token"])

        def call(
            index: int, email: str = email, tokens: tuple[str, str] = tokens
        ) -> tuple[str, int, str]:
            with from_source(api, f"127.0.0.{40 + index}") as client:
                if index == 0:
                    response = client.request(
                        "DELETE", ME, json={"password": PASSWORD}, headers=bearer(tokens[0])
                    )
                    return "delete", response.status_code, response.text
                if index == 1:
                    response = client.post(
                        "/api/auth/password",
                        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
                        headers=bearer(tokens[1]),
                    )
                    return "change", response.status_code, response.text
                # The owner's right-password login, and a stranger's wrong ones.
                password = PASSWORD if index == 2 else "a stranger's guess"
                response = client.post(LOGIN, json={"email": email, "password": password})
                return "login", response.status_code, response.text

        results = each_at_once(5, call)
        for kind, status, text in results:
            assert status < 500, (round_number, kind, status, text)
            outcomes[kind].add(status)
        deleted = [status for kind, status, _ in results if kind == "delete"]
        if deleted == [204]:
            # Deleted for good: nothing of the account answers any more.
            assert api.get(ME, headers=bearer(tokens[1])).status_code == 401
    print(f"statuses over {ROUNDS} rounds: {outcomes}")
    assert outcomes["delete"] <= {204, 401, 403, 409}
    assert outcomes["change"] <= {200, 401, 403, 409}
    assert outcomes["login"] <= {200, 401, 409}


# ---------------------------------------------------------------------------------------
# Finding 7: a known device is not locked out by strangers


def test_strangers_from_20_sources_do_not_lock_out_a_known_device(api: httpx.Client) -> None:
    email = "owner@example.com"
    device_token = signup_over_http(api, email)["device_token"]

    def guesses(index: int) -> list[int]:
        with from_source(api, f"127.0.1.{index + 1}") as client:
            return [
                client.post(LOGIN, json={"email": email, "password": f"guess {n}"}).status_code
                for n in range(5)
            ]

    # 20 addresses, 5 wrong guesses each: 100 failures, the per-email cap.
    failures = [status for statuses in each_at_once(20, guesses) for status in statuses]
    assert failures.count(401) == 100

    with from_source(api, "127.0.2.1") as owner:
        # Without the device's token, Version 2's limits apply: the email is locked out.
        locked = owner.post(LOGIN, json={"email": email, "password": PASSWORD})
        assert locked.status_code == 429
        assert int(locked.headers["retry-after"]) > 0
        # With it, the owner logs in, from any address, and keeps the same device token.
        known = owner.post(
            LOGIN, json={"email": email, "password": PASSWORD, "device_token": device_token}
        )
        assert known.status_code == 200, known.text
        assert known.json()["device_token"] == device_token
        access = known.json()["access_token"]
        assert owner.get(ME, headers=bearer(access)).status_code == 200

    # The device's own failures still lock it: LOGIN_MAX_ATTEMPTS (5) of them.
    with from_source(api, "127.0.2.2") as thief:
        stolen = [
            thief.post(
                LOGIN,
                json={"email": email, "password": f"thief {n}", "device_token": device_token},
            ).status_code
            for n in range(5)
        ]
        assert stolen == [401] * 5
        refused = thief.post(
            LOGIN, json={"email": email, "password": PASSWORD, "device_token": device_token}
        )
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) > 0

    # Another account's device token counts as none (the email's lockout applies).
    other = signup_over_http(api, "other@example.com")["device_token"]
    with from_source(api, "127.0.2.3") as client:
        borrowed = client.post(
            LOGIN, json={"email": email, "password": PASSWORD, "device_token": other}
        )
        assert borrowed.status_code == 429
