"""Every file in events/ is an event its function accepts: the HTTP events are shaped as
API Gateway sends them for the template's routes, and each one, replayed through the real
handler on SQLite and PostgreSQL, gets the status its route promises (never a 5xx)."""

import json
import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest

from localapi.events import LambdaContext
from localapi.template import Route
from taskapi.factory import LambdaHandler, path_prefix
from taskapi.tokens import decode_token
from tests.support.client import Client, invoke
from tests.support.database import Database
from tests.support.environment import configure
from tests.support.functions import ROOT, load_function, load_module, template

EVENTS = ROOT / "events"
TEMPLATE = template()
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
    "stage-tasks-list.json": 200,
    "base-path-tasks-list.json": 200,
    "tasks-create-idempotent.json": 201,
    "tasks-list-overdue.json": 200,
    "tasks-trash.json": 200,
    "tasks-restore.json": 200,
    "tasks-changes.json": 200,
    "tasks-batch.json": 200,
    "tasks-empty-trash.json": 204,
    "tasks-remove-from-trash.json": 204,
}
# The custom domain's API mapping that base-path-*.json were sent through (events/README.md).
EVENT_BASE_PATH = "/v1"
# How a client reaches the API: at the $default stage, at a named stage's execute-api URL,
# and through a custom domain mapped at a base path.
ADDRESSES = {
    "default": ("", "$default"),
    "stage": ("/dev", "dev"),
    "base-path": ("/v1", "$default"),
}
# Events whose task must be in the trash first.
NEEDS_TRASHED_TASK = {"tasks-restore.json", "tasks-remove-from-trash.json"}


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


def prefix_of(event: dict[str, Any]) -> str:
    """The stage or base path in front of the event's route, as the functions strip it."""
    stage = event["requestContext"]["stage"]
    return path_prefix(event["rawPath"], stage=stage, base_path=EVENT_BASE_PATH)


def addressed(event: dict[str, Any], address: str) -> dict[str, Any]:
    """The event as API Gateway sends it when the client called the API at `address`."""
    if address == "as-sent":
        return event
    prefix, stage = ADDRESSES[address]
    moved: dict[str, Any] = json.loads(json.dumps(event))
    moved["rawPath"] = prefix + event["rawPath"]
    moved["requestContext"]["http"]["path"] = moved["rawPath"]
    moved["requestContext"]["stage"] = stage
    return moved


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
    # Only the stage- and base-path events carry a prefix; the route matches what follows.
    prefix = prefix_of(event)
    assert bool(prefix) == name.startswith(("stage-", "base-path-")), (name, prefix)
    assert (context["stage"] != "$default") == name.startswith("stage-")
    path = path.removeprefix(prefix)
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
    for collection in ("/api/tasks", "/api/tasks/trash"):
        old = f"{collection}/{EVENT_TASK_ID}"
        if filled["rawPath"].startswith(f"{old}/") or filled["rawPath"] == old:
            filled["rawPath"] = filled["rawPath"].replace(old, f"{collection}/{user['task_id']}", 1)
            filled["requestContext"]["http"]["path"] = filled["rawPath"]
            proxy = filled["pathParameters"]["proxy"]
            filled["pathParameters"]["proxy"] = re.sub(r"\d+", user["task_id"], proxy, count=1)
    return filled


def replays() -> list[tuple[str, str]]:
    """Every HTTP event at every address; the prefixed sample events as they are."""
    return [
        (name, address)
        for name in event_files("http")
        for address in (ADDRESSES if not prefix_of(load(name)) else ["as-sent"])
    ]


def behind_base_path(domain: str) -> LambdaHandler:
    """The function's handler from an import of its own, made after `configure` set
    API_BASE_PATH: an app reads the base path once, when it is built."""
    handler: LambdaHandler = load_module(
        f"functions/{domain}/app.py", f"{domain}_app_behind_base_path"
    ).handler
    return handler


