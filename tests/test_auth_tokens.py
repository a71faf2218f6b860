"""Tokens an attacker or a confused client could present, through the real handler: each
is refused with 401 and `WWW-Authenticate: Bearer`, and none revokes or rotates anything."""

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from taskapi import tokens as tokens_module
from taskapi.settings import get_jwt_keys
from taskapi.tokens import TokenPair, decode_token, issue_token, issue_token_pair
from tests.support.auth import signup, tokens
from tests.support.client import Client
from tests.support.database import Database
from tests.support.environment import configure
from tests.support.keys import JWT_KEY, forge, payload_of

ME = "/api/auth/me"
REFRESH = "/api/auth/refresh"


# The `client` fixture's requests go to the auth function.
pytestmark = pytest.mark.client("auth")


@pytest.fixture
def pair(client: Client) -> tuple[str, str]:
    """The access and refresh token of a freshly signed-up user."""
    return tokens(signup(client))


def assert_refused(client: Client, access: str | None = None, refresh: str | None = None) -> None:
    if access is not None:
        response = client.get(ME, token=access)
        assert response.status == 401, response.body
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {"detail": "Invalid or expired token"}
    if refresh is not None:
        response = client.post(REFRESH, json_body={"refresh_token": refresh})
        assert response.status == 401, response.body
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {"detail": "Invalid or expired refresh token"}


def assert_still_valid(client: Client, access: str, refresh: str) -> None:
    assert client.get(ME, token=access).status == 200
    assert client.post(REFRESH, json_body={"refresh_token": refresh}).status == 200


def test_alg_none_is_refused(client: Client, pair: tuple[str, str]) -> None:
    access, refresh = pair
    assert_refused(
        client,
        access=forge(payload_of(access), alg="none"),
        refresh=forge(payload_of(refresh), alg="none"),
    )
    # The same with the header's algorithm spelled in other cases.
    for spelling in ("None", "NONE"):
        forged = forge(payload_of(access), alg="none", header={"alg": spelling, "typ": "JWT"})
        assert_refused(client, access=forged)
    assert_still_valid(client, access, refresh)


def test_another_algorithm_with_the_right_key_is_refused(
    client: Client, pair: tuple[str, str]
) -> None:
    """Exactly one algorithm is allowed, even when the signature itself is genuine."""
    access, refresh = pair
    assert_refused(
        client,
        access=forge(payload_of(access), alg="HS512"),
        refresh=forge(payload_of(refresh), alg="HS512"),
    )


def test_a_tampered_payload_is_refused(client: Client, pair: tuple[str, str]) -> None:
    access, refresh = pair
    stranger = tokens(signup(client, email="eve@example.com"))[0]
    for token, change in (
        (access, {"sub": payload_of(stranger)["sub"]}),
        (access, {"exp": payload_of(access)["exp"] + 3600}),
        (refresh, {"type": "access"}),
    ):
        head, _, signature = token.split(".")
        body = forge({**payload_of(token), **change}).split(".")[1]
        tampered = f"{head}.{body}.{signature}"
        assert_refused(client, access=tampered)
    head, body, signature = refresh.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert_refused(client, refresh=f"{head}.{body}.{flipped}")
    assert_still_valid(client, access, refresh)


def test_a_token_signed_with_another_key_is_refused(client: Client, pair: tuple[str, str]) -> None:
    access, refresh = pair
    assert_refused(
        client,
        access=forge(payload_of(access), secret="some-other-key-of-the-same-length-as-ours!"),
        refresh=forge(payload_of(refresh), secret="some-other-key-of-the-same-length-as-ours!"),
    )


def test_an_expired_token_is_refused(client: Client, pair: tuple[str, str]) -> None:
    access, _ = pair
    claims = decode_token(access, expected_type="access")
    long_ago = datetime.now(UTC) - timedelta(days=30)
    expired: TokenPair = issue_token_pair(
        user_id=claims.user_id, session_id=claims.session_id, now=long_ago
    )
    assert_refused(client, access=expired.access.token, refresh=expired.refresh.token)
    just_expired = issue_token(
        user_id=claims.user_id,
        session_id=claims.session_id,
        token_type="access",
        lifetime=timedelta(minutes=15),
        now=datetime.now(UTC) - timedelta(minutes=15, seconds=2),
    )
    assert_refused(client, access=just_expired.token)


def test_the_wrong_token_type_is_refused(client: Client, pair: tuple[str, str]) -> None:
    access, refresh = pair
    assert_refused(client, access=refresh, refresh=access)
    for odd in ("Access", "id", None, 1):
        assert_refused(
            client,
            access=forge({**payload_of(access), "type": odd}),
            refresh=forge({**payload_of(refresh), "type": odd}),
        )
    assert_still_valid(client, access, refresh)


