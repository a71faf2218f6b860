"""MigrateOnDeploy (template.yaml): the migrate function answering CloudFormation's
custom-resource requests, with a local HTTP server standing in for the ResponseURL."""

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa

from localapi.events import LambdaContext
from tests.support.database import Database
from tests.support.environment import configure
from tests.support.functions import load_module
from tests.support.silent_server import silent_server

STACK_ID = "arn:aws:cloudformation:us-east-1:123456789012:stack/taskapi-dev/0a1b2c3d"
VERSION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:taskapi-dev-MigrateFunction:{}"


@dataclass
class ResponseUrl:
    """A stand-in for the pre-signed S3 URL: records every PUT it receives."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    # The statuses of the next answers (then 200): S3 failing for a while.
    statuses: list[int] = field(default_factory=list)

    @property
    def body(self) -> dict[str, Any]:
        (request,) = self.requests
        body: dict[str, Any] = request["body"]
        return body


@pytest.fixture
def response_url() -> Iterator[ResponseUrl]:
    received: list[dict[str, Any]] = []
    statuses: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(
                {
                    "path": self.path,
                    "content_type": self.headers.get("Content-Type"),
                    "body": json.loads(self.rfile.read(length)),
                }
            )
            self.send_response(statuses.pop(0) if statuses else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        url = f"http://{host!s}:{port}/response?signature=abc"
        yield ResponseUrl(url, received, statuses)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def migrate() -> ModuleType:
    """migrations/handler.py, the MigrateFunction's entry point."""
    return load_module("migrations/handler.py", "migrate_handler")


@pytest.fixture
def hook(migrate: ModuleType) -> ModuleType:
    # The module that migrations/handler.py imported (the same name, so the same module).
    return load_module("migrations/deploy_hook.py", "deploy_hook")


def request(
    url: str, request_type: str, *, version: int = 2, old_version: int | None = None
) -> dict[str, Any]:
    """A custom-resource request as CloudFormation sends it."""
    event: dict[str, Any] = {
        "RequestType": request_type,
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:migrate",
        "ResponseURL": url,
        "StackId": STACK_ID,
        "RequestId": "5d7b6a3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
        "LogicalResourceId": "MigrateOnDeploy",
        "ResourceType": "Custom::DatabaseMigration",
        "ResourceProperties": {
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:migrate",
            "FunctionVersion": VERSION_ARN.format(version),
        },
    }
    if request_type != "Create":
        event["PhysicalResourceId"] = "MigrateOnDeploy-migrations"
    if old_version is not None:
        event["OldResourceProperties"] = {"FunctionVersion": VERSION_ARN.format(old_version)}
    return event


@pytest.fixture
def fresh(empty_database: Database, monkeypatch: pytest.MonkeyPatch) -> Database:
    """An empty database (no tables at all) that the layer points at."""
    configure(monkeypatch, stage="test", database_url=empty_database.url)
    return empty_database


def tables(database: Database) -> set[str]:
    return set(sa.inspect(database.engine).get_table_names())


def head(migrate: ModuleType) -> str:
    revision: str = migrate.head_revision()
    return revision


BACKENDS = pytest.mark.parametrize("empty_database", ["sqlite", "postgresql"], indirect=True)


# ---------------------------------------------------------------------------------------
# The response body


def test_the_response_body_follows_the_protocol(hook: ModuleType) -> None:
    event = request("https://example.invalid/r", "Create")
    body = hook.response_body(
        event, status="SUCCESS", reason="done", data={"Before": None, "After": "0001"}
    )
    assert body == {
        "Status": "SUCCESS",
        "Reason": "done",
        "PhysicalResourceId": "MigrateOnDeploy-migrations",
        "StackId": STACK_ID,
        "RequestId": event["RequestId"],
        "LogicalResourceId": "MigrateOnDeploy",
        "NoEcho": False,
        # Attributes are strings; no revision yet is the empty string.
        "Data": {"Before": "", "After": "0001"},
    }


def test_the_physical_id_stays_the_same_on_update(hook: ModuleType) -> None:
    event = request("https://example.invalid/r", "Update", old_version=1)
    event["PhysicalResourceId"] = "kept-from-create"
    assert hook.response_body(event, status="SUCCESS", reason="")["PhysicalResourceId"] == (
        "kept-from-create"
    )


def test_a_long_reason_is_cut_to_fit_cloudformations_limit(hook: ModuleType) -> None:
    event = request("https://example.invalid/r", "Create")
    body = hook.response_body(event, status="FAILED", reason="x" * 10_000)
    assert len(json.dumps(body)) < 4096
    assert body["Reason"] == "x" * hook.MAX_REASON


def test_custom_resource_requests_are_told_from_migrate_events(hook: ModuleType) -> None:
    assert hook.is_custom_resource_event(request("https://example.invalid/r", "Create"))
    assert not hook.is_custom_resource_event({"action": "upgrade"})
    assert not hook.is_custom_resource_event(None)


def test_a_rollback_is_an_update_to_an_older_version(hook: ModuleType) -> None:
    url = "https://example.invalid/r"
    assert hook.is_rollback(request(url, "Update", version=3, old_version=4))
    assert not hook.is_rollback(request(url, "Update", version=4, old_version=3))
    assert not hook.is_rollback(request(url, "Create", version=3))
    assert not hook.is_rollback(request(url, "Delete", version=3, old_version=4))


# ---------------------------------------------------------------------------------------
# Dispatch through the Lambda entry point, responses PUT to the local server


