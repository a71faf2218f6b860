"""The forgotten password, through the real auth handler on SQLite and PostgreSQL: the
mail arrives on a real SMTP server (or in SES under moto), the token resets the password
once, every old session ends, and each step is in the security log."""

import hashlib
import re
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import boto3
import pytest
import sqlalchemy as sa
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends
from sqlalchemy import event
from sqlmodel import select

from taskapi.db import get_engine
from taskapi.models import AccountToken, utcnow
from taskapi.settings import get_settings
from tests.support.auth import (
    ME,
    NEW_PASSWORD,
    assert_unauthorized,
    login,
    rows,
    set_active,
    signup,
    tokens,
)
from tests.support.client import Client, Response
from tests.support.concurrency import at_once, each_at_once
from tests.support.database import Database
from tests.support.environment import configure
from tests.support.smtp import Mailbox, body_of

RESET = "/api/auth/password-reset"
CONFIRM = "/api/auth/password-reset/confirm"
EVENTS = "/api/auth/events"
ACCEPTED = {"detail": "If an account has this email, a link to reset its password is on its way"}
TOKEN = re.compile(r"/reset-password\?token=([A-Za-z0-9_-]+)")

pytestmark = pytest.mark.client("auth")


def request_reset(client: Client, email: str, *, source_ip: str = "127.0.0.1") -> Response:
    return client.post(RESET, json_body={"email": email}, source_ip=source_ip)


def confirm(client: Client, token: str, password: str = NEW_PASSWORD) -> Response:
    return client.post(CONFIRM, json_body={"token": token, "new_password": password})


def event_types(client: Client, access: str) -> list[str]:
    response = client.get(EVENTS, token=access)
    assert response.status == 200, response.body
    return [item["type"] for item in response.json()["items"]]


class Inbox:
    """The mails sent to one address, from SMTP or SES alike."""

    def __init__(self, read: Any) -> None:
        self._read = read

    def bodies(self, address: str) -> list[str]:
        return list(self._read(address))

    def token(self, address: str) -> str:
        match = TOKEN.search(self.bodies(address)[-1])
        assert match, self.bodies(address)
        return match.group(1)


@pytest.fixture(params=["smtp", "ses"])
def inbox(
    request: pytest.FixtureRequest, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Inbox]:
    """Where the reset mail goes: the real SMTP server, or SES under moto."""
    if request.param == "smtp":
        yield Inbox(lambda address: [body_of(m) for m in mailbox.to(address)])
        return
    with mock_aws():
        boto3.client("ses", region_name="us-east-1").verify_domain_identity(Domain="example.com")
        configure(monkeypatch, email_delivery="ses")
        ses = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
        yield Inbox(
            lambda address: [
                m.body for m in ses.sent_messages if m.destinations["ToAddresses"] == [address]
            ]
        )


def test_the_whole_reset(client: Client, db: Database, inbox: Inbox) -> None:
    signed_up, _ = tokens(signup(client))
    logged_in, old_refresh = tokens(login(client))

    known = request_reset(client, "  Ada@Example.com ")
    unknown = request_reset(client, "nobody@example.com")
    # The same answer whether or not the account exists.
    assert (known.status, known.json()) == (202, ACCEPTED)
    assert (unknown.status, unknown.json()) == (202, ACCEPTED)
    assert inbox.bodies("nobody@example.com") == []
    (mail,) = inbox.bodies("ada@example.com")
    assert "http://127.0.0.1:3000/reset-password?token=" in mail
    token = inbox.token("ada@example.com")

    done = confirm(client, token)
    assert (done.status, done.json()) == (
        200,
        {"detail": "Password reset; log in with the new password"},
    )
    # The old password is refused, every old session has ended, the token is spent.
    assert_unauthorized(login(client), "Invalid email or password")
    assert_unauthorized(client.get(ME, token=signed_up))
    assert_unauthorized(client.get(ME, token=logged_in))
    refreshed = client.post("/api/auth/refresh", json_body={"refresh_token": old_refresh})
    assert_unauthorized(refreshed)
    assert_unauthorized(confirm(client, token, "yet another password"))
    new_access, _ = tokens(login(client, password=NEW_PASSWORD))

    assert event_types(client, new_access) == [
        "login",
        "login_failed",
        "password_reset",
        "password_reset_requested",
        "login",
        "signup",
    ]
    # Nothing of the token is left in the database.
    assert db.scalar("SELECT count(*) FROM account_token") == 0


