"""The app factory every function uses: same errors, CORS and request log everywhere."""

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from mangum import Mangum
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskapi import __version__
from taskapi.logs import configure_logging, invocation_fields, log_context
from taskapi.settings import get_database_url, get_jwt_secret, get_settings

logger = logging.getLogger("taskapi.request")


class RequestLogMiddleware:
    """One JSON line per request: request ids, method, path, status and duration."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.cold_start = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app dies before answering

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        # Every log line of this request carries its ids, not only the request line.
        fields = {**_request_ids(scope), **invocation_fields(scope.get("aws.context"))}
        with log_context(**fields):
            try:
                await self.app(scope, receive, send_and_record)
            finally:
                cold_start, self.cold_start = self.cold_start, False
                logger.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                        "cold_start": cold_start,
                    },
                )


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
    return JSONResponse(status_code=500, content={"detail": "Internal Server Error"})


async def http_error(request: Request, error: Exception) -> Response:
    """FastAPI's own answer, except for a JSON body it could not even decode.

    A body that is not UTF-8, or nested too deeply for the JSON parser, gets a bare 400
    from FastAPI (any other malformed JSON gets 422 `json_invalid`); it becomes that same
    documented 422, so clients see one shape for every unreadable body.
    """
    assert isinstance(error, HTTPException)
    cause = error.__cause__
    if error.status_code == 400 and isinstance(cause, (UnicodeDecodeError, RecursionError)):
        reason = "not UTF-8" if isinstance(cause, UnicodeDecodeError) else "nested too deeply"
        return JSONResponse(
            status_code=422,
            content={
                "detail": [
                    {
                        "type": "json_invalid",
                        "loc": ["body", getattr(cause, "start", 0)],
                        "msg": "JSON decode error",
                        "ctx": {"error": f"The body is {reason}"},
                    }
                ]
            },
        )
    return await http_exception_handler(request, error)


async def validation_error(request: Request, error: Exception) -> JSONResponse:
    """FastAPI's 422 list, without the `input` it would echo back.

    Echoing the rejected value would put passwords into error bodies (a password that is
    too short) and fails outright on text JSON cannot encode (a lone surrogate), which
    would turn bad input into a 500.
    """
    assert isinstance(error, RequestValidationError)
    errors = [{key: value for key, value in e.items() if key != "input"} for e in error.errors()]
    _explain_content_type(request, errors)
    return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})


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


def create_app(*, title: str, description: str = "", database: bool = True) -> FastAPI:
    """A FastAPI app with the project's error format, CORS and request logging.

    `database=False` keeps SQLAlchemy out of the import path (the health function's
    `GET /health` must not pay for it); such an app maps database errors itself.
    """
    settings = get_settings()
    configure_logging(settings.log_level)
    app = FastAPI(
        title=title,
        description=description,
        version=__version__,
        # The health function serves one document for the whole API.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.add_exception_handler(Exception, unhandled_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    if database:
        from taskapi.db import install_database_error_handlers

        install_database_error_handlers(app)
        # Fetch the secrets while the container starts: a missing one stops it here, with
        # a clear message, rather than failing its first request.
        get_database_url()
        get_jwt_secret()
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type", "If-Match"],
            expose_headers=["ETag", "Location", "Retry-After"],
        )
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
        return mangum(event, context)

    return handler
