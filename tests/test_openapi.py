"""The one OpenAPI document: generated from the apps, committed, served by the health
function with a page to browse it."""

import io
import json
import re
import uuid
import zipfile
from typing import Any
from urllib.parse import urljoin

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from localapi.events import http_event
from taskapi.rules import WHITESPACE
from tests.support.auth import PASSWORD, signup, tokens
from tests.support.client import Client, invoke, with_example_email
from tests.support.database import Database
from tests.support.functions import ROOT, load_function, load_module
from tests.support.tasks import make_account

HEALTH = ROOT / "functions" / "health"


def generator() -> Any:
    return load_module("tools/generate.py", "generate_tool")


def test_the_committed_document_matches_the_apps() -> None:
    committed = (HEALTH / "openapi.json").read_text()
    assert committed == generator().openapi_text(), "stale: run `make openapi` and commit"


def test_the_route_table_in_api_md_is_current() -> None:
    committed = (ROOT / "docs" / "API.md").read_text()
    assert committed == generator().api_doc_text(committed), "stale: run `make openapi`"
    for path in generator().openapi_document()["paths"]:
        assert f" {path}" in committed, path


def test_the_committed_migration_head_matches_the_revisions() -> None:
    committed = (HEALTH / "health_migration_head.py").read_text()
    assert committed == generator().migration_head_text(), "stale: run `make openapi`"
    head = load_module("migrations/handler.py", "migrate_handler").head_revision()
    assert load_module("functions/health/health_migration_head.py", "health_migration_head")
    assert head == __import__("health_migration_head").MIGRATION_HEAD


def test_the_document_covers_every_function() -> None:
    document = generator().openapi_document()
    assert document["info"]["title"] == "Task API"
    paths = document["paths"]
    assert paths["/health"]["get"]["responses"]["200"]
    assert paths["/health/db"]["get"]["responses"]["503"]
    assert "/docs" not in paths
    assert "/openapi.json" not in paths
    for domain, prefix in (("auth", "/api/auth/"), ("tasks", "/api/tasks")):
        if (ROOT / "functions" / domain / "app.py").exists():
            assert any(path.startswith(prefix) for path in paths), domain
    # Every reference resolves inside the merged document.
    text = json.dumps(document)
    schemas = document["components"]["schemas"]
    for ref in {part.split('"')[0] for part in text.split('"#/components/schemas/')[1:]}:
        assert ref in schemas, ref


def test_health_serves_the_committed_document() -> None:
    response = Client("health").get("/openapi.json")
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    # As committed, but for the examples' email, made fresh at each load.
    served = with_example_email(response.body)
    assert json.loads(served) == json.loads((HEALTH / "openapi.json").read_text())


def test_docs_page_points_at_the_document() -> None:
    response = Client("health").get("/docs")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in response.body
    assert "url: 'openapi.json'" in response.body


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_pages_load_nothing_from_elsewhere(page: str) -> None:
    # Every URL in the page is relative: no CDN (the page must work offline) and no
    # absolute path (it must work under a stage prefix too).
    response = Client("health").get(page)
    assert response.status == 200
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", response.body)
    assert urls, response.body
    for url in urls:
        assert not re.match(r"[a-z]+:|/", url), url
    handler = load_function("health").handler
    for url in urls:
        # Called directly: the favicon is binary, which `Client` would not decode.
        assert handler(http_event("GET", f"/{url}"), None)["statusCode"] == 200, url


@pytest.mark.parametrize(
    ("path", "media_type", "marker"),
    [
        ("/docs/swagger-ui-bundle.js", "text/javascript", "SwaggerUIBundle"),
        ("/docs/swagger-ui.css", "text/css", ".swagger-ui"),
        ("/redoc/redoc.standalone.js", "text/javascript", "Redoc"),
    ],
)
def test_the_pages_files_are_served_by_the_function(
    path: str, media_type: str, marker: str
) -> None:
    response = Client("health").get(path)
    assert response.status == 200
    assert response.headers["content-type"].startswith(media_type)
    assert response.headers["cache-control"] == "public, max-age=86400"
    assert marker in response.body


def test_redoc_page_points_at_the_document() -> None:
    response = Client("health").get("/redoc")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<redoc hide-schema-pattern spec-url="openapi.json">' in response.body


