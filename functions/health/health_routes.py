"""The health function's HTTP surface: liveness, the database check, and the API's docs."""

import functools
import json
from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from health_check import (
    DatabaseHealth,
    DatabaseUnavailableError,
    Health,
    HealthError,
    check_database,
)

from taskapi import __version__

# Written by `make openapi` from the auth, tasks and health apps; served as it is, so this
# function never imports the others.
OPENAPI_FILE = Path(__file__).resolve().parent / "openapi.json"

router = APIRouter(tags=["health"])

# Routes are `async def` although they never await: FastAPI runs a plain `def` route in a
# worker thread, which Mangum's one-task-per-invocation makes anyio start afresh every time
# (docs/PERFORMANCE.md). A Lambda container serves one request at a time.


@router.get("/health", response_model=Health, summary="Liveness, without touching the database")
async def health() -> Health:
    return Health(version=__version__, timestamp=datetime.now(UTC))


@router.get(
    "/health/db",
    response_model=DatabaseHealth,
    responses={503: {"model": HealthError, "description": "The database is unavailable"}},
    summary="A database round trip and the migration status",
)
async def health_db() -> DatabaseHealth | JSONResponse:
    try:
        return check_database()
    except DatabaseUnavailableError as error:
        return JSONResponse(
            status_code=503,
            content=HealthError(detail=error.detail).model_dump(),
            headers={"Retry-After": "5"},
        )


@functools.cache
def _openapi_document(root_path: str) -> bytes:
    document = OPENAPI_FILE.read_bytes()
    if not root_path:
        return document
    # Behind a named stage or a base path, Swagger UI's "Try it out" must call the API
    # under the same prefix: the document names it as its server, as FastAPI's would.
    return json.dumps({**json.loads(document), "servers": [{"url": root_path}]}).encode()


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> Response:
    # At most two prefixes per deployment (its stage, its base path): the cache stays small.
    document = _openapi_document(request.scope.get("root_path", ""))
    return Response(content=document, media_type="application/json")


@router.get("/docs", include_in_schema=False)
async def docs() -> HTMLResponse:
    # Relative, so that the page also works under an API Gateway stage prefix (/dev/docs).
    # Swagger UI's script and styles come from a CDN, as FastAPI's own /docs does.
    return get_swagger_ui_html(openapi_url="openapi.json", title="Task API")
