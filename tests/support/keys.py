"""The tests' one JWT signing key, tokens made by hand, and key rings as the JWT secret holds
them (docs/API.md, "Keys and secrets")."""

import base64
import hashlib
import hmac
import json
from typing import Any

# The `db` fixture's JWT_SECRET_KEY, and the local server's in the end-to-end tests, so that
# tokens made on either side work on the other.
JWT_KEY = "test-secret-key-that-is-long-enough-for-hs256"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(
    payload: dict[str, Any],
    *,
    secret: str = JWT_KEY,
    alg: str = "HS256",
    header: dict[str, Any] | None = None,
) -> str:
    """A JWT built by hand (not by the layer), so tests can make any token an attacker could."""
    head = _b64(json.dumps(header or {"alg": alg, "typ": "JWT"}).encode())
    body = _b64(json.dumps(payload).encode())
    signing_input = f"{head}.{body}".encode()
    if alg == "none":
        return f"{head}.{body}."
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    signature = hmac.new(secret.encode(), signing_input, digest).digest()
    return f"{head}.{body}.{_b64(signature)}"


def payload_of(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return result


def kid_of(token: str) -> Any:
    """The `kid` of a token's header (None if it has none)."""
    return payload_of("x." + token.split(".")[0]).get("kid")


def ring(current: tuple[str, str], *previous: tuple[str, str]) -> str:
    """A key ring, as the JWT secret holds one: `(kid, key)` pairs, the signing key first."""
    return json.dumps(
        {
            "current": {"kid": current[0], "key": current[1]},
            "previous": [{"kid": kid, "key": key} for kid, key in previous],
        }
    )