@pytest.mark.parametrize("claim", ["sub", "type", "jti", "iat", "exp", "sid"])
def test_every_claim_is_required(client: Client, pair: tuple[str, str], claim: str) -> None:
    access, refresh = pair
    without = {k: v for k, v in payload_of(access).items() if k != claim}
    without_refresh = {k: v for k, v in payload_of(refresh).items() if k != claim}
    assert_refused(client, access=forge(without), refresh=forge(without_refresh))


@pytest.mark.parametrize(
    "change",
    [
        {"sub": "not-a-uuid"},
        {"sub": 12},
        {"sid": "not-a-uuid"},
        {"sid": None},
        {"jti": ""},
        {"jti": "j" * 65},
        {"jti": 7},
        {"iat": "yesterday"},
        {"exp": "tomorrow"},
        {"exp": 10**20},
        {"iat": True},
        # Issued an hour from now: only a forger with the key could have made it. (A fixed
        # id: parallel workers must collect the same test names.)
        pytest.param(
            {"iat": int((datetime.now(UTC) + timedelta(hours=1)).timestamp())},
            id="iat=in-an-hour",
        ),
    ],
    ids=lambda change: "-".join(f"{k}={str(v)[:12]}" for k, v in change.items()),
)
def test_malformed_claims_are_refused(
    client: Client, pair: tuple[str, str], change: dict[str, Any]
) -> None:
    access, refresh = pair
    assert_refused(
        client,
        access=forge({**payload_of(access), **change}),
        refresh=forge({**payload_of(refresh), **change}),
    )


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c", "a.b.c.d", "é.é.é", "x" * 5000, "eyJhbGciOiJIUzI1NiJ9..."],
    ids=[
        "empty",
        "word",
        "two-parts",
        "three-words",
        "four-parts",
        "non-ascii",
        "huge",
        "empty-body",
    ],
)
def test_garbage_is_refused(client: Client, token: str) -> None:
    response = client.post(REFRESH, json_body={"refresh_token": token})
    assert response.status == 401
    if token.isascii() and token:
        assert_refused(client, access=token)


def test_a_token_for_a_session_that_does_not_exist_is_refused(
    client: Client, pair: tuple[str, str], db: Database
) -> None:
    access, _ = pair
    claims = decode_token(access, expected_type="access")
    ghost = issue_token_pair(user_id=claims.user_id, session_id=uuid.uuid4())
    response = client.get(ME, token=ghost.access.token)
    assert (response.status, response.json()) == (401, {"detail": "Session expired or revoked"})
    response = client.post(REFRESH, json_body={"refresh_token": ghost.refresh.token})
    assert (response.status, response.json()) == (401, {"detail": "Session expired or revoked"})
    # Another user's id with this user's session is refused too.
    stranger = decode_token(
        tokens(signup(client, email="eve@example.com"))[0], expected_type="access"
    )
    mixed = issue_token_pair(user_id=stranger.user_id, session_id=claims.session_id)
    assert client.get(ME, token=mixed.access.token).status == 401
    assert client.post(REFRESH, json_body={"refresh_token": mixed.refresh.token}).status == 401
    assert client.get(ME, token=access).status == 200


def test_tokens_carry_the_contract_claims(pair: tuple[str, str]) -> None:
    access, refresh = pair
    for token, token_type in ((access, "access"), (refresh, "refresh")):
        header = payload_of("x." + token.split(".")[0])
        # `kid` names the signing key of the ring ("default" for a plain-string secret).
        assert header == {"alg": "HS256", "typ": "JWT", "kid": "default"}
        payload = payload_of(token)
        assert set(payload) == {"sub", "type", "jti", "iat", "exp", "sid"}
        assert payload["type"] == token_type
    access_claims, refresh_claims = payload_of(access), payload_of(refresh)
    assert access_claims["exp"] - access_claims["iat"] == 15 * 60
    assert refresh_claims["exp"] - refresh_claims["iat"] == 7 * 24 * 3600
    assert access_claims["sid"] == refresh_claims["sid"]
    assert access_claims["jti"] != refresh_claims["jti"]