@pytest.mark.parametrize("path", ["/docs/index.html", "/docs/..%2Fopenapi.json", "/redoc/x.js"])
def test_only_the_pages_files_are_served(path: str) -> None:
    assert Client("health").get(path).status == 404


def test_the_document_names_the_prefix_it_was_served_under() -> None:
    # API Gateway's raw path keeps a stage (`/dev`) that the route's path has not.
    handler = load_function("health").handler
    event = http_event("GET", "/openapi.json")
    event["rawPath"] = "/dev/openapi.json"
    served = json.loads(invoke(handler, event).body)
    assert served["servers"] == [{"url": "/dev"}]
    assert served["paths"] == json.loads((HEALTH / "openapi.json").read_text())["paths"]
    plain = Client("health").get("/openapi.json").json()
    assert plain["servers"] == [{"url": "/"}]


def test_the_pages_work_under_a_named_stage() -> None:
    # API Gateway keeps a named stage in the path: rawPath `/dev/docs`, stage `dev`.
    handler = load_function("health").handler

    def get(path: str) -> Any:
        return invoke(handler, http_event("GET", f"/dev{path}", stage="dev"))

    if get("/health").status == 404:
        pytest.skip("the factory does not strip a named stage's prefix yet (helper aws)")
    page = get("/docs")
    assert page.status == 200
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page.body)
    for url in urls:
        # What the browser asks for: the relative URL resolved against /dev/docs.
        path = urljoin("https://api.example.com/dev/docs", url).removeprefix(
            "https://api.example.com/dev"
        )
        event = http_event("GET", f"/dev{path}", stage="dev")
        assert handler(event, None)["statusCode"] == 200, url
    assert get("/redoc").status == 200
    assert get("/openapi.json").json()["servers"] == [{"url": "/dev"}]


def test_the_health_function_stays_small() -> None:
    # Every function ships as a zip of at most 128 KiB (tests/test_build.py checks the built
    # one, bytecode included); the document, minified, is most of this one's source.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(HEALTH.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, path.relative_to(HEALTH))
    assert len(buffer.getvalue()) <= 32 * 1024, len(buffer.getvalue())


def test_docs_and_openapi_are_replayed_from_events() -> None:
    handler = load_function("health").handler
    for name in ("health-openapi", "health-docs"):
        event = json.loads((ROOT / "events" / f"{name}.json").read_text())
        assert handler(event, None)["statusCode"] == 200, name


# ---------------------------------------------------------------------------------------
# The document tells the truth to generated clients and linters


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_operation_ids_are_the_route_functions_names() -> None:
    document = generator().openapi_document()
    ids = {f"{method} {path}": op["operationId"] for method, path, op in operations(document)}
    assert ids["post /api/auth/signup"] == "signup"
    assert ids["get /api/auth/me"] == "getMe"
    assert ids["get /api/tasks"] == "listTasks"
    assert ids["get /api/tasks/{task_id}"] == "getTask"
    assert ids["patch /api/tasks/{task_id}/complete"] == "completeTask"
    assert len(set(ids.values())) == len(ids)
    assert all(re.fullmatch(r"[a-z][A-Za-z0-9]*", op_id) for op_id in ids.values()), ids


def test_public_operations_say_they_need_no_token() -> None:
    document = generator().openapi_document()
    public = {
        "/api/auth/signup",
        "/api/auth/login",
        "/api/auth/refresh",
        # The emailed token is the credential.
        "/api/auth/password-reset",
        "/api/auth/password-reset/confirm",
        "/api/auth/email/confirm",
        "/health",
        "/health/db",
    }
    for _, path, operation in operations(document):
        if path in public:
            assert operation["security"] == [], path
        else:
            assert operation["security"] == [{"HTTPBearer": []}], path


def test_every_operation_is_described_and_tagged() -> None:
    document = generator().openapi_document()
    assert document["servers"] == [{"url": "/"}]
    tags = {tag["name"]: tag["description"] for tag in document["tags"]}
    assert set(tags) == {"auth", "tasks", "health"}
    assert all(tags.values())
    for method, path, operation in operations(document):
        assert operation["description"].strip(), f"{method} {path}"
        assert operation["summary"].strip(), f"{method} {path}"
        assert set(operation["tags"]) <= set(tags)


