"""One email normalisation (`taskapi.emails`) for sign-up and login: the same string typed
at both always finds the same account; sign-up takes only a bare address."""

import unicodedata

import pytest

from taskapi.emails import normalise_email, signup_email
from tests.support.auth import login, signup, user_row
from tests.support.client import Client
from tests.support.database import Database

NFD = unicodedata.normalize("NFD", "José@Example.com")


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("  Ada@Example.COM ", "ada@example.com"),
        ("bob@\uff58.com", "bob@x.com"),  # a full-width domain is the ASCII domain
        ("bob@EXAMPLE.\uff43\uff4f\uff4d", "bob@example.com"),
        (NFD, "josé@example.com"),  # NFD is stored as NFC
        ("ana@xn--bcher-kva.de", "ana@bücher.de"),  # punycode and Unicode are one domain
        ("ana@Bücher.de", "ana@bücher.de"),
    ],
)
def test_signup_and_login_with_the_same_string_find_the_same_account(
    db: Database, typed: str, stored: str
) -> None:
    client = Client("auth")
    response = signup(client, email=typed)
    assert response.status == 201, response.body
    assert response.json()["user"]["email"] == stored
    assert user_row(db, stored).email == stored
    assert login(client, email=typed).status == 200
    assert login(client, email=stored).status == 200
    # Any other spelling of the same address is taken.
    assert signup(client, email=stored.upper()).status == 409


@pytest.mark.parametrize(
    "email",
    ["Bob <bob@x.com>", "<bob@x.com>", "bob@x.com, eve@y.com", "bob", "bob@", "@x.com"],
)
def test_signup_takes_only_a_bare_address(db: Database, email: str) -> None:
    response = signup(Client("auth"), email=email)
    assert response.status == 422, response.body
    assert response.json()["detail"][0]["loc"][-1] == "email"


def test_one_function_normalises_for_everyone() -> None:
    assert normalise_email(" Bob@\uff58.COM") == signup_email("bob@x.com") == "bob@x.com"
    # Not an address: still a stable form, so it is counted as typed (lower-cased).
    assert normalise_email("  Not An Address ") == "not an address"
    assert normalise_email(NFD) == unicodedata.normalize("NFC", NFD.lower())
    with pytest.raises(ValueError, match="display name"):
        signup_email("Bob <bob@x.com>")