def test_the_token_is_stored_hashed_and_a_newer_one_replaces_it(
    client: Client, db: Database, mailbox: Mailbox
) -> None:
    signup(client)
    assert request_reset(client, "ada@example.com").status == 202
    first = mailbox.last_token("ada@example.com")
    with rows(db) as session:
        (row,) = session.exec(select(AccountToken)).all()
    assert row.token_hash == hashlib.sha256(first.encode()).hexdigest()
    assert row.purpose == "password_reset"
    assert row.expires_at - row.created_at == timedelta(minutes=30)

    assert request_reset(client, "ada@example.com").status == 202
    second = mailbox.last_token("ada@example.com")
    assert second != first
    assert_unauthorized(
        confirm(client, first), "Invalid, used or expired reset token; ask for a new one"
    )
    assert confirm(client, second).status == 200


def test_an_expired_token_is_refused(client: Client, db: Database, mailbox: Mailbox) -> None:
    signup(client)
    request_reset(client, "ada@example.com")
    with rows(db) as session:
        session.exec(sa.update(AccountToken).values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    assert_unauthorized(confirm(client, mailbox.last_token("ada@example.com")))
    assert login(client).status == 200


def test_the_new_password_follows_the_rules(client: Client, mailbox: Mailbox) -> None:
    signup(client)
    request_reset(client, "ada@example.com")
    token = mailbox.last_token("ada@example.com")
    for password in ("short", "x" * 73, "nul\x00character"):
        assert confirm(client, token, password).status == 422
    for body in (
        {"token": token},
        {"new_password": NEW_PASSWORD},
        {"token": "", "new_password": NEW_PASSWORD},
    ):
        assert client.post(CONFIRM, json_body=body).status == 422
    # Refused input did not use the token up.
    assert confirm(client, token).status == 200


def test_no_mail_for_an_inactive_account_and_a_refused_mail_changes_nothing(
    client: Client, db: Database, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    signup(client)
    set_active(db, "ada@example.com", active=False)
    assert (request_reset(client, "ada@example.com").json()) == ACCEPTED
    assert mailbox.messages == []
    set_active(db, "ada@example.com", active=True)
    # No SMTP server listens there: the mail fails, the answer does not change.
    configure(monkeypatch, smtp_port="1")
    response = request_reset(client, "ada@example.com")
    assert (response.status, response.json()) == (202, ACCEPTED)


def test_requests_are_throttled_per_email_and_per_source(
    client: Client, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, password_reset_max_per_email="2", password_reset_max_per_source="3")
    signup(client)
    for _ in range(2):
        assert request_reset(client, "ada@example.com").status == 202
    refused = request_reset(client, "ada@example.com", source_ip="10.0.0.9")
    assert refused.status == 429, refused.body
    assert 1 <= int(refused.headers["retry-after"]) <= 15 * 60
    assert refused.json() == {"detail": "Too many password reset requests; try again later"}
    # An unknown email is counted the same way: the 429 tells nothing either.
    for _ in range(2):
        assert request_reset(client, "nobody@example.com", source_ip="10.0.0.9").status == 202
    assert request_reset(client, "nobody@example.com", source_ip="10.0.0.9").status == 429
    # 127.0.0.1 asked for ada twice and was refused once (not counted): one more for another
    # email, then that source is refused for any email.
    assert request_reset(client, "bob@example.com").status == 202
    assert request_reset(client, "carol@example.com").status == 429
    assert request_reset(client, "carol@example.com", source_ip="10.0.0.10").status == 202
    assert len(mailbox.to("ada@example.com")) == 2


# ---------------------------------------------------------------------------------------
# Races (PostgreSQL: SQLite has one writer at a time)


@pytest.mark.postgres_only
def test_two_confirmations_of_one_token_at_once(
    client: Client, pg: Database, mailbox: Mailbox
) -> None:
    signup(client)
    request_reset(client, "ada@example.com")
    token = mailbox.last_token("ada@example.com")
    responses = at_once(4, lambda: confirm(client, token))
    assert sorted(r.status for r in responses) == [200, 401, 401, 401]
    assert login(client, password=NEW_PASSWORD).status == 200


def live_sessions(db: Database, email: str) -> int:
    return int(
        db.scalar(
            'SELECT count(*) FROM auth_session s JOIN "user" u ON u.id = s.user_id'
            f" WHERE u.email = '{email}' AND s.revoked_at IS NULL"
        )
    )


def in_a_thread(action: Any) -> threading.Thread:
    """`action()` in a thread of its own (another container: a handler cannot run inside
    another's event loop)."""
    thread = threading.Thread(target=action)
    thread.start()
    return thread


def once_before(statement_start: str, action: Any, *, holding: str = "") -> Any:
    """Run `action()` once, just before the app's first statement that starts so (and
    holds `holding`)."""
    fired = threading.Event()

    def listener(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        text = statement.lstrip().upper()
        if not fired.is_set() and text.startswith(statement_start) and holding in text:
            fired.set()
            action()

    return listener


@pytest.mark.postgres_only
def test_a_reset_committed_while_bcrypt_checks_the_old_password(
    client: Client, pg: Database, mailbox: Mailbox
) -> None:
    """The login verified the old password; the reset commits before the login writes its
    session: the login is refused and no session of the old password exists."""
    signup(client)
    request_reset(client, "ada@example.com")
    token = mailbox.last_token("ada@example.com")
    results: list[Response] = []
    # The login's first statement after bcrypt: locking the user row if its hash is still
    # the one verified.
    listener = once_before(
        "SELECT",
        holding="FOR NO KEY UPDATE",
        action=lambda: in_a_thread(lambda: results.append(confirm(client, token))).join(timeout=30),
    )
    event.listen(get_engine(), "before_cursor_execute", listener)
    try:
        response = login(client)
    finally:
        event.remove(get_engine(), "before_cursor_execute", listener)
    assert [r.status for r in results] == [200]
    assert_unauthorized(response, "Invalid email or password")
    assert live_sessions(pg, "ada@example.com") == 0


@pytest.mark.postgres_only
def test_a_reset_confirmed_while_a_login_writes_its_session(
    client: Client, pg: Database, mailbox: Mailbox
) -> None:
    """The login holds the user row when the reset starts: the reset waits for it, and then
    ends the session the login wrote."""
    signup(client)
    request_reset(client, "ada@example.com")
    token = mailbox.last_token("ada@example.com")
    results: list[Response] = []

    def start_reset() -> None:
        started.append(in_a_thread(lambda: results.append(confirm(client, token))))
        time.sleep(0.5)  # long enough for the reset to reach the locked row and wait

    started: list[threading.Thread] = []
    listener = once_before("INSERT INTO AUTH_SESSION", start_reset)
    event.listen(get_engine(), "before_cursor_execute", listener)
    try:
        response = login(client)
    finally:
        event.remove(get_engine(), "before_cursor_execute", listener)
    started[0].join(timeout=30)
    assert [r.status for r in results] == [200]
    access, _ = tokens(response)
    assert_unauthorized(client.get(ME, token=access))
    assert live_sessions(pg, "ada@example.com") == 0
    assert login(client, password=NEW_PASSWORD).status == 200


@pytest.mark.postgres_only
def test_logins_with_the_old_password_racing_a_reset_leave_no_live_session(
    client: Client, pg: Database, mailbox: Mailbox
) -> None:
    """Five logins with the old password and the reset, released together: whichever
    order they commit in, no session of the old password is left."""
    signup(client)
    request_reset(client, "ada@example.com")
    token = mailbox.last_token("ada@example.com")
    responses = each_at_once(
        # From as many sources: each login is counted before bcrypt (5 per source at once).
        6,
        lambda i: confirm(client, token) if i == 0 else login(client, source_ip=f"10.0.0.{i}"),
    )
    assert responses[0].status == 200, responses[0].body
    assert {r.status for r in responses[1:]} <= {200, 401}
    assert live_sessions(pg, "ada@example.com") == 0


def test_without_a_link_base_the_mail_carries_the_token(
    client: Client, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    signup(client)
    configure(monkeypatch, public_url="https://app.example.com")
    request_reset(client, "ada@example.com")
    assert "https://app.example.com/reset-password?token=" in body_of(mailbox.messages[-1])
    monkeypatch.setattr(type(get_settings()), "link_base", property(lambda _: ""))
    request_reset(client, "ada@example.com")
    body = body_of(mailbox.messages[-1])
    assert "reset-password" not in body
    token = re.search(r"Your token: ([A-Za-z0-9_-]+)", body)
    assert token
    assert confirm(client, token.group(1)).status == 200
