"""The profile (`PATCH /api/auth/me`) and the email change by confirmation mail, through
the real auth handler on SQLite and PostgreSQL, the mails received on a real SMTP server."""

import pytest

from tests.support.auth import (
    ME,
    PASSWORD,
    assert_unauthorized,
    login,
    parse_time,
    signup,
    tokens,
)
from tests.support.client import Client, Response
from tests.support.concurrency import at_once
from tests.support.database import Database
from tests.support.smtp import Mailbox, body_of

EMAIL = "/api/auth/email"
CONFIRM = "/api/auth/email/confirm"

pytestmark = pytest.mark.client("auth")


def change_email(client: Client, access: str, new_email: str, password: str = PASSWORD) -> Response:
    return client.post(
        EMAIL, json_body={"password": password, "new_email": new_email}, token=access
    )


def confirm(client: Client, token: str) -> Response:
    return client.post(CONFIRM, json_body={"token": token})


def test_patch_me_changes_the_name_only(client: Client, db: Database) -> None:
    access, _ = tokens(signup(client))
    before = client.get(ME, token=access).json()

    response = client.patch(ME, json_body={"name": "  Ada Lovelace  "}, token=access)

    assert response.status == 200, response.body
    after = response.json()
    assert after["name"] == "Ada Lovelace"
    assert parse_time(after["updated_at"]) > parse_time(before["updated_at"])
    assert {k: v for k, v in after.items() if k not in ("name", "updated_at")} == {
        k: v for k, v in before.items() if k not in ("name", "updated_at")
    }
    assert client.get(ME, token=access).json() == after
    assert db.scalar('SELECT name FROM "user"') == "Ada Lovelace"
    # An empty body changes nothing but is accepted.
    assert client.patch(ME, json_body={}, token=access).json()["name"] == "Ada Lovelace"


@pytest.mark.parametrize(
    "body",
    [
        {"name": None},
        {"name": "   "},
        {"name": "x" * 101},
        {"name": "a\x00b"},
        {"email": "x@y.com"},
    ],
    ids=["null", "blank", "too-long", "nul", "unknown-field"],
)
def test_patch_me_refuses_bad_input(client: Client, db: Database, body: dict[str, object]) -> None:
    access, _ = tokens(signup(client))
    response = client.patch(ME, json_body=body, token=access)
    assert response.status == 422, response.body
    assert client.get(ME, token=access).json()["name"] == "Ada"


def test_patch_me_needs_a_token(client: Client, db: Database) -> None:
    assert_unauthorized(client.patch(ME, json_body={"name": "x"}))


def test_the_email_change(client: Client, db: Database, mailbox: Mailbox) -> None:
    access, _ = tokens(signup(client))

    response = change_email(client, access, " Ada.Lovelace@Example.COM ")

    assert (response.status, response.json()) == (
        202,
        {"detail": "A confirmation link is on its way to the new address"},
    )
    # Nothing changes until the new address confirms.
    assert client.get(ME, token=access).json()["email"] == "ada@example.com"
    (mail,) = mailbox.to("ada.lovelace@example.com")
    assert mail["Subject"] == "Confirm your new Task API email"
    assert "http://127.0.0.1:3000/confirm-email?token=" in body_of(mail)
    token = mailbox.last_token("ada.lovelace@example.com")

    confirmed = confirm(client, token)

    assert confirmed.status == 200, confirmed.body
    assert confirmed.json()["email"] == "ada.lovelace@example.com"
    assert client.get(ME, token=access).json()["email"] == "ada.lovelace@example.com"
    (notice,) = mailbox.to("ada@example.com")
    assert notice["Subject"] == "Your Task API email was changed"
    assert "ada.lovelace@example.com" in body_of(notice)
    assert login(client, email="ada.lovelace@example.com").status == 200
    assert_unauthorized(login(client), "Invalid email or password")
    # The token is spent.
    assert_unauthorized(confirm(client, token))
    types = [e["type"] for e in client.get("/api/auth/events", token=access).json()["items"]]
    # The login with the old email found no account: nothing to log for anyone.
    assert types == ["login", "email_changed", "email_change_requested", "signup"]


def test_the_email_change_needs_the_password(
    client: Client, db: Database, mailbox: Mailbox
) -> None:
    access, _ = tokens(signup(client))
    response = change_email(client, access, "new@example.com", password="wrong password")
    assert (response.status, response.json()) == (403, {"detail": "The password is wrong"})
    assert mailbox.messages == []


@pytest.mark.parametrize(
    "new_email",
    ["not an address", "Ada <ada@example.org>", "ada@example.test", ""],
)
def test_the_new_email_follows_the_sign_up_rules(
    client: Client, db: Database, mailbox: Mailbox, new_email: str
) -> None:
    access, _ = tokens(signup(client))
    assert change_email(client, access, new_email).status == 422
    assert mailbox.messages == []


def test_the_same_email_is_a_conflict(client: Client, db: Database, mailbox: Mailbox) -> None:
    access, _ = tokens(signup(client))
    response = change_email(client, access, "ADA@example.com")
    assert (response.status, response.json()) == (
        409,
        {"detail": "This is already the account's email"},
    )


def test_an_email_taken_meanwhile_is_409_at_confirmation(
    client: Client, db: Database, mailbox: Mailbox
) -> None:
    access, _ = tokens(signup(client))
    assert change_email(client, access, "bob@example.com").status == 202
    token = mailbox.last_token("bob@example.com")
    tokens(signup(client, email="bob@example.com"))

    response = confirm(client, token)

    assert (response.status, response.json()) == (
        409,
        {"detail": "A user with this email already exists"},
    )
    assert client.get(ME, token=access).json()["email"] == "ada@example.com"
    assert not mailbox.to("ada@example.com")


def test_a_newer_request_replaces_the_older_link(
    client: Client, db: Database, mailbox: Mailbox
) -> None:
    access, _ = tokens(signup(client))
    change_email(client, access, "first@example.com")
    change_email(client, access, "second@example.com")
    assert_unauthorized(confirm(client, mailbox.last_token("first@example.com")))
    assert confirm(client, mailbox.last_token("second@example.com")).json()["email"] == (
        "second@example.com"
    )


@pytest.mark.postgres_only
def test_two_confirmations_at_once_change_the_email_once(
    client: Client, pg: Database, mailbox: Mailbox
) -> None:
    access, _ = tokens(signup(client))
    change_email(client, access, "new@example.com")
    token = mailbox.last_token("new@example.com")
    responses = at_once(3, lambda: confirm(client, token))
    assert sorted(r.status for r in responses) == [200, 401, 401]
    assert len(mailbox.to("ada@example.com")) == 1
