"""Every file in events/ is an event its function accepts: the HTTP events are shaped as
API Gateway sends them for the template's routes, and each one, replayed through the real
handler on SQLite and PostgreSQL, gets the status its route promises (never a 5xx)."""

import json
import re
from typing import Any

import pytest

from localapi.events import LambdaContext
from localapi.template import Route, load_template
from taskapi.tokens import decode_token
from tests.conftest import ROOT, Client, Database, configure, invoke, load_function, load_module

EVENTS = ROOT / "events"
TEMPLATE = load_template(ROOT / "template.yaml")
ACCESS_TOKEN = "<ACCESS_TOKEN>"
REFRESH_TOKEN = "<REFRESH_TOKEN>"
# The id the task events address (the first task of a new database).
EVENT_TASK_ID = "1"
# The session auth-revoke-session.json revokes: replaced by the signed-up user's session.
EVENT_SESSION_ID = "5e551011-0000-4000-8000-000000000000"
# What each of this project's API events must get once replayed (see events/README.md).
EXPECTED_STATUS = {
    "auth-signup.json": 201,
    "auth-login.json": 200,
    "auth-refresh.json": 200,
    "auth-me.json": 200,
    "auth-logout.json": 200,
    "auth-password.json": 200,
    "auth-sessions.json": 200,
    "auth-revoke-session.json": 204,
    "auth-delete-me.json": 204,
    "tasks-create.json": 201,
    "tasks-list.json": 200,
    "tasks-get.json": 200,
    "tasks-update.json": 200,
    "tasks-complete.json": 200,
    "tasks-delete.json": 204,
}


