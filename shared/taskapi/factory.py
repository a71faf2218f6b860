"""The app factory every function uses: same errors, CORS and request log everywhere."""

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from mangum import Mangum
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskapi import __version__
from taskapi.logs import configure_logging, invocation_fields, log_context, mark_cold_start
from taskapi.openapi import operation_id
from taskapi.settings import get_database_url, get_jwt_keys, get_settings

logger = logging.getLogger("taskapi.request")


class HttpMiddleware:
    """A pure ASGI middleware for HTTP requests (`http`); anything else, such as the
    lifespan, passes through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class RequestLogMiddleware(HttpMiddleware):
    """One JSON line per request: request ids, method, path, status and duration (and,
    from the log context, whether it is the container's first: `taskapi.logs` keeps the
    one cold-start flag)."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500  # what the client gets if the app dies before answering

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        # Every log line of this request carries its ids, not only the request line.
        headers = (scope.get("aws.event") or {}).get("headers") or {}
        fields = {**_request_ids(scope), **invocation_fields(scope.get("aws.context"), headers)}
        with log_context(**fields):
            try:
                await self.app(scope, receive, send_and_record)
            finally:
                logger.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    },
                )


# Every response: browsers must not guess a type other than the one declared.
NOSNIFF = (b"x-content-type-options", b"nosniff")
# Responses that carry tokens or a signed-in user's data: no cache may keep them
# (RFC 6749 section 5.1 for tokens).
NO_STORE = (b"cache-control", b"no-store")


class SecurityHeadersMiddleware(HttpMiddleware):
    """`X-Content-Type-Options: nosniff` on every response; `Cache-Control: no-store` on
    every response to a request with an `Authorization` header, and on every response of
    an app whose answers are all private (`create_app(private=True)`: the auth function,
    whose sign-up, login and refresh carry tokens)."""

    def __init__(self, app: ASGIApp, *, private: bool) -> None:
        super().__init__(app)
        self.private = private

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        no_store = self.private or any(
            name == b"authorization" for name, _ in scope.get("headers", ())
        )

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = security_headers(
                    list(message.get("headers", ())), no_store=no_store
                )
            await send(message)

        await self.app(scope, receive, send_with_headers)


def security_headers(
    headers: list[tuple[bytes, bytes]], *, no_store: bool
) -> list[tuple[bytes, bytes]]:
    """The response's headers with the project's security headers set (and any
    `Cache-Control` replaced where `no_store` applies)."""
    names = {NOSNIFF[0]} | ({NO_STORE[0]} if no_store else set())
    kept = [(name, value) for name, value in headers if name.lower() not in names]
    return [*kept, NOSNIFF, *([NO_STORE] if no_store else [])]


def path_prefix(path: str, *, stage: str | None, base_path: str) -> str:
    """The part of `path` in front of the app's own routes: a base path or a stage name.

    A custom domain's API mapping (`API_BASE_PATH`, e.g. `/v1`) stays in the path API
    Gateway sends; so does a named stage's `/{stage}` when the API is called at its
    execute-api URL, but not through a custom domain (whose mapping names the stage). So
    each is removed only where the path starts with it, as a whole segment.
    """
    candidates = [base_path]
    if stage and stage != "$default":
        candidates.append(f"/{stage}")
    for prefix in candidates:
        if prefix and (path == prefix or path.startswith(f"{prefix}/")):
            return prefix
    return ""


class PathPrefixMiddleware(HttpMiddleware):
    """Serve the routes behind a named stage or a custom domain's base path.

    The prefix becomes the ASGI `root_path`: Starlette routes on the path without it, and
    `request.url` keeps the address the client used. Routes write `Location` as a path from
    the API's root (`/api/tasks/7`); like a reverse proxy, this puts the prefix in front.
    """

    def __init__(self, app: ASGIApp, *, base_path: str) -> None:
        super().__init__(app)
        # API_BASE_PATH, read once, when the app is built.
        self.base_path = base_path

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        stage = ((scope.get("aws.event") or {}).get("requestContext") or {}).get("stage")
        prefix = path_prefix(scope["path"], stage=stage, base_path=self.base_path)
        if not prefix:
            await self.app(scope, receive, send)
            return

        async def send_with_prefix(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [
                        (name, prefix.encode() + value)
                        if name.lower() == b"location" and value.startswith(b"/")
                        else (name, value)
                        for name, value in message.get("headers", [])
                    ],
                }
            await send(message)

        await self.app({**scope, "root_path": prefix}, receive, send_with_prefix)


