"""The local HTTP API: an ASGI app that routes requests as an API Gateway HTTP API does and
answers them through the template's real Lambda handlers, with payload 2.0 events.

Gateway errors mirror API Gateway's own, `{"message": ...}` bodies: 404 for no route, 413
over the 10 MB payload limit, 502 when the handler raises or returns something that is not
a response or is over Lambda's 6 MB response limit, and 504 when it runs past its
function's Timeout.
"""

import base64
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from localapi.events import http_event
from localapi.runtime import FunctionInitError, InvocationTimeoutError, developer_settings
from localapi.template import Cors, Route, Template, load_template
from localapi.workers import ProcessRuntime, WorkerError

logger = logging.getLogger("localapi")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[str, str]]

# API Gateway's maximum payload (HTTP APIs and Lambda's synchronous invocations alike).
MAX_BODY_BYTES = 10 * 1024 * 1024
# Lambda's limit on a synchronous invocation's response (the result as JSON): past it
# Lambda returns an error instead and API Gateway answers 502. Enforced here so that an
# answer too large for AWS cannot pass locally.
MAX_RESULT_BYTES = 6 * 1024 * 1024
# Set by the server, never passed through from the handler's response.
_HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection"})


class InvalidResponseError(ValueError):
    """The handler returned something API Gateway cannot turn into an HTTP response."""


def http_response(result: Any) -> tuple[int, Headers, bytes]:
    """An HTTP response from a handler's result, read as API Gateway reads payload 2.0."""
    # Lambda hands the result over as JSON: what does not serialise never reaches the API.
    # A string body always does, unchanged, and it is most of the result: it stays out.
    text = result.get("body") if isinstance(result, dict) else None
    if isinstance(text, str):
        result = {**result, "body": ""}
    try:
        serialised = json.dumps(result, ensure_ascii=False)
        result = json.loads(serialised)
    except (TypeError, ValueError) as exc:
        raise InvalidResponseError(f"The result is not JSON: {exc}") from exc
    _refuse_oversized(len(serialised.encode()), text if isinstance(text, str) else "")
    if isinstance(text, str):
        result["body"] = text
    if not isinstance(result, dict) or "statusCode" not in result:
        # The 2.0 shortcut: any other JSON is a 200 with that JSON (a string as it is).
        body = result if isinstance(result, str) else json.dumps(result)
        return 200, [("content-type", "application/json")], body.encode()
    status = result["statusCode"]
    if not isinstance(status, int) or not 100 <= status <= 599:
        raise InvalidResponseError(f"statusCode {status!r} is not an HTTP status")
    headers = [
        (str(name).lower(), str(value))
        for name, value in (result.get("headers") or {}).items()
        if str(name).lower() not in _HOP_BY_HOP
    ]
    headers += [("set-cookie", str(cookie)) for cookie in result.get("cookies") or []]
    body = result.get("body") or ""
    if not isinstance(body, str):
        raise InvalidResponseError("body must be a string")
    if result.get("isBase64Encoded"):
        try:
            return status, headers, base64.b64decode(body, validate=True)
        except ValueError as exc:
            raise InvalidResponseError(f"body is not base64: {exc}") from exc
    return status, headers, body.encode()


# The most bytes one character of a string takes in UTF-8 JSON without ASCII escapes: a
# control character's `\u00XX`.
_MAX_JSON_BYTES_PER_CHAR = 6


def _refuse_oversized(rest: int, body: str) -> None:
    """Refuse a result over Lambda's response limit: `rest` is the size of the result
    without its body as JSON. The body is escaped only when it might be too large."""
    if rest + len(body) * _MAX_JSON_BYTES_PER_CHAR <= MAX_RESULT_BYTES:
        return
    # The python3.12+ runtimes (the template's is 3.13) write the result as UTF-8 JSON
    # without ASCII escapes, so that is the size Lambda's limit applies to.
    size = rest + len(json.dumps(body, ensure_ascii=False).encode()) - len('""')
    if size > MAX_RESULT_BYTES:
        raise InvalidResponseError(
            f"The result is {size} bytes, over Lambda's {MAX_RESULT_BYTES}-byte response limit"
        )


def gateway_error(status: int, message: str) -> tuple[int, Headers, bytes]:
    body = json.dumps({"message": message}).encode()
    return status, [("content-type", "application/json")], body


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (tests, benchmarks and load runs start servers)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class ServerStartError(RuntimeError):
    """A server started for a test, a tool or a benchmark exited, or did not answer in time;
    the message ends with its log."""


