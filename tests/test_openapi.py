"""The one OpenAPI document: generated from the apps, committed, served by the health
function with a page to browse it."""

import json
from typing import Any

from tests.conftest import ROOT, Client, load_function, load_module

HEALTH = ROOT / "functions" / "health"


def generator() -> Any:
    return load_module("tools/generate.py", "generate_tool")


def test_the_committed_document_matches_the_apps() -> None:
    committed = (HEALTH / "openapi.json").read_text()
    assert committed == generator().openapi_text(), "stale: run `make openapi` and commit"


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
    assert response.json() == json.loads((HEALTH / "openapi.json").read_text())


def test_docs_page_points_at_the_document() -> None:
    response = Client("health").get("/docs")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in response.body
    assert "url: 'openapi.json'" in response.body


def test_the_health_function_stays_small() -> None:
    # Every function's code folder must stay within 64 KiB (the document is minified).
    files = [path for path in HEALTH.rglob("*") if path.is_file()]
    size = sum(path.stat().st_size for path in files if "__pycache__" not in path.parts)
    assert size <= 64 * 1024, size


def test_docs_and_openapi_are_replayed_from_events() -> None:
    handler = load_function("health").handler
    for name in ("health-openapi", "health-docs"):
        event = json.loads((ROOT / "events" / f"{name}.json").read_text())
        assert handler(event, None)["statusCode"] == 200, name