def _request_ids(scope: Scope) -> dict[str, Any]:
    # Mangum puts the API Gateway event and the Lambda context into the scope.
    event = scope.get("aws.event") or {}
    context = scope.get("aws.context")
    return {
        "request_id": (event.get("requestContext") or {}).get("requestId"),
        "lambda_request_id": getattr(context, "aws_request_id", None),
    }


async def unhandled_error(request: Request, error: Exception) -> JSONResponse:
    logger.error("unhandled error", exc_info=error, extra={"path": request.url.path})
    # Starlette sends this answer from outside every middleware: the security headers
    # are set here too (never cached, whatever the request).
    response = JSONResponse(status_code=500, content={"detail": "Internal Server Error"})
    response.raw_headers = security_headers(response.raw_headers, no_store=True)
    return response


# Why FastAPI could not read a JSON body, when it answers a bare 400 (any other malformed
# JSON gets its 422 `json_invalid` already).
_UNREADABLE_BODY = {
    UnicodeDecodeError: "The body is not UTF-8",
    RecursionError: "The body is nested too deeply",
    # Any other ValueError of the parser: an integer longer than Python's digit limit
    # (4300) is the one that reaches here.
    ValueError: "The body holds a value the JSON parser cannot read (such as an integer "
    "of more than 4300 digits)",
}


HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> str:
    """Every method that some route of the app serves at the request's path.

    Each method is tried against the routes as the router would (`matches`), so that
    path parameters, and any router included with `include_router` (which keeps its
    routes to itself), are matched as for a real request.
    """
    routes = [route for route in request.app.router.routes if isinstance(route, BaseRoute)]
    return ", ".join(
        method
        for method in HTTP_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    )


async def http_error(request: Request, error: Exception) -> Response:
    """FastAPI's own answer, except for a JSON body it could not even decode, and a 405's
    `Allow` header, which lists every method of the path.

    A body that is not UTF-8, nested too deeply for the JSON parser, or holding an integer
    too long for it, gets a bare 400 from FastAPI; it becomes the documented 422
    `json_invalid`, so clients see one shape for every unreadable body.
    """
    if not isinstance(error, HTTPException):  # registered for HTTPException alone
        raise TypeError(error)
    if error.status_code == 405:
        # Starlette's `Allow` names the methods of the first route that matched the path
        # alone; RFC 9110 wants every method the path serves.
        error = HTTPException(405, error.detail, headers={"Allow": allowed_methods(request)})
    cause = error.__cause__
    if error.status_code == 400 and isinstance(cause, (ValueError, RecursionError)):
        reason = next(text for kind, text in _UNREADABLE_BODY.items() if isinstance(cause, kind))
        return JSONResponse(
            status_code=422,
            content={
                "detail": [
                    {
                        "type": "json_invalid",
                        "loc": ["body", getattr(cause, "start", 0)],
                        "msg": "JSON decode error",
                        "ctx": {"error": reason},
                    }
                ]
            },
        )
    return await http_exception_handler(request, error)


# The most errors a 422 lists: with one entry per unknown key, an answer listing them
# all was eight times its request (docs/RELIABILITY.md); the first ones say what is wrong.
MAX_VALIDATION_ERRORS = 20


