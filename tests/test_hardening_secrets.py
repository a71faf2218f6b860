"""No password, password hash, token, signing key or database password in any log line or
error body, across a representative run: sign-up, logins good and bad, refresh, the tasks
routes, logout, and a database outage with a password in the database URL."""

import logging
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.support.client import Client, Response
from tests.support.database import Database
from tests.support.environment import configure
from tests.support.keys import JWT_KEY
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres_only

PASSWORD = "Sw0rdfish-password-1"
WRONG_PASSWORD = "Wr0ng-guess-password-2"
DB_PASSWORD = "Db-pa55word-in-the-url"


@pytest.mark.postgres_only  # the database password case needs PostgreSQL
def test_no_secret_reaches_a_log_line_or_an_error_body(
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = make_url(db.url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    # The test server trusts local connections, so any password gets in: it only has to
    # appear in the URL that the layer holds.
    proxied = url.set(host="127.0.0.1", port=proxy.port, password=DB_PASSWORD)
    configure(
        monkeypatch,
        database_url=proxied.render_as_string(hide_password=False),
        database_connect_timeout="1",
        log_level="DEBUG",
    )
    caplog.set_level(logging.DEBUG)
    auth, tasks = Client("auth"), Client("tasks")
    errors: list[Response] = []
    secrets: list[str] = [PASSWORD, WRONG_PASSWORD, DB_PASSWORD, JWT_KEY]

    def call(response: Response) -> Response:
        if response.status >= 400:
            errors.append(response)
        return response

    credentials = {"email": "ada@example.com", "password": PASSWORD}
    signed_up = call(auth.post("/api/auth/signup", json_body={**credentials, "name": "Ada"}))
    assert signed_up.status == 201
    call(auth.post("/api/auth/signup", json_body={**credentials, "name": "Ada"}))  # 409
    call(auth.post("/api/auth/signup", json_body={"email": "x@example.com", "password": PASSWORD}))
    call(auth.post("/api/auth/signup", json_body={**credentials, "password": "short"}))
    call(auth.post("/api/auth/login", json_body={**credentials, "password": WRONG_PASSWORD}))
    call(
        auth.post(
            "/api/auth/login", json_body={"email": "nobody@example.com", "password": PASSWORD}
        )
    )
    logged_in = call(auth.post("/api/auth/login", json_body=credentials)).json()
    access, refresh = logged_in["access_token"], logged_in["refresh_token"]
    refreshed = call(auth.post("/api/auth/refresh", json_body={"refresh_token": refresh})).json()
    call(auth.post("/api/auth/refresh", json_body={"refresh_token": refresh}))  # reuse: 401
    secrets += [
        signed_up.json()["access_token"],
        signed_up.json()["refresh_token"],
        access,
        refresh,
        refreshed["access_token"],
        refreshed["refresh_token"],
    ]
    # Reusing the rotated token revoked the login; a new one carries on.
    token = call(auth.post("/api/auth/login", json_body=credentials)).json()["access_token"]
    secrets.append(token)
    call(auth.get("/api/auth/me", token=token))
    created = call(tasks.post("/api/tasks", json_body={"title": "t"}, token=token)).json()
    path = f"/api/tasks/{created['id']}"
    call(tasks.get("/api/tasks", token=token))
    call(tasks.put(path, json_body={"title": "u"}, token=token))
    call(tasks.put(path, json_body={"title": None}, token=token))  # 422
    call(tasks.patch(f"{path}/complete", token=token))
    call(tasks.delete(path, token=token))
    call(tasks.get(path, token=token))  # 404
    call(tasks.get("/api/tasks", token=token + "x"))  # 401

    proxy.cut("reset")
    try:
        assert call(auth.post("/api/auth/login", json_body=credentials)).status == 503
        assert call(tasks.get("/api/tasks", token=token)).status == 503
        assert call(Client("health").get("/health/db")).status == 503
    finally:
        proxy.close()
    call(auth.post("/api/auth/logout", token=token))

    hashed = db.scalar('SELECT hashed_password FROM "user" WHERE email = :e', e="ada@example.com")
    secrets.append(hashed)
    captured = capfd.readouterr()
    records = "\n".join(_record_text(record) for record in caplog.records)
    bodies = "\n".join(response.body for response in errors)
    assert len(errors) >= 10
    assert "request" in captured.out  # the JSON request lines were captured
    for secret in secrets:
        for name, text in (("stdout", captured.out), ("stderr", captured.err)):
            assert secret not in text, f"a secret in {name}"
        assert secret not in records, "a secret in a log record"
        assert secret not in bodies, "a secret in an error body"


def _record_text(record: logging.LogRecord) -> str:
    extras: dict[str, Any] = vars(record)
    return f"{record.getMessage()} {extras!r} {record.exc_text or ''}"