def load(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


def event_files(kind: str) -> list[str]:
    """The names of the events of one kind: `http`, `migrate` or `schedule`."""
    return sorted(path.name for path in EVENTS.glob("*.json") if kind_of(load(path.name)) == kind)


def kind_of(event: dict[str, Any]) -> str:
    if event.get("version") == "2.0" and "routeKey" in event:
        return "http"
    if event.get("source") == "aws.events":
        return "schedule"
    if "action" in event:
        return "migrate"
    return "unknown"


def route_of(event: dict[str, Any]) -> Route:
    (route,) = [route for route in TEMPLATE.routes if route.key == event["routeKey"]]
    return route


def domain_of(function: str) -> str:
    return TEMPLATE.function(function).code_uri.name


def test_every_event_is_of_a_known_kind() -> None:
    names = sorted(path.name for path in EVENTS.glob("*.json"))
    assert names, "events/ is empty"
    unknown = [name for name in names if kind_of(load(name)) == "unknown"]
    assert not unknown, f"neither an HTTP API, a scheduled nor a migrate event: {unknown}"


def test_every_route_of_auth_and_tasks_has_an_event() -> None:
    http = event_files("http")
    assert set(EXPECTED_STATUS) <= set(http)
    for function in ("AuthFunction", "TasksFunction"):
        for route in TEMPLATE.function(function).routes:
            assert any(load(name)["routeKey"] == route.key for name in http), route.key


@pytest.mark.parametrize("name", event_files("http"))
def test_http_events_are_shaped_as_api_gateway_sends_them(name: str) -> None:
    event = load(name)
    context = event["requestContext"]
    route = route_of(event)
    method, path = context["http"]["method"], event["rawPath"]
    assert context["routeKey"] == event["routeKey"]
    assert context["http"]["path"] == path
    assert context["stage"] == "$default"
    assert {"requestId", "time", "timeEpoch", "accountId", "apiId"} <= set(context)
    assert context["http"]["sourceIp"]
    parameters = route.match(method, path)
    assert parameters is not None, f"{method} {path} does not take {route.key}"
    assert event.get("pathParameters", {}) == parameters
    assert all(header == header.lower() for header in event["headers"])
    assert event["isBase64Encoded"] is False
    query = event["rawQueryString"]
    assert ("queryStringParameters" in event) == bool(query)
    if "body" in event:
        assert isinstance(event["body"], str)
        assert event["headers"]["content-length"] == str(len(event["body"].encode()))
        json.loads(event["body"])


# ---------------------------------------------------------------------------------------
# Replay


def signed_up_user() -> dict[str, Any]:
    """Sign up the user of auth-signup.json: its tokens and one task."""
    credentials = json.loads(load("auth-signup.json")["body"])
    response = Client("auth").post("/api/auth/signup", json_body=credentials)
    assert response.status == 201, response.body
    tokens = response.json()
    task = Client("tasks").post(
        "/api/tasks", json_body={"title": "Replay"}, token=tokens["access_token"]
    )
    assert task.status == 201, task.body
    return {**tokens, "task_id": str(task.json()["id"])}


def filled_in(event: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """The event with real tokens and the real task id in place of the placeholders."""
    text = json.dumps(event)
    text = text.replace(ACCESS_TOKEN, user["access_token"])
    text = text.replace(REFRESH_TOKEN, user["refresh_token"])
    session_id = decode_token(user["access_token"], expected_type="access").session_id
    text = text.replace(EVENT_SESSION_ID, str(session_id))
    filled: dict[str, Any] = json.loads(text)
    if filled["rawPath"].startswith(f"/api/tasks/{EVENT_TASK_ID}"):
        task = f"/api/tasks/{user['task_id']}"
        old = f"/api/tasks/{EVENT_TASK_ID}"
        filled["rawPath"] = filled["rawPath"].replace(old, task, 1)
        filled["requestContext"]["http"]["path"] = filled["rawPath"]
        proxy = filled["pathParameters"]["proxy"]
        filled["pathParameters"]["proxy"] = re.sub(r"^\d+", user["task_id"], proxy)
    return filled


@pytest.mark.parametrize("name", event_files("http"))
def test_http_events_replay_through_their_function(db: Database, name: str) -> None:
    event = load(name)
    function = route_of(event).function
    domain = domain_of(function)
    # A new account for signup; every other event acts as that account.
    if name != "auth-signup.json":
        event = filled_in(event, signed_up_user())

    response = invoke(load_function(domain).handler, event)

    expected = EXPECTED_STATUS.get(name)
    if expected is None:
        # Another function's events (health): whatever they answer, never a server error.
        assert response.status < 500, (name, response.status, response.body)
    else:
        assert response.status == expected, (name, response.status, response.body)
    if response.status != 204:
        assert response.headers["content-type"].startswith(("application/json", "text/html"))


def test_the_replayed_events_change_what_they_say(db: Database) -> None:
    """Not just statuses: the events' bodies reach the database."""
    user = signed_up_user()
    created = invoke(load_function("tasks").handler, filled_in(load("tasks-create.json"), user))
    body = json.loads(load("tasks-create.json")["body"])
    assert created.json()["title"] == body["title"]
    priority = db.scalar("SELECT priority FROM task WHERE id = :id", id=created.json()["id"])
    assert priority == body["priority"] == "High"
    invoke(load_function("tasks").handler, filled_in(load("tasks-delete.json"), user))
    deleted = db.scalar("SELECT deleted_at FROM task WHERE id = :id", id=int(user["task_id"]))
    assert deleted is not None
    me = invoke(load_function("auth").handler, filled_in(load("auth-me.json"), user))
    assert me.json()["email"] == json.loads(load("auth-signup.json")["body"])["email"]


@pytest.mark.parametrize("name", event_files("schedule"))
def test_scheduled_events_replay_through_the_health_function(db: Database, name: str) -> None:
    handler = load_function("health").handler
    result = handler(load(name), LambdaContext())
    assert result["status"] == "ok"
    assert result["database"] == "ok"


@pytest.mark.parametrize("empty_database", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize("name", event_files("migrate"))
def test_migrate_events_replay_through_the_migrate_function(
    empty_database: Database, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """On a database of its own: a downgrade must not touch the one other tests share."""
    configure(monkeypatch, stage="test", database_url=empty_database.url)
    migrate = load_module("migrations/handler.py", "migrate_handler")
    head = migrate.head_revision()
    event = load(name)
    if event["action"] != "upgrade":
        migrate.handler({"action": "upgrade"}, LambdaContext())

    result = migrate.handler(event, LambdaContext())

    assert result["action"] == event["action"]
    if event["action"] == "upgrade":
        assert (result["before"], result["after"]) == (None, head)
    elif event["action"] == "downgrade":
        assert result["before"] == head
        assert result["after"] != head
    else:
        assert result["before"] == result["after"] == head
    if event["action"] == "history":
        assert head in {revision["revision"] for revision in result["revisions"]}


def test_events_readme_documents_the_placeholders() -> None:
    readme = (EVENTS / "README.md").read_text()
    assert ACCESS_TOKEN in readme
    assert REFRESH_TOKEN in readme
    assert EVENT_SESSION_ID in readme
