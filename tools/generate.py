"""Write the files that the health function ships, from the code they describe.

- `functions/health/openapi.json`: one OpenAPI document for the auth, tasks and health
  apps (those that exist), minified to keep the function's folder small.
- `functions/health/health_migration_head.py`: the newest Alembic revision, so that
  `GET /health/db` can compare the database with it without shipping or importing Alembic.
- docs/API.md's route table, from the same document: routes added anywhere appear there.

The health function serves and reads them as they are: it never imports the other
functions. Run `make openapi` after changing a route, a schema or a migration; the tests
fail while either file is stale.
"""

import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from localapi.runtime import import_file
from taskapi import __version__

ROOT = Path(__file__).resolve().parent.parent
HEALTH = ROOT / "functions" / "health"
OPENAPI_FILE = HEALTH / "openapi.json"
MIGRATION_HEAD_FILE = HEALTH / "health_migration_head.py"
DOMAINS = ("auth", "tasks", "health")
DESCRIPTION = (
    "A multi-user task API: sign up and log in for a bearer token, then manage your tasks. "
    "Each part is its own Lambda function; this document covers them all."
)


def domain_apps() -> dict[str, FastAPI]:
    """The apps of the functions that exist (the same module names as the tests use)."""
    return {
        domain: import_file(ROOT / "functions" / domain / "app.py", f"{domain}_app").app
        for domain in DOMAINS
        if (ROOT / "functions" / domain / "app.py").exists()
    }


# API Gateway answers some requests itself, before or instead of a function, with a body
# of its own. Said once, in the document's description: listed on every operation it
# crowded each one with four answers that are not the operation's.
GATEWAY_ERRORS = (
    '\n\nAPI Gateway answers some requests itself, with a `{"message": "..."}` body'
    ' instead of the API\'s `{"detail": ...}`: 404 for a path no route serves, 413 for a'
    " request over 10 MB, 502 when a function failed or answered malformed, 503 when it"
    " could not invoke one, and 504 when a function ran past the 30-second integration"
    " timeout. Any operation may get them."
)
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    # FastAPI writes an optional parameter (`X | None = None`) as "X or null"; but a query
    # parameter or header is sent or not, it is never null (clients and fuzzers would send
    # the text `null`).
    options = [option for option in schema.get("anyOf", ()) if option != {"type": "null"}]
    if "anyOf" not in schema or len(options) == len(schema["anyOf"]):
        return schema
    rest = {key: value for key, value in schema.items() if key != "anyOf"}
    return {**options[0], **rest} if len(options) == 1 else {**rest, "anyOf": options}


def _documented(operation: dict[str, Any]) -> dict[str, Any]:
    """One operation as the document states it: public ones say so (`security: []`)."""
    result = dict(operation)
    result.setdefault("security", [])
    if "parameters" in result:
        result["parameters"] = [
            {**parameter, "schema": _not_null(parameter["schema"])}
            for parameter in result["parameters"]
        ]
    return result


def openapi_document() -> dict[str, Any]:
    """The apps' documents merged; a path or a differing schema defined twice is an error."""
    paths: dict[str, Any] = {}
    components: dict[str, dict[str, Any]] = {}
    tags: dict[str, dict[str, str]] = {}
    version = "3.1.0"
    for domain, app in domain_apps().items():
        part = app.openapi()
        version = part["openapi"]
        for path, operations in part.get("paths", {}).items():
            if path in paths:
                raise ValueError(f"{path} is served by {domain} and by another function")
            paths[path] = {
                method: _documented(operation) if method in METHODS else operation
                for method, operation in operations.items()
            }
            for operation in operations.values():
                for tag in operation.get("tags", ()):
                    # A function's tag is described by its app's description.
                    tags.setdefault(tag, {"name": tag, "description": app.description})
        for section, entries in part.get("components", {}).items():
            merged = components.setdefault(section, {})
            for name, entry in entries.items():
                if merged.get(name, entry) != entry:
                    raise ValueError(f"{domain} defines {section}/{name} differently")
                merged[name] = entry
    document: dict[str, Any] = {
        "openapi": version,
        "info": {
            "title": "Task API",
            "version": __version__,
            "description": DESCRIPTION + GATEWAY_ERRORS,
        },
        # Relative: the document is served by the API itself, under whatever stage or base
        # path the page that loads it has.
        "servers": [{"url": "/"}],
        "tags": list(tags.values()),
        "paths": paths,
    }
    if components:
        document["components"] = {
            section: dict(sorted(entries.items())) for section, entries in components.items()
        }
    return document


API_DOC = ROOT / "docs" / "API.md"
ROUTES_START = "<!-- The route table: written by `make openapi` from the OpenAPI document. -->\n"
ROUTES_END = "<!-- end of the route table -->"


def route_table(document: dict[str, Any]) -> str:
    """docs/API.md's table of every operation: its query parameters and headers, whether
    it needs a token, its success and its other documented statuses."""
    rows = [
        "| call | what | token | success | also |",
        "|---|---|---|---|---|",
    ]
    for path, item in document["paths"].items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            parameters = operation.get("parameters", [])
            query = [p["name"] for p in parameters if p["in"] == "query"]
            headers = [p["name"] for p in parameters if p["in"] == "header"]
            call = f"`{method.upper()} {path}" + (f"?{'&'.join(query)}`" if query else "`")
            if headers:
                call += " " + ", ".join(f"`{name}`" for name in headers)
            codes = sorted(operation["responses"], key=str)
            success = [code for code in codes if code.startswith(("2", "3"))]
            rows.append(
                f"| {call} | {operation.get('summary', '')} "
                f"| {'bearer' if operation.get('security') else '-'} "
                f"| {', '.join(success)} | {', '.join(c for c in codes if c not in success)} |"
            )
    return "\n".join(rows) + "\n"


def api_doc_text(current: str) -> str:
    """docs/API.md with its route table rewritten from the document."""
    before, found, rest = current.partition(ROUTES_START)
    if not found or ROUTES_END not in rest:
        raise ValueError(f"{API_DOC} has no route table markers")
    after = rest[rest.index(ROUTES_END) :]
    return before + ROUTES_START + route_table(openapi_document()) + after


def openapi_text() -> str:
    # Minified: the function's folder must stay small (each is at most 128 KiB).
    return json.dumps(openapi_document(), separators=(",", ":"), sort_keys=False) + "\n"


def migration_head() -> str | None:
    handler = import_file(ROOT / "migrations" / "handler.py", "migrate_handler")
    head: str | None = handler.head_revision()
    return head


def migration_head_text() -> str:
    head = migration_head()
    # A Python literal in the quotes `ruff format` keeps.
    literal = "None" if head is None else json.dumps(head)
    return (
        '"""Generated by `make openapi` (tools/generate.py): the newest Alembic revision."""\n'
        "\n"
        f"MIGRATION_HEAD: str | None = {literal}\n"
    )


def main() -> None:
    outputs = {
        OPENAPI_FILE: openapi_text(),
        MIGRATION_HEAD_FILE: migration_head_text(),
        API_DOC: api_doc_text(API_DOC.read_text()),
    }
    for path, text in outputs.items():
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)} ({len(text.encode())} bytes)")
    print(f"apps: {', '.join(domain_apps())}")


if __name__ == "__main__":
    main()