@BACKENDS
def test_create_upgrades_the_database_and_reports_success(
    fresh: Database, migrate: ModuleType, response_url: ResponseUrl
) -> None:
    result = migrate.handler(request(response_url.url, "Create"), LambdaContext())

    assert {"user", "task", "auth_session", "login_attempt"} <= tables(fresh)
    assert fresh.scalar("SELECT version_num FROM alembic_version") == head(migrate)
    (received,) = response_url.requests
    assert received["path"] == "/response?signature=abc"
    # The pre-signed URL is signed without a content type: none may be sent.
    assert received["content_type"] == ""
    assert received["body"] == result
    assert result["Status"] == "SUCCESS"
    assert result["Data"] == {"Before": "", "After": head(migrate)}
    assert result["Reason"] == f"Upgraded from None to {head(migrate)}"


@BACKENDS
def test_update_upgrades_again_and_is_a_no_op_at_head(
    fresh: Database, migrate: ModuleType, response_url: ResponseUrl
) -> None:
    migrate.run({"action": "upgrade"})

    migrate.handler(request(response_url.url, "Update", version=5, old_version=4), None)

    assert response_url.body["Status"] == "SUCCESS"
    assert response_url.body["Data"] == {"Before": head(migrate), "After": head(migrate)}


@BACKENDS
def test_a_rollback_update_leaves_the_schema_alone(
    fresh: Database, migrate: ModuleType, response_url: ResponseUrl
) -> None:
    migrate.handler(request(response_url.url, "Update", version=4, old_version=5), None)

    assert response_url.body["Status"] == "SUCCESS"
    assert "Rollback" in response_url.body["Reason"]
    assert tables(fresh) == set()


@BACKENDS
def test_delete_reports_success_and_keeps_the_schema(
    fresh: Database, migrate: ModuleType, response_url: ResponseUrl
) -> None:
    migrate.run({"action": "upgrade"})

    migrate.handler(request(response_url.url, "Delete", old_version=None), None)

    assert response_url.body["Status"] == "SUCCESS"
    assert {"user", "task"} <= tables(fresh)
    assert fresh.scalar("SELECT version_num FROM alembic_version") == head(migrate)


def test_a_failed_migration_reports_failed_and_does_not_raise(
    migrate: ModuleType,
    response_url: ResponseUrl,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    """An unreachable database: CloudFormation hears FAILED (and rolls the deploy back)
    instead of waiting for a response that never comes."""
    missing = tmp_path / "no-such-folder" / "task.db"
    configure(monkeypatch, stage="test", database_url=f"sqlite:///{missing}")

    result = migrate.handler(request(response_url.url, "Create"), None)

    assert response_url.body == result
    assert result["Status"] == "FAILED"
    assert result["Reason"].startswith("Migration failed: ")
    assert "unable to open database file" in result["Reason"]
    assert result["Data"] == {}


def test_a_missing_database_setting_fails_the_deploy(
    migrate: ModuleType, response_url: ResponseUrl, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    configure(monkeypatch, stage="prod")

    migrate.handler(request(response_url.url, "Create"), None)

    assert response_url.body["Status"] == "FAILED"
    assert "DATABASE_SECRET_ARN" in response_url.body["Reason"]


def test_an_unknown_request_type_fails(hook: ModuleType, response_url: ResponseUrl) -> None:
    hook.handle(request(response_url.url, "Replace"), lambda event: pytest.fail("migrated"))

    assert response_url.body["Status"] == "FAILED"
    assert "Replace" in response_url.body["Reason"]


@pytest.mark.parametrize("empty_database", ["sqlite"], indirect=True)
def test_migrate_events_still_work_through_the_same_handler(
    fresh: Database, migrate: ModuleType
) -> None:
    result = migrate.handler({"action": "upgrade"}, None)
    assert result == {"action": "upgrade", "before": None, "after": head(migrate)}


# ---------------------------------------------------------------------------------------
# A ResponseURL that cannot be reached (a VPC without an S3 gateway endpoint or NAT)


def test_a_silent_response_url_is_given_up_within_the_budget(
    hook: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    """S3 accepts and never answers: the function retries a few times, then logs why and
    returns, well inside its own timeout, rather than raising (Lambda would run the whole
    request again twice)."""
    with silent_server() as s3:
        url = f"{s3.url}/response?signature=abc"
        started = time.monotonic()
        result = hook.handle(request(url, "Delete"), lambda event: pytest.fail("migrated"))
        elapsed = time.monotonic() - started
        attempts = s3.accepted
    assert result["Status"] == "SUCCESS"
    # Each attempt waited out its timeout, and the attempts are bounded: what keeps the
    # whole inside the budget (a busy machine only adds to the time).
    assert elapsed >= hook.RESPONSE_TIMEOUT_SECONDS * attempts
    assert attempts == len(hook.RESPONSE_RETRY_PAUSES) + 1
    (lost,) = [
        r for r in caplog.records if r.getMessage().startswith("custom resource response lost")
    ]
    assert lost.levelname == "ERROR"
    assert "S3 gateway endpoint" in lost.__dict__["error"]
    assert "NAT" in lost.__dict__["error"]


def test_a_response_that_fails_once_is_sent_again(
    hook: ModuleType, response_url: ResponseUrl
) -> None:
    """A transient 5xx from S3 is retried; the second PUT carries the same body."""
    response_url.statuses.append(503)
    body = {"Status": "SUCCESS"}
    assert hook.send_response(response_url.url, body) == 2
    assert [request["body"] for request in response_url.requests] == [body, body]


def test_a_refused_response_is_not_sent_again(hook: ModuleType, response_url: ResponseUrl) -> None:
    """A 403 (an expired or altered signature) would only repeat."""
    response_url.statuses.append(403)
    with pytest.raises(hook.ResponseNotDeliveredError, match="403"):
        hook.send_response(response_url.url, {"Status": "SUCCESS"})
    assert len(response_url.requests) == 1
