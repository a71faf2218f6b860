"""Property-based: whatever a bearer token holds, the parser answers `InvalidTokenError`
(never another exception) and every authenticated route answers 401 with
`WWW-Authenticate: Bearer` (never a 5xx).

Generated tokens: arbitrary text and bytes, JWS segments of arbitrary JSON (deeply nested,
huge and non-finite numbers, wrong types), and payloads signed with the real key so that
they reach the claim checks. Derandomized (a fixed seed) and bounded, so `make test`
runs the same examples every time.
"""

import base64
import functools
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from taskapi.factory import DEFAULT_MAX_BODY_BYTES
from taskapi.tokens import TOKEN_MAX_LENGTH, InvalidTokenError, TokenClaims, decode_token
from tests.support.client import Client
from tests.support.database import Database
from tests.support.keys import JWT_KEY

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jws(header: bytes, payload: bytes, *, secret: str | None = JWT_KEY) -> str:
    """A compact JWS of raw header and payload bytes, HS256-signed with `secret` (or a
    junk signature)."""
    signing_input = f"{b64(header)}.{b64(payload)}"
    if secret is None:
        return f"{signing_input}.{b64(b'not a signature')}"
    digest = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(digest)}"


HEADER = json.dumps({"alg": "HS256", "typ": "JWT"}).encode()


def claims(**changes: Any) -> bytes:
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": str(uuid.uuid4()),
        "sid": str(uuid.uuid4()),
        "type": "access",
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 600,
    }
    payload.update(changes)
    # allow_nan: NaN and Infinity as JavaScript writes them, which Python's json reads.
    return json.dumps(payload, allow_nan=True).encode()


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# The two tokens of the security review: an unsigned header of thousands of nested arrays,
# and `exp`/`iat` = Infinity signed with the real key.
NESTED_HEADER = f"{b64(nested(5000))}.{b64(claims())}.{b64(b'sig')}"
INFINITE_EXP = jws(HEADER, claims(exp=float("inf")))
INFINITE_IAT = jws(HEADER, claims(iat=float("inf")))
NAN_EXP = jws(HEADER, claims(exp=float("nan")))
HUGE_EXP = jws(HEADER, claims(exp=10**4000))
# Longer than Python's int-to-str digit limit: json.loads raises ValueError on it.
OVERLONG_EXP = jws(HEADER, claims().replace(b'"exp": ', b'"exp": ' + b"9" * 5000 + b', "x": '))

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**1000)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
claim_names = st.sampled_from(["sub", "sid", "type", "jti", "iat", "exp", "kid", "nbf"])


@st.composite
def signed_claims(draw: st.DrawFn) -> str:
    """Real-key tokens whose claims are replaced or removed by arbitrary JSON values."""
    changes = draw(st.dictionaries(claim_names, json_values, max_size=3))
    payload = json.loads(claims())
    payload.update(changes)
    for name in draw(st.lists(claim_names, max_size=2)):
        payload.pop(name, None)
    return jws(HEADER, json.dumps(payload, allow_nan=True).encode())


@st.composite
def odd_segments(draw: st.DrawFn) -> str:
    """JWS segments of arbitrary bytes or JSON, signed or not."""
    parts = [
        draw(
            st.binary(max_size=64)
            | json_values.map(lambda v: json.dumps(v, allow_nan=True).encode())
            | st.integers(min_value=900, max_value=3000).map(nested)
        )
        for _ in range(2)
    ]
    return jws(parts[0], parts[1], secret=draw(st.sampled_from([JWT_KEY, None])))


tokens = st.one_of(
    st.text(max_size=64),
    st.text(alphabet="ABCabc0123456789-_.", max_size=TOKEN_MAX_LENGTH + 10),
    st.binary(max_size=64).map(lambda raw: raw.decode("latin-1")),
    odd_segments(),
    signed_claims(),
    st.builds(lambda n: "a" * n + ".b.c", st.integers(min_value=TOKEN_MAX_LENGTH, max_value=10**5)),
)

EXPLICIT = [NESTED_HEADER, INFINITE_EXP, INFINITE_IAT, NAN_EXP, HUGE_EXP, OVERLONG_EXP]


def with_examples(test: Any, *, routes: list[tuple[str, str, str]] | None = None) -> Any:
    """The review's tokens as explicit examples (on every route, for a route test)."""
    for token in EXPLICIT:
        if routes is None:
            test = example(token=token)(test)
        else:
            for route in routes:
                test = example(token=token, route=route)(test)
    return test


def signed_claims_of(token: str) -> TokenClaims:
    """The claims a token's payload segment holds, read without the parser under test."""
    segment = token.split(".")[1]
    payload = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return TokenClaims(
        user_id=uuid.UUID(payload["sub"]),
        session_id=uuid.UUID(payload["sid"]),
        token_type=payload["type"],
        jti=payload["jti"],
        issued_at=datetime.fromtimestamp(payload["iat"], UTC),
        expires_at=datetime.fromtimestamp(payload["exp"], UTC),
    )


@FUZZ
@with_examples
# A token the parser accepts, so that the comparison with what was signed always runs.
@example(token=jws(HEADER, claims()))
@given(token=tokens)
def test_the_parser_only_ever_refuses_garbage(db: Database, token: str) -> None:
    for expected_type in ("access", "refresh"):
        try:
            claims = decode_token(token, expected_type=expected_type)
        except InvalidTokenError:
            continue
        # A generated token may be well formed; then it carries what was signed.
        assert claims == signed_claims_of(token)


@pytest.mark.parametrize(
    "token", EXPLICIT, ids=["nested", "inf-exp", "inf-iat", "nan", "huge", "overlong"]
)
def test_the_review_tokens_are_invalid(db: Database, token: str) -> None:
    with pytest.raises(InvalidTokenError):
        decode_token(token, expected_type="access")


ROUTES = [
    ("auth", "GET", "/api/auth/me"),
    ("auth", "POST", "/api/auth/logout"),
    ("auth", "POST", "/api/auth/refresh"),
    ("tasks", "GET", "/api/tasks"),
    ("tasks", "GET", "/api/tasks/1"),
    ("tasks", "PUT", "/api/tasks/1"),
]


@pytest.fixture
def clients(db: Database) -> dict[str, Client]:
    return {"auth": Client("auth"), "tasks": Client("tasks")}


@FUZZ
@functools.partial(with_examples, routes=ROUTES)
@given(token=tokens, route=st.sampled_from(ROUTES))
def test_every_authenticated_route_answers_401(
    clients: dict[str, Client], token: str, route: tuple[str, str, str]
) -> None:
    domain, method, path = route
    client = clients[domain]
    if path == "/api/auth/refresh":
        refresh = {"refresh_token": token}
        response = client.post(path, json_body=refresh)
        if len(json.dumps(refresh).encode()) > DEFAULT_MAX_BODY_BYTES:
            # A token too long for the route's body bound is refused before it is read.
            assert response.status == 413, (response.status, response.body[:300])
            return
    else:
        # API Gateway hands headers over as text; a header cannot hold line breaks.
        header_token = token.replace("\r", "").replace("\n", "")
        body = {"title": "x"} if method == "PUT" else None
        response = client.request(method, path, headers={}, json_body=body, token=header_token)
    assert response.status == 401, (response.status, response.body[:300])
    assert response.headers["www-authenticate"] == "Bearer"
    assert isinstance(response.json()["detail"], str)
