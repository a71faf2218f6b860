"""How the code describes itself in the OpenAPI document (tools/generate.py writes it).

Light on purpose: the health function imports it without SQLAlchemy or the models.
"""

from collections.abc import Mapping
from typing import Any

from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict

# The config of every response schema: a field with a default is in every answer all the
# same, so the document lists it as required (pydantic leaves such fields out, and
# generated clients then type them as maybe missing).
RESPONSE_CONFIG = ConfigDict(json_schema_serialization_defaults_required=True)


def operation_id(route: APIRoute) -> str:
    """The route function's name in camelCase (`complete_task` -> `completeTask`).

    FastAPI's default adds the path and method (`complete_task_api_tasks__task_id__complete_patch`),
    which generated clients turn into unreadable method names.
    """
    first, *rest = route.name.split("_")
    return first + "".join(word.capitalize() for word in rest)


# The one answer for a database that cannot be reached: `taskapi.db`'s handler and the
# health function send it, and every route that reads the database documents it.
DATABASE_UNAVAILABLE = "The database is unavailable"
DATABASE_UNAVAILABLE_DETAIL = f"{DATABASE_UNAVAILABLE}; try again shortly."
RETRY_AFTER_SECONDS = 5
RETRY_AFTER = {"Retry-After": str(RETRY_AFTER_SECONDS)}

Responses = dict[int | str, dict[str, Any]]

# The request examples' account, which Swagger UI's "Try it out" pre-fills: sign up, log
# in, change the password (to the second), delete the account (with the second). The
# health function serves the document with the email made fresh at each load, so that
# sign-up works each time it is tried.
EXAMPLE_EMAIL = "ada@example.com"
EXAMPLE_PASSWORD = "a long walk in the park"  # noqa: S105 (a documented example)
EXAMPLE_NEW_PASSWORD = "a longer walk in the hills"  # noqa: S105


def retry_after_header(description: str) -> dict[str, Any]:
    """The OpenAPI description of a `Retry-After` header (seconds)."""
    return {"Retry-After": {"description": description, "schema": {"type": "integer"}}}


def error_responses(
    model: type[BaseModel],
    described: Mapping[int, str],
    *,
    database: bool = True,
    headers: Mapping[int, dict[str, Any]] | None = None,
) -> Responses:
    """OpenAPI entries for the error statuses a route really answers, each with a `model`
    body: `described` maps a status to its description, `headers` a status to its headers;
    `database` adds the 503 of a route that reads the database."""
    if database:
        described = {**described, 503: DATABASE_UNAVAILABLE}
    responses: Responses = {
        code: {"model": model, "description": text} for code, text in described.items()
    }
    for code, documented in (headers or {}).items():
        responses[code]["headers"] = documented
    return responses
