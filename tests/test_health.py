"""The health function through its real handler: API Gateway and EventBridge events from
`events/`, on SQLite and PostgreSQL."""

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from localapi.events import LambdaContext
from taskapi import __version__
from tests.support.client import invoke
from tests.support.database import Database
from tests.support.emf import emf_lines
from tests.support.environment import configure
from tests.support.functions import ROOT, load_function, load_module
from tests.support.keys import JWT_KEY

EVENTS = ROOT / "events"
UNREACHABLE_URL = "postgresql+psycopg2://postgres@127.0.0.1:1/x"


def event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return loaded


def log_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def head_revision() -> str | None:
    revision: str | None = load_module("migrations/handler.py", "migrate_handler").head_revision()
    return revision


def test_health_answers_without_a_database(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens there: /health must not care.
    configure(monkeypatch, stage="test", database_url=UNREACHABLE_URL)
    response = invoke(load_function("health").handler, event("health-get"))
    assert response.status == 200
    body = response.json()
    assert body.keys() == {"status", "version", "timestamp"}
    assert (body["status"], body["version"]) == ("ok", __version__)
    timestamp = datetime.fromisoformat(body["timestamp"])
    assert timestamp.utcoffset() is not None
    assert abs(time.time() - timestamp.timestamp()) < 60


def test_health_db_reports_an_up_to_date_schema(db: Database) -> None:
    response = invoke(load_function("health").handler, event("health-db"))
    assert response.status == 200
    body = response.json()
    assert (body["status"], body["database"]) == ("ok", "ok")
    assert isinstance(body["latency_ms"], float)
    assert 0 <= body["latency_ms"] < 5000
    head = head_revision()
    assert head is not None
    assert body["migrations"] == {"current": head, "head": head, "up_to_date": True}
    assert db.scalar("SELECT version_num FROM alembic_version") == head


def test_health_db_reports_a_schema_behind_head(db: Database) -> None:
    migrate = load_module("migrations/handler.py", "migrate_handler").handler
    handler = load_function("health").handler
    head = head_revision()
    downgraded = migrate({"action": "downgrade"}, None)
    try:
        response = invoke(handler, event("health-db"))
        assert response.status == 200
        assert response.json()["migrations"] == {
            "current": downgraded["after"],
            "head": head,
            "up_to_date": False,
        }
    finally:
        migrate({"action": "upgrade"}, None)
    assert invoke(handler, event("health-db")).json()["migrations"]["up_to_date"] is True


@pytest.mark.parametrize("empty_database", ["sqlite", "postgresql"], indirect=True)
def test_health_db_on_a_database_never_migrated(
    empty_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, stage="test", database_url=empty_database.url)
    response = invoke(load_function("health").handler, event("health-db"))
    assert response.status == 200
    assert response.json()["migrations"] == {
        "current": None,
        "head": head_revision(),
        "up_to_date": False,
    }


@pytest.mark.perf
@pytest.mark.parametrize("name", ["health-db", "schedule-health"])
def test_an_unreachable_database_is_reported_within_5_seconds(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    configure(monkeypatch, stage="prod", database_url=UNREACHABLE_URL, jwt_secret_key="k")
    handler = load_function("health").handler
    started = time.monotonic()
    handler(event(name), LambdaContext())
    assert time.monotonic() - started < 5


def test_health_db_answers_503_when_the_database_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(monkeypatch, stage="test", database_url=UNREACHABLE_URL)
    handler = load_function("health").handler
    context = LambdaContext()
    capsys.readouterr()
    result = handler(event("health-db"), context)
    assert result["statusCode"] == 503
    body = json.loads(result["body"])
    assert body.keys() == {"status", "detail"}
    assert body["status"] == "error"
    assert "unavailable" in body["detail"]
    assert "127.0.0.1" not in body["detail"]
    # The warning written inside the route carries the invocation's ids, not only the request line.
    lines = log_lines(capsys.readouterr().out)
    warning = next(line for line in lines if line["message"] == "database check failed")
    assert warning["lambda_request_id"] == context.aws_request_id
    assert warning["request_id"] == event("health-db")["requestContext"]["requestId"]
    assert isinstance(warning["cold_start"], bool)
    request = next(line for line in lines if line["message"] == "request")
    assert (request["status"], request["lambda_request_id"]) == (503, context.aws_request_id)


def test_scheduled_check_returns_the_summary_and_writes_metrics(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = load_function("health").handler
    context = LambdaContext()
    capsys.readouterr()
    summary = handler(event("schedule-health"), context)
    head = head_revision()
    assert summary["status"] == "ok"
    assert summary["database"] == "ok"
    assert summary["migrations"] == {"current": head, "head": head, "up_to_date": True}
    text = capsys.readouterr().out
    (emf,) = emf_lines(text)
    (directive,) = emf["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "TaskApi"
    assert directive["Dimensions"] == [["Stage"]]
    assert {metric["Name"]: metric["Unit"] for metric in directive["Metrics"]} == {
        "DatabaseUp": "Count",
        "DatabaseLatency": "Milliseconds",
    }
    assert emf["Stage"] == "test"
    assert emf["DatabaseUp"] == 1
    assert emf["DatabaseLatency"] == summary["latency_ms"]
    assert isinstance(emf["_aws"]["Timestamp"], int)
    (line,) = (line for line in log_lines(text) if line.get("message") == "scheduled health check")
    assert line["health"] == summary
    assert line["lambda_request_id"] == context.aws_request_id


def test_scheduled_check_reports_an_unreachable_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(monkeypatch, stage="prod", database_url=UNREACHABLE_URL, jwt_secret_key=JWT_KEY)
    handler = load_function("health").handler
    capsys.readouterr()
    summary = handler(event("schedule-health"), LambdaContext())
    assert summary["status"] == "error"
    assert "unavailable" in summary["detail"]
    (emf,) = emf_lines(capsys.readouterr().out)
    (directive,) = emf["_aws"]["CloudWatchMetrics"]
    assert [metric["Name"] for metric in directive["Metrics"]] == ["DatabaseUp"]
    assert (emf["Stage"], emf["DatabaseUp"]) == ("prod", 0)


# Run in a fresh interpreter: the test process has long since imported SQLAlchemy.
NO_DATABASE_SCRIPT = """
import json, sys
from pathlib import Path
import importlib.util
root = Path(sys.argv[1])
sys.path.insert(0, str(root / "functions" / "health"))
spec = importlib.util.spec_from_file_location("health_app", root / "functions/health/app.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
from localapi.events import LambdaContext
event = json.loads((root / "events/health-get.json").read_text())
response = module.handler(event, LambdaContext())
modules = ["sqlalchemy", "sqlmodel", "psycopg2", "alembic", "boto3"]
print(json.dumps({
    "status": response["statusCode"],
    "loaded": [name for name in modules if name in sys.modules],
}))
"""


def test_health_does_not_import_the_database_stack() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "shared"), str(ROOT)]),
        "STAGE": "test",
        "DATABASE_URL": UNREACHABLE_URL,
    }
    completed = subprocess.run(  # noqa: S603  (our own interpreter and script)
        [sys.executable, "-c", NO_DATABASE_SCRIPT, str(ROOT)],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(ROOT),
        timeout=60,
        check=True,
    )
    result = json.loads(completed.stdout.splitlines()[-1])
    assert result == {"status": 200, "loaded": []}


def test_health_db_answers_503_when_the_database_is_not_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_SECRET_ARN", raising=False)
    configure(monkeypatch, stage="prod", jwt_secret_key=JWT_KEY)
    response = invoke(load_function("health").handler, event("health-db"))
    assert response.status == 503
    assert response.json() == {
        "status": "error",
        "detail": "Stage 'prod' needs DATABASE_SECRET_ARN or DATABASE_URL",
    }
    # Liveness does not depend on it.
    assert invoke(load_function("health").handler, event("health-get")).status == 200