async def validation_error(request: Request, error: Exception) -> JSONResponse:
    """FastAPI's 422 list, at most `MAX_VALIDATION_ERRORS` of it, without the `input` it
    would echo back.

    Echoing the rejected value would put passwords into error bodies (a password that is
    too short) and fails outright on text JSON cannot encode (a lone surrogate), which
    would turn bad input into a 500. Only the kept entries are encoded: encoding the whole
    list cost seconds of CPU for a large body.
    """
    if not isinstance(error, RequestValidationError):  # registered for this class alone
        raise TypeError(error)
    errors = without_input(error.errors()[:MAX_VALIDATION_ERRORS])
    _explain_content_type(request, errors)
    return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})


def without_input(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """A 422's `detail` list: the errors without the `input` they would echo back (see
    `validation_error`); the batch route's operations answer with it too."""
    return [{key: value for key, value in e.items() if key != "input"} for e in errors]


# The largest request body a JSON route takes unless it says otherwise (`max_body_bytes`):
# the largest valid body of any such route is a few KiB (a task's 5,000-character
# description, escaped), and pydantic's work grows with the body.
DEFAULT_MAX_BODY_BYTES = 64 * 1024
# The OpenAPI extension by which a route states its own bound (and documents it).
MAX_BODY_EXTENSION = "x-max-body-bytes"


def max_body_bytes(limit: int) -> dict[str, Any]:
    """A route's `openapi_extra` for a body bound other than the default, e.g. a batch:
    `@router.post(..., openapi_extra=max_body_bytes(512 * 1024))`."""
    return {MAX_BODY_EXTENSION: limit}


class BoundedBodyRoute(APIRoute):
    """A route that refuses a body over its bound (413) before FastAPI parses it.

    The bound is checked in the route, not in a middleware, because it is the route's:
    the default, or what its `openapi_extra` states (`max_body_bytes`). The body is read
    whole by then anyway (Mangum has it from the event), and the request keeps it for
    the route's own parsing.
    """

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()
        limit = int((self.openapi_extra or {}).get(MAX_BODY_EXTENSION, DEFAULT_MAX_BODY_BYTES))

        async def bounded(request: Request) -> Response:
            declared = request.headers.get("content-length", "")
            if (declared.isdigit() and int(declared) > limit) or len(await request.body()) > limit:
                raise HTTPException(
                    413, f"The request body is larger than this route takes ({limit} bytes)"
                )
            response: Response = await handler(request)
            return response

        return bounded


def _explain_content_type(request: Request, errors: list[dict[str, Any]]) -> None:
    """Say why a JSON body was not read when it came with another content type.

    FastAPI parses the body as JSON only for `application/json` (or `+json`, or no
    content type at all); otherwise the model is handed the raw bytes, and pydantic's
    "Input should be a valid dictionary" hides the cause (`curl -d` sends a form type).
    """
    content_type = request.headers.get("content-type")
    media_type = (content_type or "").partition(";")[0].strip().lower()
    if not content_type or media_type == "application/json" or media_type.endswith("+json"):
        return
    for entry in errors:
        if tuple(entry.get("loc") or ()) == ("body",):
            entry["msg"] = (
                f"The body must be JSON sent with Content-Type: application/json, not {media_type}"
            )
            entry["ctx"] = {"content_type": content_type, "expected": "application/json"}


class _AppOverrides:
    """A function router's `dependency_overrides_provider`: its routes are built before
    their app exists, so `create_app` points this at the app, and `app.dependency_overrides`
    reaches them as it would through `include_router`."""

    def __init__(self) -> None:
        self.app: FastAPI | None = None

    @property
    def dependency_overrides(self) -> dict[Callable[..., Any], Callable[..., Any]]:
        return self.app.dependency_overrides if self.app is not None else {}


def function_router(**options: Any) -> APIRouter:
    """An `APIRouter` for a function's routes (`create_app(routers=...)`): each operation's
    id is its route function's name in camelCase, as on the app, and each refuses a body
    over its bound (`BoundedBodyRoute`)."""
    return APIRouter(
        generate_unique_id_function=operation_id,
        dependency_overrides_provider=_AppOverrides(),
        route_class=BoundedBodyRoute,
        **options,
    )


def create_app(
    *,
    title: str,
    description: str = "",
    routers: Sequence[APIRouter] = (),
    database: bool = True,
    private: bool = False,
) -> FastAPI:
    """A FastAPI app serving the routes of `routers`, with the project's error format,
    CORS, security headers and request logging.

    The routers (made by `function_router`) have their routes served as the app's own,
    as they were built when declared: `app.include_router` would have FastAPI 0.165 build
    every route of an included router a second time, lazily, on the app's first request,
    which doubled what route building costs a cold start.

    Each operation's id is its route function's name in camelCase; `description` also
    describes the app's tag in the OpenAPI document. `database=False` keeps SQLAlchemy out
    of the import path (the health function's `GET /health` must not pay for it); such an
    app maps database errors itself. `private=True` marks every response
    `Cache-Control: no-store` (responses to requests with an `Authorization` header always
    are).
    """
    settings = get_settings()
    configure_logging(settings.log_level)
    # A new app's first request is its container's first: on Lambda one app is built per
    # container (at import), so this changes nothing there; tests and the local server
    # build many in one process, and each app's first request is logged as a cold start.
    mark_cold_start()
    app = FastAPI(
        title=title,
        description=description,
        version=__version__,
        routes=[route for router in routers for route in router.routes],
        generate_unique_id_function=operation_id,
        # The health function serves one document for the whole API.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    for router in routers:
        provider = router.dependency_overrides_provider
        if not isinstance(provider, _AppOverrides):
            raise TypeError("create_app(routers=...) takes routers made by function_router()")
        provider.app = app
    app.add_exception_handler(Exception, unhandled_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    if database:
        from taskapi.db import install_database_error_handlers

        install_database_error_handlers(app)
        # Fetch the secrets while the container starts: a missing one stops it here, with
        # a clear message, rather than failing its first request.
        get_database_url()
        get_jwt_keys()
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type", "If-Match", "Idempotency-Key"],
            expose_headers=["ETag", "Location", "Retry-After", "Idempotent-Replayed"],
        )
    # Outside CORS, so that its preflight answers carry the headers too.
    app.add_middleware(SecurityHeadersMiddleware, private=private)
    app.add_middleware(PathPrefixMiddleware, base_path=settings.api_base_path)
    # Added last, so outermost: it logs the path as the client sent it, prefix included.
    app.add_middleware(RequestLogMiddleware)
    return app


LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]
_thread_state = threading.local()


def _ensure_event_loop() -> None:
    # Mangum runs each request with `asyncio.get_event_loop()`, which warns on Python 3.12+
    # when the thread has no loop set, and fails outright in any thread but the main one
    # (the local server and the concurrency tests call handlers from worker threads).
    # Each thread gets one loop, made once and reused by every later invocation.
    loop = getattr(_thread_state, "loop", None)
    if loop is None:
        loop = _thread_state.loop = asyncio.new_event_loop()
        # Close it once the thread is gone, so worker threads leak no sockets.
        weakref.finalize(threading.current_thread(), loop.close)
    # Set again on every call: an `asyncio.run()` in this thread between two invocations
    # (a script, a test) leaves the thread with no current loop when it ends.
    asyncio.set_event_loop(loop)


def make_handler(app: FastAPI) -> LambdaHandler:
    """The Lambda entry point for an app: Mangum, with a sound event loop in every thread.

    Lifespan is off: the engine is created lazily, once per container, never in a startup
    hook (Mangum would run one on every invocation).
    """
    _ensure_event_loop()
    mangum = Mangum(app, lifespan="off")

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        _ensure_event_loop()
        return _untyped_when_empty(mangum(event, context))

    return handler


def _untyped_when_empty(response: dict[str, Any]) -> dict[str, Any]:
    """No content-type on a 204 or 304: Mangum gives every payload 2.0 answer without one
    `application/json`, an empty one included, which would describe a body that is not there."""
    if response.get("statusCode") in (204, 304) and not response.get("body"):
        headers = response.get("headers") or {}
        if headers.get("content-type") == "application/json":
            del headers["content-type"]
    return response