def wait_until_serving(
    process: "subprocess.Popen[Any]",
    url: str,
    log: Path,
    *,
    timeout: float = 90,
    pause: float = 0.1,
) -> None:
    """Until `url` answers at all (any HTTP status): ServerStartError, with the log, if the
    process exits first or `timeout` seconds pass. Every function's first worker imports at
    start-up, all at once: on a busy machine that takes a while."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise ServerStartError(f"the server exited with {process.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 (a local server)
                return
        except urllib.error.HTTPError:
            return  # an answer, whatever its status
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise ServerStartError(f"no answer from {url}:\n{_tail(log)}") from None
            time.sleep(pause)


@contextmanager
def running(
    command: list[str],
    *,
    ready_url: str,
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 90,
) -> Iterator["subprocess.Popen[bytes]"]:
    """`command` (a server: `python -m localapi ...`, uvicorn) until the block ends, once
    `ready_url` answers; its output goes to `log`. The one way tests, tools and benchmarks
    start a server and wait for it."""
    with log.open("ab") as output:
        process = subprocess.Popen(  # noqa: S603 (the caller's own server command)
            command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        wait_until_serving(process, ready_url, log, timeout=timeout)
        yield process
    finally:
        stop_process(process)


def _tail(log: Path, lines: int = 60) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {log})"


def stop_process(process: "subprocess.Popen[Any]", *, grace: float = 10) -> None:
    """Terminate a server started for a test or a run; kill it if it ignores that."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class LocalApi:
    """The ASGI application: `uvicorn` serves it (see `localapi.__main__`)."""

    def __init__(
        self, template: Template, runtime: ProcessRuntime, *, stage: str | None = None
    ) -> None:
        self.template = template
        self.runtime = runtime
        # A named stage (`--stage dev`): served under `/dev`, as API Gateway serves one.
        self.stage = stage

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # API Gateway HTTP APIs carry no WebSockets
        status, headers, body = await self.respond(scope, receive)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (name.encode("latin-1"), value.encode("latin-1"))
                    for name, value in [*headers, ("content-length", str(len(body)))]
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def respond(self, scope: Scope, receive: Receive) -> tuple[int, Headers, bytes]:
        cors, origin = self.template.cors, _header(scope, b"origin")
        if cors is None:
            return await self._forward(scope, receive)
        if (
            scope["method"] == "OPTIONS"
            and origin
            and _header(scope, b"access-control-request-method")
        ):
            # API Gateway answers every preflight itself, whatever the routes.
            return 204, _cors_headers(cors, origin, preflight=True), b""
        status, headers, body = await self._forward(scope, receive)
        # ... and replaces whatever CORS headers the function sent.
        kept = [(name, value) for name, value in headers if not name.startswith("access-control-")]
        return status, [*kept, *_cors_headers(cors, origin)], body

    async def _forward(self, scope: Scope, receive: Receive) -> tuple[int, Headers, bytes]:
        path = scope["path"]
        if self.stage:
            # The stage picks the routes; the function still gets the whole path.
            prefix = f"/{self.stage}"
            if not path.startswith(f"{prefix}/"):
                return gateway_error(404, "Not Found")
            path = path[len(prefix) :]
        found = self.template.match(scope["method"], path)
        if found is None:
            return gateway_error(404, "Not Found")
        route, parameters = found
        body = await _read_body(scope, receive)
        if body is None:
            return gateway_error(413, "Request Entity Too Large")
        event = _event(scope, body, route, parameters, stage=self.stage or "$default")
        request_id = event["requestContext"]["requestId"]
        function = self.template.functions[route.function]
        try:
            status, headers, content = http_response(await self.runtime.invoke(function, event))
        except InvocationTimeoutError as exc:
            logger.error("%s (request %s); its worker was killed", exc, request_id)
            status, headers, content = gateway_error(504, "Service Unavailable")
        except WorkerError as exc:
            # The worker logged the traceback; this line ties it to the request.
            logger.error(
                "%s failed (request %s, %s): %s", function.name, request_id, route.key, exc
            )
            status, headers, content = gateway_error(502, "Internal Server Error")
        except Exception:
            logger.exception("%s failed (request %s, %s)", function.name, request_id, route.key)
            status, headers, content = gateway_error(502, "Internal Server Error")
        return status, [*headers, ("apigw-requestid", request_id)], content

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # The functions were imported before serving (`start`).
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.runtime.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _cors_headers(cors: Cors, origin: str | None, *, preflight: bool = False) -> Headers:
    if not origin or not cors.allows(origin):
        return []
    wildcard = "*" in cors.allow_origins and not cors.allow_credentials
    headers = [("access-control-allow-origin", "*" if wildcard else origin)]
    if cors.allow_credentials:
        headers.append(("access-control-allow-credentials", "true"))
    if preflight:
        headers += [
            ("access-control-allow-methods", ",".join(cors.allow_methods)),
            ("access-control-allow-headers", ",".join(cors.allow_headers)),
        ]
        if cors.max_age is not None:
            headers.append(("access-control-max-age", str(cors.max_age)))
    elif cors.expose_headers:
        headers.append(("access-control-expose-headers", ",".join(cors.expose_headers)))
    return headers