@pytest.mark.parametrize(("name", "address"), replays())
def test_http_events_replay_through_their_function(
    db: Database, monkeypatch: pytest.MonkeyPatch, name: str, address: str
) -> None:
    """Every route of every function answers alike at the $default stage, at a named stage
    (`/dev/...`) and behind a custom domain's base path (`API_BASE_PATH=/v1`)."""
    configure(monkeypatch, api_base_path=EVENT_BASE_PATH)
    event = load(name)
    function = route_of(event).function
    domain = domain_of(function)
    # A new account for signup; every other event acts as that account.
    if name != "auth-signup.json":
        user = signed_up_user()
        event = filled_in(event, user)
        if name in NEEDS_TRASHED_TASK:
            path = f"/api/tasks/{user['task_id']}"
            deleted = Client("tasks").delete(path, token=user["access_token"])
            assert deleted.status == 204, deleted.body
    event = addressed(event, address)

    response = invoke(behind_base_path(domain), event)

    expected = EXPECTED_STATUS.get(name)
    if expected is None:
        # Another function's events (health): whatever they answer, never a server error.
        assert response.status < 500, (name, response.status, response.body)
    else:
        assert response.status == expected, (name, response.status, response.body)
    if response.status != 204:
        assert response.headers["content-type"].startswith(("application/json", "text/html"))
    if "location" in response.headers:
        # A new resource's address keeps the prefix the client called the API with.
        assert response.headers["location"].startswith(f"{prefix_of(event)}/api/")


class _Links(HTMLParser):
    """Every address a page loads: scripts, styles, and the quoted URLs in its scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for key, value in attrs if key in ("src", "href") and value]

    def handle_data(self, data: str) -> None:
        self.urls += re.findall(r"""url:\s*['"]([^'"]+)['"]""", data)


@pytest.mark.parametrize("address", ADDRESSES)
def test_docs_find_their_document_at_every_address(
    monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    """Swagger UI at /dev/docs or /v1/docs loads /dev/openapi.json or /v1/openapi.json, and
    the document names that prefix as its server, so that "Try it out" calls it too."""
    configure(monkeypatch, api_base_path=EVENT_BASE_PATH)
    handler = behind_base_path("health")
    page_event = addressed(load("health-docs.json"), address)
    page = invoke(handler, page_event)
    assert page.status == 200, page.body
    links = _Links()
    links.feed(page.body)
    page_url = f"https://{page_event['headers']['host']}{page_event['rawPath']}"
    own = [urljoin(page_url, url) for url in links.urls]
    own = [url for url in own if urlsplit(url).netloc == urlsplit(page_url).netloc]
    documents = [url for url in own if url.endswith("/openapi.json")]
    assert documents, links.urls
    prefix = ADDRESSES[address][0]
    for url in own:
        # Whatever the page loads from the API itself, it finds under the same prefix.
        path = urlsplit(url).path
        assert path.startswith(f"{prefix}/"), (url, page_url)
        route_event = addressed(load("health-openapi.json"), address)
        route_event["rawPath"] = route_event["requestContext"]["http"]["path"] = path
        loaded = invoke(handler, route_event)
        assert loaded.status == 200, (path, loaded.body)
    document = invoke(handler, addressed(load("health-openapi.json"), address)).json()
    assert "/api/tasks" in document["paths"]
    # At the API's root the document's server is the relative `/`.
    assert document["servers"] == [{"url": prefix or "/"}]


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


# Each scheduled event's function: the part of its name after `schedule-`.
SCHEDULED = {
    "schedule-health.json": "health",
    "schedule-maintenance.json": "maintenance",
    "schedule-reminders.json": "reminders",
}


def test_every_scheduled_event_names_its_function() -> None:
    assert set(event_files("schedule")) == set(SCHEDULED)


@pytest.mark.parametrize("name", event_files("schedule"))
def test_scheduled_events_replay_through_their_function(db: Database, name: str) -> None:
    handler = load_function(SCHEDULED[name]).handler
    result = handler(load(name), LambdaContext())
    if SCHEDULED[name] == "health":
        assert result["status"] == "ok"
        assert result["database"] == "ok"
    elif SCHEDULED[name] == "reminders":
        assert (result["sent"], result["failed"], result["complete"]) == (0, 0, True)
    else:
        assert (result["failed"], result["complete"]) == ([], True)
        assert set(result["deleted"]) == {
            "sessions",
            "login_attempts",
            "idempotency_keys",
            "trash",
            "security_events",
            "account_tokens",
            "login_devices",
            "tombstones",
        }


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
