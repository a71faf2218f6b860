"""Bad input, bounded (issue 29, finding 2): a body over what its route takes is 413 before
FastAPI parses it, a 422 lists at most 20 errors, and the local server refuses a result
over Lambda's 6 MB response limit (tests/test_localapi.py). Through the real handlers, and
as the review found it: over real HTTP through the local server."""

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from pydantic import BaseModel

from localapi.events import http_event
from taskapi.factory import (
    DEFAULT_MAX_BODY_BYTES,
    MAX_VALIDATION_ERRORS,
    create_app,
    function_router,
    make_handler,
    max_body_bytes,
)
from tests.support.auth import PASSWORD, signup, tokens
from tests.support.client import Client, invoke
from tests.support.database import Database

LOGIN = "/api/auth/login"


def unknown_keys(size: int) -> bytes:
    """A login body padded to about `size` bytes with keys no model has (each one a 422
    entry when the body is parsed)."""
    body: dict[str, object] = {"email": "ada@example.com", "password": PASSWORD}
    keys = (size - 80) // len('"k000000000000":0,')
    body.update({f"k{number:012d}": 0 for number in range(keys)})
    return json.dumps(body, separators=(",", ":")).encode()


@pytest.mark.client("auth")
@pytest.mark.parametrize("path", [LOGIN, "/api/auth/signup"])
def test_a_body_over_64_kib_is_413_before_parsing(client: Client, path: str) -> None:
    body = unknown_keys(DEFAULT_MAX_BODY_BYTES + 100)
    assert len(body) > DEFAULT_MAX_BODY_BYTES
    response = client.post(path, body=body, headers={"content-type": "application/json"})
    assert response.status == 413
    assert response.json() == {
        "detail": f"The request body is larger than this route takes ({DEFAULT_MAX_BODY_BYTES}"
        " bytes)"
    }


def test_a_body_over_64_kib_is_413_on_an_authenticated_route(client: Client, db: Database) -> None:
    access, _ = tokens(signup(Client("auth")))
    response = client.post(
        "/api/tasks",
        body=b'{"title": "x", "description": "' + b"a" * DEFAULT_MAX_BODY_BYTES + b'"}',
        headers={"content-type": "application/json"},
        token=access,
    )
    assert response.status == 413
    # Nothing was written.
    listed = client.get("/api/tasks", token=access)
    assert listed.json()["total"] == 0


@pytest.mark.client("auth")
def test_a_422_lists_at_most_20_errors(client: Client, db: Database) -> None:
    body = unknown_keys(DEFAULT_MAX_BODY_BYTES - 100)
    response = client.post(LOGIN, body=body, headers={"content-type": "application/json"})
    assert response.status == 422
    errors = response.json()["detail"]
    assert len(errors) == MAX_VALIDATION_ERRORS
    assert {error["type"] for error in errors} == {"extra_forbidden"}
    assert errors[0]["loc"] == ["body", "k000000000000"]
    assert len(response.body) < len(body) / 10
    # A body with fewer errors lists them all.
    few = client.post(LOGIN, json_body={"email": "", "password": "x", "a": 1})
    assert few.status == 422
    assert [error["loc"] for error in few.json()["detail"]] == [
        ["body", "email"],
        ["body", "a"],
    ]


class Batch(BaseModel):
    items: list[str]


def test_a_route_may_take_a_larger_body() -> None:
    router = function_router()

    @router.post("/batch", openapi_extra=max_body_bytes(256 * 1024))
    async def batch(body: Batch) -> int:
        return len(body.items)

    @router.post("/one")
    async def one(body: Batch) -> int:
        return len(body.items)

    handler = make_handler(create_app(title="bounds", routers=[router], database=False))
    json_type = {"content-type": "application/json"}
    items = json.dumps({"items": ["x" * 1000] * 100})
    assert DEFAULT_MAX_BODY_BYTES < len(items) < 256 * 1024
    assert (
        invoke(handler, http_event("POST", "/batch", body=items, headers=json_type)).json() == 100
    )
    assert invoke(handler, http_event("POST", "/one", body=items, headers=json_type)).status == 413
    over = json.dumps({"items": ["x" * 1000] * 300})
    response = invoke(handler, http_event("POST", "/batch", body=over, headers=json_type))
    assert response.status == 413
    assert response.json() == {
        "detail": "The request body is larger than this route takes (262144 bytes)"
    }
    # A declared length over the bound is refused as it is, without reading the body.
    declared = http_event("POST", "/one", body="{}", headers={"content-length": "70000"})
    assert invoke(handler, declared).status == 413


# ---------------------------------------------------------------------------------------
# As the review found it: over real HTTP


def test_unknown_keys_over_real_http_cannot_amplify(api: httpx.Client) -> None:
    # 0.87 MB of unknown keys: 7.19 MB of 422 and seconds of CPU before; now 413 at once.
    body = unknown_keys(870_000)
    response = api.post(LOGIN, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["detail"].startswith("The request body is larger than")
    assert len(response.content) < 200
    # Three at once took two workers down at the Timeout before (504s).
    with ThreadPoolExecutor(3) as pool:
        burst = list(
            pool.map(
                lambda _: api.post(
                    LOGIN, content=body, headers={"content-type": "application/json"}
                ),
                range(3),
            )
        )
    assert [r.status_code for r in burst] == [413] * 3
    # The largest body the route takes still gets a bounded 422.
    near = unknown_keys(DEFAULT_MAX_BODY_BYTES - 100)
    refused = api.post(LOGIN, content=near, headers={"content-type": "application/json"})
    assert refused.status_code == 422
    assert len(refused.json()["detail"]) == MAX_VALIDATION_ERRORS
    assert len(refused.content) < len(near) / 10