def test_lifetimes_and_algorithm_follow_the_settings(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RFC 7518 asks HS512 for a key of at least 64 bytes (PyJWT warns below that).
    long_secret = JWT_KEY * 2
    configure(
        monkeypatch,
        access_token_expire_minutes="5",
        refresh_token_expire_days="2",
        jwt_algorithm="HS512",
        jwt_secret_key=long_secret,
    )
    client = Client("auth")
    body = signup(client).json()
    assert body["expires_in"] == 300
    access = payload_of(body["access_token"])
    refresh = payload_of(body["refresh_token"])
    assert access["exp"] - access["iat"] == 300
    assert refresh["exp"] - refresh["iat"] == 2 * 24 * 3600
    assert payload_of("x." + body["access_token"].split(".")[0])["alg"] == "HS512"
    assert client.get(ME, token=body["access_token"]).status == 200
    # An HS256 token with the right key is now the wrong algorithm.
    assert client.get(ME, token=forge(access, secret=long_secret)).status == 401


# ---------------------------------------------------------------------------------------
# Access tokens verified once per container (`taskapi.tokens.VERIFIED_TOKENS`)


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token PyJWT verifies from now on."""
    verified: list[str] = []
    real_decode = jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        verified.append(token)
        return real_decode(token, *args, **kwargs)

    # `taskapi.tokens` calls `jwt.decode` through the module.
    monkeypatch.setattr(jwt, "decode", counting)
    return verified


def test_an_access_token_is_verified_once_while_it_lives(
    client: Client, pair: tuple[str, str], verifications: list[str]
) -> None:
    access, refresh = pair
    for _ in range(3):
        assert client.get(ME, token=access).status == 200
    assert verifications == [access]
    # Refresh tokens are used once each: each is verified, none is remembered.
    assert client.post(REFRESH, json_body={"refresh_token": refresh}).status == 200
    assert verifications == [access, refresh]
    assert refresh not in tokens_module.VERIFIED_TOKENS._tokens


def test_a_remembered_token_is_refused_once_it_expires(
    client: Client, pair: tuple[str, str]
) -> None:
    claims = decode_token(pair[0], expected_type="access")
    # A token that expires within seconds, remembered by a first request made before it
    # expires. On a loaded machine that request can outlive a short token: then the
    # attempt proves nothing and a longer-lived token is tried.
    for seconds in (2, 5, 15):
        short = issue_token(
            user_id=claims.user_id,
            session_id=claims.session_id,
            token_type="access",
            lifetime=timedelta(seconds=seconds),
            # Issued a second ago (iat is whole seconds).
            now=datetime.now(UTC) - timedelta(seconds=1),
        )
        status = client.get(ME, token=short.token).status
        if datetime.now(UTC) < short.claims.expires_at:
            break
    assert status == 200
    assert short.token in tokens_module.VERIFIED_TOKENS._tokens
    while datetime.now(UTC) < short.claims.expires_at:
        time.sleep(0.05)
    assert_refused(client, access=short.token)


def test_a_remembered_token_of_a_key_no_longer_in_the_ring_is_refused(
    client: Client, pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    access, _ = pair
    assert client.get(ME, token=access).status == 200
    configure(monkeypatch, jwt_secret_key="another-signing-key-" + "z" * 40)
    assert_refused(client, access=access)


def test_a_remembered_token_is_refused_once_its_session_is_revoked(
    client: Client, pair: tuple[str, str]
) -> None:
    access, _ = pair
    assert client.get(ME, token=access).status == 200
    assert client.post("/api/auth/logout", token=access).status == 200
    response = client.get(ME, token=access)
    assert response.status == 401
    assert response.json() == {"detail": "Session expired or revoked"}


def test_a_token_one_character_off_a_remembered_one_is_verified_in_full(
    client: Client, pair: tuple[str, str], verifications: list[str]
) -> None:
    access, _ = pair
    assert client.get(ME, token=access).status == 200
    header, payload, signature = access.split(".")
    # The first character of the signature: every bit of it counts (the last one's low
    # bits are padding, and a change there may decode to the same bytes).
    other = "B" if signature[0] != "B" else "C"
    # Another user's id under this token's signature.
    other_payload = forge({**payload_of(access), "sub": str(uuid.uuid4())}).split(".")[1]
    tampered = [
        f"{header}.{payload}.{other}{signature[1:]}",
        f"{header}.{other_payload}.{signature}",
        access + "A",
    ]
    for token in tampered:
        assert_refused(client, access=token)
    # Each went to PyJWT in full, and failed there; none was remembered.
    assert verifications == [access, *tampered]
    assert not any(token in tokens_module.VERIFIED_TOKENS._tokens for token in tampered)


def test_the_remembered_tokens_are_bounded() -> None:
    remembered = tokens_module.VerifiedTokens(size=2)
    keys, algorithm = get_jwt_keys(), "HS256"
    issued = [
        issue_token(
            user_id=uuid.uuid4(),
            session_id=uuid.uuid4(),
            token_type="access",
            lifetime=timedelta(minutes=15),
        )
        for _ in range(3)
    ]
    for token in issued:
        remembered.add(token.token, token.claims, keys, algorithm)
    assert len(remembered) == 2
    assert remembered.get(issued[0].token, keys, algorithm) is None
    assert remembered.get(issued[2].token, keys, algorithm) == issued[2].claims
    # Verified with another algorithm than the one in use: not taken from memory.
    assert remembered.get(issued[2].token, keys, "HS512") is None