def test_no_parameter_or_optional_body_offers_null() -> None:
    # A header or query parameter is sent or not; `null` would be sent as the text "null".
    document = generator().openapi_document()
    for method, path, operation in operations(document):
        for parameter in operation.get("parameters", []):
            assert "null" not in json.dumps(parameter["schema"]), (method, path, parameter)
        body = operation.get("requestBody")
        if body is not None:
            assert "null" not in json.dumps(body), (method, path)
    logout = document["paths"]["/api/auth/logout"]["post"]["requestBody"]
    assert logout.get("required", False) is False


def test_task_update_fields_are_not_nullable_except_description() -> None:
    schemas = generator().openapi_document()["components"]["schemas"]
    update = schemas["TaskUpdate"]["properties"]
    for name in ("title", "status", "priority"):
        assert "null" not in json.dumps(update[name]), name
    assert {"type": "null"} in update["description"]["anyOf"]
    assert "required" not in schemas["TaskUpdate"]


def test_request_defaults_do_not_make_fields_look_required() -> None:
    # openapi-typescript types a property with a `default` as always present.
    schemas = generator().openapi_document()["components"]["schemas"]
    for name in ("TaskCreate", "TaskUpdate", "SignupRequest", "LoginRequest", "LogoutRequest"):
        for field, prop in schemas[name]["properties"].items():
            assert "default" not in prop, (name, field)
    assert "Pending" in schemas["TaskCreate"]["properties"]["status"]["description"]
    assert schemas["TaskCreate"]["required"] == ["title"]


def test_every_response_field_is_required() -> None:
    document = generator().openapi_document()
    seen: set[str] = set()

    def check(schema: dict[str, Any]) -> None:
        for ref in re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(schema)):
            if ref in seen:
                continue
            seen.add(ref)
            target = document["components"]["schemas"][ref]
            if "properties" in target:
                assert set(target.get("required", [])) == set(target["properties"]), ref
            check(target)

    for _, _, operation in operations(document):
        for code, response in operation["responses"].items():
            if code != "422":  # FastAPI's validation error list is FastAPI's own schema
                check(response)
    assert {"TaskPublic", "TaskPage", "UserPublic", "AuthResponse", "Health"} <= seen


def test_the_sort_values_are_a_named_enum() -> None:
    document = generator().openapi_document()
    sort = next(
        p for p in document["paths"]["/api/tasks"]["get"]["parameters"] if p["name"] == "sort"
    )
    assert sort["schema"]["$ref"] == "#/components/schemas/TaskSort"
    enum = document["components"]["schemas"]["TaskSort"]
    names = dict(zip(enum["enum"], enum["x-enum-varnames"], strict=True))
    assert names["-created_at"] == "CREATED_AT_DESC"
    assert names["title"] == "TITLE"


def test_the_gateways_own_errors_are_documented_once() -> None:
    document = generator().openapi_document()
    description = document["info"]["description"]
    for code in ("404", "413", "502", "503", "504"):
        assert code in description
    assert '{"message": "..."}' in description
    for method, path, operation in operations(document):
        assert "Gateway" not in json.dumps(operation["responses"]), (method, path)
    # The API's own 503 (database unavailable) stays where the function answers it.
    tasks_503 = document["paths"]["/api/tasks"]["get"]["responses"]["503"]
    assert tasks_503["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Detail"
    }


# The documented text rules are the ones the server applies.
# The lengths count the text once trimmed: a name holds 100 characters, a title 200.
TEXTS = [
    *["ok", "  padded  ", "", "   ", "\t\n", "\x1f", "\x85", "\u3000", "\ufeff", "a\x00b"],
    *["\x00", "é", "n" * 100, "n" * 101, "\f" + "n" * 100 + " ", " " + "t" * 200 + "\u2028"],
    *["t" * 201, " " + "t" * 201],
]


@pytest.mark.parametrize("title", TEXTS)
def test_the_title_pattern_is_what_the_server_accepts(title: str, db: Database) -> None:
    pattern = generator().openapi_document()["components"]["schemas"]["TaskCreate"]
    documented = re.search(pattern["properties"]["title"]["pattern"], title) is not None
    owner = make_account(f"pattern-{uuid.uuid4().hex[:8]}@example.com")
    response = Client("tasks").post("/api/tasks", json_body={"title": title}, token=owner.token)
    assert response.status == (201 if documented else 422), response.body


