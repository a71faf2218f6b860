"""Hostile input: oversized bodies and headers, deeply nested JSON, bytes that are not UTF-8,
SQL metacharacters, odd ids and limits, forged JWTs. Each gets a clear 4xx (JSON with a
`detail`) and leaves every table exactly as it was."""

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.client import Client, Response
from tests.support.database import Database
from tests.support.keys import JWT_KEY, forge
from tests.support.tasks import Account, insert_task, make_account

TABLES = {
    "user": 'SELECT id, email, name, hashed_password, is_active FROM "user" ORDER BY id',
    "auth_session": "SELECT id, user_id, refresh_jti, revoked_at FROM auth_session ORDER BY id",
    "login_attempt": "SELECT * FROM login_attempt ORDER BY 1",
    "task": "SELECT id, user_id, title, description, status, priority, completed_at, "
    "deleted_at, version FROM task ORDER BY id",
}


def snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    return {table: [tuple(row) for row in db.rows(sql)] for table, sql in TABLES.items()}


@dataclass
class World:
    db: Database
    owner: Account
    task_id: int
    tasks: Client
    auth: Client


@pytest.fixture
def world(db: Database) -> World:
    owner = make_account("owner@example.com")
    task_id = insert_task(owner, "100% done", description="it's a_b \\ test")
    insert_task(owner, "plain")
    make_account("other@example.com")
    return World(db, owner, task_id, Client("tasks"), Client("auth"))


def assert_clear_4xx(response: Response, status: int) -> None:
    assert response.status == status, response.body
    assert response.headers["content-type"] == "application/json"
    assert response.json()["detail"]


def claims(owner: Account, **changes: Any) -> dict[str, Any]:
    """The claims of a valid access token for the owner's session, with changes."""
    now = int(time.time())
    payload = {
        "sub": str(owner.user_id),
        "sid": str(owner.session_id),
        "type": "access",
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 600,
    }
    payload.update(changes)
    return {key: value for key, value in payload.items() if value is not None}


def rs256_token(payload: dict[str, Any]) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    token: str = jwt.encode(payload, pem.decode(), algorithm="RS256")
    return token


# Each forged token is tried on a read and on writes; none may get in.
FORGED_TOKENS: dict[str, Callable[[Account], str]] = {
    "alg none": lambda owner: forge(claims(owner), alg="none"),
    "alg none, signature kept": lambda owner: (
        forge(claims(owner), alg="none") + forge(claims(owner)).split(".")[2]
    ),
    "HS512 with the right key": lambda owner: forge(claims(owner), alg="HS512"),
    "RS256": lambda owner: rs256_token(claims(owner)),
    "HS256 header claiming RS256": lambda owner: forge(
        claims(owner), header={"alg": "RS256", "typ": "JWT"}
    ),
    "no exp": lambda owner: forge(claims(owner, exp=None)),
    "expired": lambda owner: forge(claims(owner, iat=1, exp=2)),
    "iat an hour ahead": lambda owner: forge(claims(owner, iat=int(time.time()) + 3600)),
    "huge jti": lambda owner: forge(claims(owner, jti="j" * 100_000)),
    "jti not a string": lambda owner: forge(claims(owner, jti=12345)),
    "refresh token as access": lambda owner: forge(claims(owner, type="refresh")),
    "another secret": lambda owner: forge(claims(owner), secret=JWT_KEY + "x"),
    "unknown session": lambda owner: forge(claims(owner, sid=str(uuid.uuid4()))),
    "sub not a uuid": lambda owner: forge(claims(owner, sub="1 OR 1=1")),
    "not a JWT": lambda owner: "definitely.not.a-jwt",
    "empty": lambda owner: "",
}