async def _read_body(scope: Scope, receive: Receive) -> bytes | None:
    """The request body, or None once it passes MAX_BODY_BYTES."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > MAX_BODY_BYTES:
            return None
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _event(
    scope: Scope, body: bytes, route: Route, parameters: dict[str, str], *, stage: str
) -> dict[str, Any]:
    client_ip = (scope.get("client") or ("127.0.0.1", 0))[0]
    server_port = (scope.get("server") or ("127.0.0.1", 80))[1]
    headers = [
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]
    ]
    # API Gateway appends these to whatever the client sent.
    headers += [
        ("x-forwarded-for", client_ip),
        ("x-forwarded-port", str(server_port)),
        ("x-forwarded-proto", scope.get("scheme", "http")),
    ]
    return http_event(
        scope["method"],
        scope.get("raw_path", scope["path"].encode()).decode("latin-1") or "/",
        query=scope.get("query_string", b"").decode("latin-1"),
        headers=headers,
        body=body or None,
        route_key=route.key,
        path_parameters=parameters,
        source_ip=client_ip,
        stage=stage,
    )


def build_local_api(
    template: Template | Path | str = "template.yaml",
    *,
    workers: int = 0,
    stage: str | None = None,
) -> LocalApi:
    """The app for a template (loaded, or its path): `workers` processes per function (0:
    `default_workers()`)."""
    settings = developer_settings()
    if not isinstance(template, Template):
        template = load_template(template, settings)
    runtime = ProcessRuntime(template, settings, workers=workers or default_workers())
    return LocalApi(template, runtime, stage=stage)


def default_workers() -> int:
    """One worker more than the cores. Every request crosses the server's own process as
    well as a worker, so with one worker per core a core waits on the server's hand-offs
    while its worker is idle; one more keeps every core busy (`make bench`'s local-server
    row compares the default with uvicorn serving the tasks app directly)."""
    return (os.cpu_count() or 1) + 1


def start(
    template: Template | Path | str,
    *,
    workers: int,
    stage: str | None = None,
    keep_serving: bool = False,
) -> LocalApi:
    """The app with every function imported; FunctionInitError if one cannot start, unless
    `keep_serving`: then that function's routes answer 502 and the others serve."""
    api = build_local_api(template, workers=workers, stage=stage)
    try:
        api.runtime.warm_up(keep_serving=keep_serving)
    except FunctionInitError:
        api.runtime.close()
        raise
    return api


def app_from_environment() -> LocalApi:
    """`uvicorn --factory` entry point: the reloader starts a fresh process that calls it.

    At the first start, a function that cannot start ends that process (status 1) after one
    line: nothing has served yet, and the developer reads why. After a save (the reloader
    sets LOCALAPI_RELOADED) the server keeps serving: the broken function's routes answer
    502 at once and every other function still answers, until the next save.
    """
    configure_server_logging()
    try:
        return start(
            os.environ.get("LOCALAPI_TEMPLATE", "template.yaml"),
            workers=int(os.environ.get("LOCALAPI_WORKERS", "0")),
            stage=os.environ.get("LOCALAPI_STAGE") or None,
            keep_serving=os.environ.get("LOCALAPI_RELOADED") == "1",
        )
    except FunctionInitError as error:
        report(error, debug=os.environ.get("LOCALAPI_DEBUG") == "1")
        raise SystemExit(1) from None


def report(error: BaseException, *, debug: bool, traceback: bool = True) -> None:
    """One line for an error that stops the server; its traceback only when debugging."""
    if debug:
        logger.error("%s", error, exc_info=error)
    elif traceback:
        logger.error("%s (--debug shows the traceback)", error)
    else:
        logger.error("%s", error)


def configure_server_logging() -> None:
    """Give the server's messages a handler of their own: the functions' app factory
    takes over the root logger (JSON lines on stdout)."""
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s:     [localapi] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