@pytest.mark.parametrize("name", TEXTS)
def test_the_name_pattern_is_what_the_server_accepts(name: str, db: Database) -> None:
    schema = generator().openapi_document()["components"]["schemas"]["SignupRequest"]
    documented = re.search(schema["properties"]["name"]["pattern"], name) is not None
    body = {"email": f"{uuid.uuid4().hex[:8]}@example.com", "name": name, "password": PASSWORD}
    response = Client("auth").post("/api/auth/signup", json_body=body)
    assert response.status == (201 if documented else 422), response.body


@pytest.mark.parametrize("domain", ["myapp.test", "box.local", "x.invalid", "localhost"])
def test_reserved_email_domains_are_refused_as_documented(domain: str, db: Database) -> None:
    schema = generator().openapi_document()["components"]["schemas"]["SignupRequest"]
    described = schema["properties"]["email"]["description"]
    assert f".{domain.rsplit('.', 1)[-1]}" in described
    pattern = schema["properties"]["email"]["pattern"]
    assert re.search(pattern, f"dev@{domain}") is None
    assert re.search(pattern, f"dev@{domain.upper()}") is None
    assert re.search(pattern, f"dev@{domain}.example.com") is not None
    body = {"email": f"dev@{domain}", "name": "Dev", "password": PASSWORD}
    response = Client("auth").post("/api/auth/signup", json_body=body)
    assert response.status == 422
    assert response.json()["detail"][0]["loc"] == ["body", "email"]
    body["email"] = f"dev@{domain}.example.com"
    assert Client("auth").post("/api/auth/signup", json_body=body).status == 201


def test_logout_takes_an_object_or_nothing_but_not_null(db: Database) -> None:
    auth = Client("auth")
    token = tokens(signup(auth, "null-body@example.com"))[0]
    response = auth.post(
        "/api/auth/logout", body="null", token=token, headers={"content-type": "application/json"}
    )
    assert response.status == 422
    assert response.json()["detail"][0]["loc"] == ["body"]
    assert auth.get("/api/auth/me", token=token).status == 200
    assert auth.post("/api/auth/logout", token=token).status == 200
    assert auth.get("/api/auth/me", token=token).status == 401


def test_the_documented_whitespace_is_what_strip_removes() -> None:
    documented = re.compile(f"[{WHITESPACE}]")
    for code in range(0x110000):
        character = chr(code)
        assert (documented.fullmatch(character) is not None) == character.isspace(), hex(code)


def test_every_request_body_has_an_example_that_its_schema_takes() -> None:
    """What Swagger UI's "Try it out" pre-fills: every body's schema carries `examples`,
    each valid against that schema (the browser test of `make check-clients` sends them)."""
    document = generator().openapi_document()
    registry = Registry().with_resource(
        "urn:document", Resource.from_contents(document, default_specification=DRAFT202012)
    )
    bodies = [
        (method, path, operation["requestBody"]["content"]["application/json"]["schema"])
        for method, path, operation in operations(document)
        if "requestBody" in operation
    ]
    assert len(bodies) >= 8
    for method, path, schema in bodies:
        name = schema["$ref"].rpartition("/")[2]
        component = document["components"]["schemas"][name]
        assert component.get("examples"), (method, path, name)
        validator = Draft202012Validator(
            {"$ref": f"urn:document{schema['$ref']}"}, registry=registry
        )
        for example in component["examples"]:
            errors = [error.message for error in validator.iter_errors(example)]
            assert not errors, (method, path, example, errors)


def test_the_served_document_gives_the_example_account_a_fresh_email() -> None:
    health = Client("health")
    first, second = (health.get("/openapi.json").json() for _ in range(2))
    emails = []
    for document in (first, second):
        signup_example = document["components"]["schemas"]["SignupRequest"]["examples"][0]
        login_example = document["components"]["schemas"]["LoginRequest"]["examples"][0]
        # Sign-up and login share the account within one load.
        assert signup_example["email"] == login_example["email"]
        assert re.fullmatch(r"ada-[0-9a-f]{6}@example\.com", signup_example["email"])
        emails.append(signup_example["email"])
    assert emails[0] != emails[1]
