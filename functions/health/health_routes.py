"""The health function's HTTP surface: liveness, the database check, and the API's docs."""

import functools
from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter
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
    """Answers while the function runs; never touches the database."""
    return Health(version=__version__, timestamp=datetime.now(UTC))


@router.get(
    "/health/db",
    response_model=DatabaseHealth,
    responses={503: {"model": HealthError, "description": "The database is unavailable"}},
    summary="A database round trip and the migration status",
)
async def health_db() -> DatabaseHealth | JSONResponse:
    """A round trip to the database, and whether its schema is at the newest migration."""
    try:
        return check_database()
    except DatabaseUnavailableError as error:
        return JSONResponse(
            status_code=503,
            content=HealthError(detail=error.detail).model_dump(),
            headers={"Retry-After": "5"},
        )


@functools.cache
def _openapi_document() -> bytes:
    return OPENAPI_FILE.read_bytes()


@router.get("/openapi.json", include_in_schema=False)
async def openapi() -> Response:
    return Response(content=_openapi_document(), media_type="application/json")


@router.get("/docs", include_in_schema=False)
async def docs() -> HTMLResponse:
    # Relative, so that the page also works under an API Gateway stage prefix (/dev/docs).
    # Swagger UI's script and styles come from a CDN, as FastAPI's own /docs does.
    return get_swagger_ui_html(openapi_url="openapi.json", title="Task API")