@pytest.mark.parametrize("name", list(FORGED_TOKENS))
def test_forged_tokens_get_401_and_change_nothing(world: World, name: str) -> None:
    token = FORGED_TOKENS[name](world.owner)
    before = snapshot(world.db)
    header = {"authorization": f"Bearer {token}"}
    path = f"/api/tasks/{world.task_id}"
    calls = [
        world.tasks.get("/api/tasks", headers=header),
        world.tasks.post("/api/tasks", json_body={"title": "intruder"}, headers=header),
        world.tasks.put(path, json_body={"title": "owned"}, headers=header),
        world.tasks.patch(f"{path}/complete", headers=header),
        world.tasks.delete(path, headers=header),
        world.auth.get("/api/auth/me", headers=header),
        world.auth.post("/api/auth/logout", headers=header),
    ]
    for response in calls:
        assert_clear_4xx(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
    assert snapshot(world.db) == before


def test_the_genuine_token_still_works(world: World) -> None:
    """The forgeries above are refused for what they change, not for the claims' shape."""
    response = world.tasks.get(
        "/api/tasks", headers={"authorization": f"Bearer {forge(claims(world.owner))}"}
    )
    assert response.status == 200
    assert response.json()["total"] == 2


def deep(levels: int) -> str:
    return '{"title": ' + "[" * levels + "]" * levels + "}"


JSON = {"content-type": "application/json"}

# name: (method, path, request keywords, expected status)
BAD_REQUESTS: dict[str, tuple[str, str, dict[str, Any], int]] = {
    # Bodies over the route's 64 KiB are refused before parsing.
    "title of 1 MB": ("POST", "/api/tasks", {"json_body": {"title": "x" * 1_000_000}}, 413),
    "body of 5 MB": (
        "POST",
        "/api/tasks",
        {"json_body": {"title": "t", "description": "d" * 5_000_000}},
        413,
    ),
    "unknown field of 1 MB": (
        "POST",
        "/api/tasks",
        {"json_body": {"title": "t", "extra": "x" * 1_000_000}},
        413,
    ),
    "JSON nested 100,000 deep": (
        "POST",
        "/api/tasks",
        {"body": "[" * 100_000 + "]" * 100_000, "headers": JSON},
        413,
    ),
    "value nested 900 deep": ("POST", "/api/tasks", {"body": deep(900), "headers": JSON}, 422),
    "update nested 5,000 deep": ("PUT", "{task}", {"body": deep(5000), "headers": JSON}, 422),
    "body not UTF-8": (
        "POST",
        "/api/tasks",
        {"body": b'{"title": "\xff\xfe"}', "headers": JSON},
        422,
    ),
    "body Latin-1": (
        "PUT",
        "{task}",
        {"body": '{"title": "café"}'.encode("latin-1"), "headers": JSON},
        422,
    ),
    "body lone surrogate escape": (
        "POST",
        "/api/tasks",
        {"body": '{"title": "\\ud800"}', "headers": JSON},
        422,
    ),
    "title with NUL": ("POST", "/api/tasks", {"json_body": {"title": "a\x00b"}}, 422),
    "q with NUL": ("GET", "/api/tasks", {"query": {"q": "a\x00b"}}, 422),
    "q of 10,000 characters": ("GET", "/api/tasks", {"query": {"q": "%" * 10_000}}, 422),
    "limit of 10^9": ("GET", "/api/tasks", {"query": {"limit": 10**9}}, 422),
    "limit of 0": ("GET", "/api/tasks", {"query": {"limit": 0}}, 422),
    "negative skip": ("GET", "/api/tasks", {"query": {"skip": -1}}, 422),
    "skip of 10^12": ("GET", "/api/tasks", {"query": {"skip": 10**12}}, 422),
    "sort by SQL": ("GET", "/api/tasks", {"query": {"sort": "title; DROP TABLE task"}}, 422),
    "status by SQL": ("GET", "/api/tasks", {"query": {"status": "' OR '1'='1"}}, 422),
    "negative id": ("GET", "/api/tasks/-1", {}, 422),
    "zero id": ("DELETE", "/api/tasks/0", {}, 422),
    "id past 32 bits": ("GET", f"/api/tasks/{2**31}", {}, 422),
    "id of 40 digits": ("PUT", "/api/tasks/" + "9" * 40, {"json_body": {"title": "x"}}, 422),
    "id in exponent form": ("GET", "/api/tasks/1e3", {}, 422),
    "id with SQL": ("DELETE", "/api/tasks/1%20OR%201=1", {}, 422),
    "id not UTF-8": ("GET", "/api/tasks/%ff%fe", {}, 422),
    "id with NUL": ("PATCH", "/api/tasks/1%00/complete", {}, 422),
    "traversal in id": ("GET", "/api/tasks/..%2F..%2Fetc%2Fpasswd", {}, 404),
    "dot segments in path": ("DELETE", "/api/tasks/../auth/me", {}, 404),
    "Authorization of 100 kB": ("GET", "/api/tasks", {"token": "a" * 100_000}, 401),
    "If-Match of 100 kB": (
        "PUT",
        "{task}",
        {"json_body": {"title": "x"}, "headers": {"if-match": '"0-0",' * 20_000}},
        412,
    ),
    "signup with a 1 MB password": (
        "POST",
        "/api/auth/signup",
        {"json_body": {"email": "big@example.com", "name": "Big", "password": "p" * 1_000_000}},
        413,
    ),
    "login with a 1 MB email": (
        "POST",
        "/api/auth/login",
        {"json_body": {"email": "e" * 1_000_000 + "@example.com", "password": "whatever1"}},
        413,
    ),
    "refresh with a 1 MB token": (
        "POST",
        "/api/auth/refresh",
        {"json_body": {"refresh_token": "r" * 1_000_000}},
        413,
    ),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_requests_get_a_clear_4xx_and_change_nothing(world: World, name: str) -> None:
    method, path, keywords, status = BAD_REQUESTS[name]
    path = path.replace("{task}", f"/api/tasks/{world.task_id}")
    client = world.auth if path.startswith("/api/auth/") else world.tasks
    keywords = dict(keywords)
    if path.startswith("/api/tasks"):
        keywords.setdefault("token", world.owner.token)
    before = snapshot(world.db)
    response = client.request(method, path, **keywords)
    assert_clear_4xx(response, status)
    assert len(response.body) < 10_000, "errors never echo a large input back"
    assert snapshot(world.db) == before


@pytest.mark.parametrize(
    ("q", "titles"),
    [
        ("%", ["100% done"]),
        ("_", ["100% done"]),  # the description holds "a_b"
        ("0% d", ["100% done"]),
        ("' OR '1'='1", []),
        ("'; DROP TABLE task; --", []),
        ("\\", ["100% done"]),
        ('"', []),
        ("it's", ["100% done"]),
        ("%_%", []),
        ("PLAIN", ["plain"]),
    ],
)
def test_search_text_matches_itself_never_sql(world: World, q: str, titles: list[str]) -> None:
    before = snapshot(world.db)
    response = world.tasks.get("/api/tasks", query={"q": q}, token=world.owner.token)
    assert response.status == 200, response.body
    assert [task["title"] for task in response.json()["items"]] == titles
    assert snapshot(world.db) == before


def test_a_huge_skip_within_range_is_an_empty_page(world: World) -> None:
    response = world.tasks.get("/api/tasks", query={"skip": 2**31 - 1}, token=world.owner.token)
    assert response.status == 200, response.body
    assert response.json()["items"] == []
    assert response.json()["total"] == 2
