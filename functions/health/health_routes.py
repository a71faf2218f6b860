"""The health function's HTTP surface: liveness, the database check, and the API's docs."""

import functools
import importlib.util
import json
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path

from fastapi import HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response

from health_check import (
    DatabaseHealth,
    DatabaseUnavailableError,
    Health,
    HealthError,
    check_database,
)
from taskapi import __version__
from taskapi.factory import function_router
from taskapi.openapi import EXAMPLE_EMAIL, RETRY_AFTER, error_responses

# Written by `make openapi` from the auth, tasks and health apps; served as it is, so this
# function never imports the others.
OPENAPI_FILE = Path(__file__).resolve().parent / "openapi.json"

router = function_router(tags=["health"])


@router.get("/health", response_model=Health, summary="Liveness, without touching the database")
async def health() -> Health:
    """Answers while the function runs; never touches the database."""
    return Health(version=__version__, timestamp=datetime.now(UTC))


@router.get(
    "/health/db",
    response_model=DatabaseHealth,
    responses=error_responses(HealthError, {}),
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
            headers=RETRY_AFTER,
        )


# A stage or base path in front of the API (`/dev`), as API Gateway's raw path shows it.
_PREFIX = re.compile(r"(/[A-Za-z0-9._~-]+)*")


def _prefix(request: Request, route_path: str) -> str:
    """What the client's URL has before the route's own path: `/dev` for `/dev/openapi.json`
    (the ASGI root path where the factory set one, else read off API Gateway's raw path)."""
    prefix = request.scope.get("root_path") or ""
    if not prefix:
        raw_path = (request.scope.get("aws.event") or {}).get("rawPath") or ""
        prefix = raw_path.removesuffix(route_path) if raw_path.endswith(route_path) else ""
    return prefix if _PREFIX.fullmatch(prefix) else ""


@functools.lru_cache(maxsize=8)
def _openapi_document(prefix: str) -> bytes:
    document = OPENAPI_FILE.read_bytes()
    if not prefix:
        return document
    # The document's server is `/`; served under a prefix, "Try it out" and generated
    # clients that read the server from it must call the prefixed paths.
    parsed = json.loads(document)
    parsed["servers"] = [{"url": prefix}]
    return json.dumps(parsed, separators=(",", ":")).encode()


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> Response:
    document = _openapi_document(_prefix(request, "/openapi.json"))
    # The examples' account with an email of its own at each load: "Try it out" on sign-up
    # (and on login after it) works every time, not only the first.
    fresh = f"{EXAMPLE_USER}-{secrets.token_hex(3)}@{EXAMPLE_DOMAIN}".encode()
    document = document.replace(f'"{EXAMPLE_EMAIL}"'.encode(), b'"' + fresh + b'"')
    return Response(content=document, media_type="application/json")


EXAMPLE_USER, _, EXAMPLE_DOMAIN = EXAMPLE_EMAIL.partition("@")


# ---------------------------------------------------------------------------------------
# The pages that browse the document, with Swagger UI's and ReDoc's files served from here
# (the layer ships them, from the pinned `fastapi-standalone-docs` package), so that both
# work with no internet. All their URLs are relative, so they also work under a stage
# prefix: `/dev/docs` loads `/dev/docs/swagger-ui-bundle.js` and `/dev/openapi.json`.

TITLE = "Task API"
# The files each page loads, by the name it asks for, in the package's `static/` folder.
ASSETS = {
    "docs": {
        "swagger-ui-bundle.js": "swagger/swagger-ui-bundle.js",
        "swagger-ui.css": "swagger/swagger-ui.css",
        "favicon.png": "fastapi/favicon.png",
    },
    "redoc": {
        "redoc.standalone.js": "redoc/redoc.standalone.js",
        # The package's script shows its "API docs by Redocly" logo from beside itself.
        "logo-mini.svg": "redoc/logo-mini.svg",
        "favicon.png": "fastapi/favicon.png",
    },
}
MEDIA_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
# The files change only with the package's version, and the pages' URLs with it.
ASSET_CACHE_CONTROL = "public, max-age=86400"


@functools.cache
def _static_folder() -> Path:
    # Found without importing the package: its module imports parts of FastAPI this
    # function never needs.
    spec = importlib.util.find_spec("fastapi_standalone_docs")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("fastapi-standalone-docs is missing: it ships in the layer")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@functools.cache
def _asset(page: str, name: str) -> bytes:
    return (_static_folder() / ASSETS[page][name]).read_bytes()


# Both pages are the same for every request (their URLs are relative), so each is made once.
SWAGGER_UI_PAGE = get_swagger_ui_html(
    openapi_url="openapi.json",
    title=TITLE,
    swagger_js_url="docs/swagger-ui-bundle.js",
    swagger_css_url="docs/swagger-ui.css",
    swagger_favicon_url="docs/favicon.png",
    # No online validator badge: it would send the document to a public service.
    swagger_ui_parameters={"validatorUrl": None},
).body
REDOC_PAGE = get_redoc_html(
    openapi_url="openapi.json",
    title=TITLE,
    redoc_js_url="redoc/redoc.standalone.js",
    redoc_favicon_url="redoc/favicon.png",
    # The fonts would come from a public CDN; the page falls back to system fonts.
    with_google_fonts=False,
).body
# Without the patterns, which a reader cannot use (the fields' descriptions say the rules).
REDOC_PAGE = bytes(REDOC_PAGE).replace(b"<redoc spec-url=", b"<redoc hide-schema-pattern spec-url=")


@router.get("/docs", include_in_schema=False)
async def docs() -> HTMLResponse:
    return HTMLResponse(SWAGGER_UI_PAGE)


@router.get("/redoc", include_in_schema=False)
async def redoc() -> HTMLResponse:
    return HTMLResponse(REDOC_PAGE)


def _serve_assets(page: str) -> None:
    """`GET /{page}/{name}`: the files that `page` loads, by the names in `ASSETS`."""

    async def asset(name: str) -> Response:
        if name not in ASSETS[page]:
            raise HTTPException(status_code=404, detail="Not Found")
        return Response(
            content=_asset(page, name),
            media_type=MEDIA_TYPES[Path(name).suffix],
            headers={"Cache-Control": ASSET_CACHE_CONTROL},
        )

    router.add_api_route(f"/{page}/{{name}}", asset, name=f"{page}_asset", include_in_schema=False)


for _page in ASSETS:
    _serve_assets(_page)
