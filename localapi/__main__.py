"""`python -m localapi`: serve template.yaml's HTTP API without Docker, or invoke one
function with an event file (the Docker-free `sam local start-api` / `sam local invoke`).

    python -m localapi [--port 3000] [--reload] [--stage dev] [--log-level warning] [--debug]
    python -m localapi invoke HealthFunction events/schedule-health.json
    python -m localapi invoke TasksFunction events/tasks-list.json [--token ACCESS_TOKEN]

A problem the developer can fix (a port in use, a setting a function refuses, a missing
event file) is one line and exit status 1 or 2; `--debug` (or LOG_LEVEL=DEBUG) adds the
traceback.
"""

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

import uvicorn

from localapi.events import http_event
from localapi.reload import CodeReload
from localapi.runtime import FunctionInitError, InvocationTimeoutError, developer_settings
from localapi.server import configure_server_logging, http_response, report, start
from localapi.template import Function, Template, TemplateError, load_template
from localapi.workers import FunctionPool, Worker, WorkerError, function_environment

logger = logging.getLogger("localapi")

# Every request crosses the server's one process twice (HTTP in, HTTP out): uvicorn's
# httptools parser costs that process about half of what its h11 one does.
HTTP_PARSER = "httptools"


# The functions' LOG_LEVEL (the Settings class takes four names) for each of uvicorn's.
FUNCTION_LOG_LEVELS = {
    "critical": "ERROR",
    "error": "ERROR",
    "warning": "WARNING",
    "info": "INFO",
    "debug": "DEBUG",
    "trace": "DEBUG",
}


# The sample events' placeholders (events/README.md), and the user whose tokens replace
# them when no --token is given: made in the configured (local) database on first use.
ACCESS_PLACEHOLDER = "<ACCESS_TOKEN>"
REFRESH_PLACEHOLDER = "<REFRESH_TOKEN>"
LOCAL_USER = {"email": "local-user@example.com", "password": "local user's sample password"}


class UsageError(ValueError):
    """Something the developer typed cannot be used: said in one line, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localapi", description=__doc__.split("\n")[0])
    parser.add_argument("--template", default="template.yaml", help="SAM template to serve")
    commands = parser.add_subparsers(dest="command")
    invoke = commands.add_parser("invoke", help="call one function with an event, print its result")
    invoke.add_argument("function", help="the function's logical id, e.g. HealthFunction")
    invoke.add_argument("event", nargs="?", help="JSON event file ('-' for stdin; default {})")
    invoke.add_argument(
        "--token",
        help=f"access token for the event's {ACCESS_PLACEHOLDER} (default: a local user's,"
        " signed up on first use)",
    )
    serve = commands.add_parser("serve", help="serve the HTTP API (default)")
    for command in (parser, serve):
        command.add_argument("--host", default="127.0.0.1")
        command.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
        command.add_argument(
            "--workers",
            type=int,
            default=0,
            help="worker processes per function, each serving one request (default: one more than"
            " the cores)",
        )
        command.add_argument("--reload", action="store_true", help="restart when code changes")
        command.add_argument(
            "--stage", help="serve under /STAGE, as API Gateway serves a named stage"
        )
        command.add_argument(
            "--log-level",
            choices=list(FUNCTION_LOG_LEVELS),
            help="the server's and the functions' log level, over LOG_LEVEL (default info:"
            " a line per request; warning: problems only)",
        )
    for command in (parser, invoke, serve):
        command.add_argument(
            "--debug", action="store_true", help="tracebacks with errors (as LOG_LEVEL=DEBUG)"
        )
    args = parser.parse_args(argv)
    configure_server_logging()
    debug = args.debug or developer_settings().get("LOG_LEVEL", "").upper() == "DEBUG"
    try:
        if args.command == "invoke":
            return _invoke(args.template, args.function, args.event, args.token)
        return _serve(args, debug=debug)
    except (TemplateError, UsageError) as error:
        report(error, debug=debug, traceback=False)
        return 2
    except FunctionInitError as error:
        report(error, debug=debug)
        return 1


def _serve(args: argparse.Namespace, *, debug: bool) -> int:
    if args.log_level:
        # The workers read it (they are started with this process's environment), so that
        # one option quiets the functions' request lines as well as the server.
        os.environ["LOG_LEVEL"] = FUNCTION_LOG_LEVELS[args.log_level]
    # Each function logs every request as a JSON line: uvicorn's access line would repeat it.
    server_options: dict[str, Any] = {
        "http": HTTP_PARSER,
        "log_level": args.log_level or "info",
        "access_log": False,
    }
    template = load_template(args.template, developer_settings())
    # Read by the reloader's server process and by the workers, which report init errors.
    os.environ["LOCALAPI_DEBUG"] = "1" if debug else "0"
    # Bound before the banner, so that a busy port is said at once, and said alone.
    listener = _bind(args.host, args.port)
    if not args.reload:
        # The template read above: parsing it again would add a third of a second.
        app = start(template, workers=args.workers, stage=args.stage)
        _print_banner(template, args.host, args.port, args.stage)
        server = uvicorn.Server(
            uvicorn.Config(app, host=args.host, port=args.port, **server_options)
        )
        server.run(sockets=[listener])
        return 0
    _print_banner(template, args.host, args.port, args.stage)
    # The reloader runs the app in a child process, which builds it from these variables.
    os.environ["LOCALAPI_TEMPLATE"] = str(template.path)
    os.environ["LOCALAPI_WORKERS"] = str(args.workers)
    os.environ["LOCALAPI_STAGE"] = args.stage or ""
    config = uvicorn.Config(
        "localapi.server:app_from_environment",
        factory=True,
        host=args.host,
        port=args.port,
        reload=True,
        **server_options,
        reload_dirs=[str(folder) for folder in template.source_dirs],
    )
    # What uvicorn.run does with reload=True, with a reloader that misses no save.
    server = uvicorn.Server(config)
    reloader = CodeReload(config, target=server.run, sockets=[listener])
    with contextlib.suppress(KeyboardInterrupt):
        reloader.run()
    return reloader.exit_code


def _bind(host: str, port: int) -> socket.socket:
    """The server's listening socket (as uvicorn binds it), or UsageError for a busy port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not left 0: asyncio sets TCP_NODELAY only on sockets that say so,
    # and without it every response waited ~40 ms for a delayed ACK (Nagle).
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            raise UsageError(
                f"Port {port} on {host} is already in use (another server?): stop it,"
                f" or serve on another port (--port, or PORT=... make run)"
            ) from error
        raise UsageError(f"Cannot listen on {host}:{port}: {error.strerror}") from error
    listener.set_inheritable(True)
    return listener


def _invoke(template_path: str, name: str, event_path: str | None, token: str | None) -> int:
    settings = developer_settings()
    template = load_template(template_path, settings)
    function = template.function(name)
    event = _read_event(event_path)
    with _Functions(template, settings) as functions:
        try:
            event = _with_tokens(functions, event, token)
            result = functions.call(function, event)
        except InvocationTimeoutError as exc:
            print(json.dumps({"errorMessage": str(exc), "errorType": "Sandbox.Timedout"}))
            return 1
        except WorkerError as exc:
            # The shape Lambda (and `sam local invoke`) report an unhandled error in; the
            # worker logged the traceback on stderr. "Type: message" from the handler's error.
            kind, _, message = str(exc).partition(": ")
            if not kind.isidentifier():
                kind, message = "Runtime.ExitError", str(exc)
            print(json.dumps({"errorMessage": message, "errorType": kind}, indent=2))
            return 1
    print(json.dumps(result, indent=2, default=str))
    return 0


class _Functions:
    """`invoke`'s functions, each in one worker of the server's runtime (the same
    environment, import and Timeout), started at its first call."""

    def __init__(self, template: Template, settings: dict[str, str]) -> None:
        self.template = template
        self.settings = settings
        self.pools: dict[str, FunctionPool] = {}
        # One event loop for every call: a worker watches its pipe in the loop it first
        # served in.
        self.loop = asyncio.Runner()

    def call(self, function: Function, event: Any) -> Any:
        pool = self.pools.get(function.name)
        if pool is None:
            environment = function_environment(function, self.settings)
            worker = Worker(function, environment, logs_to_stderr=True)
            worker.wait_ready()  # FunctionInitError: one line, status 1
            pool = self.pools[function.name] = FunctionPool(function, environment, size=1)
            pool.add(worker)
        return self.loop.run(pool.invoke(event))

    def __enter__(self) -> "_Functions":
        return self

    def __exit__(self, *exc_info: object) -> None:
        for pool in self.pools.values():
            pool.close()
        self.loop.close()


def _with_tokens(functions: _Functions, event: Any, token: str | None) -> Any:
    """The event with real tokens in place of the sample events' placeholders: `token` (from
    `--token`) for the access token, or else a local user's, signed up on first use."""
    text = json.dumps(event)
    if ACCESS_PLACEHOLDER not in text and REFRESH_PLACEHOLDER not in text:
        return event
    if token and REFRESH_PLACEHOLDER not in text:
        return json.loads(text.replace(ACCESS_PLACEHOLDER, token))
    tokens = _local_user_tokens(functions)
    text = text.replace(ACCESS_PLACEHOLDER, tokens["access_token"])
    return json.loads(text.replace(REFRESH_PLACEHOLDER, tokens["refresh_token"]))


def _local_user_tokens(functions: _Functions) -> dict[str, str]:
    """A login of the local user (LOCAL_USER), signed up in the configured database first
    if it is not there yet."""
    answer = ""
    for path, fields in (("/api/auth/login", {}), ("/api/auth/signup", {"name": "Local user"})):
        found = functions.template.match("POST", path)
        if found is None:
            raise UsageError(f"The template has no POST {path}: pass --token (TOKEN=...)")
        route, parameters = found
        event = http_event(
            "POST",
            path,
            headers={"content-type": "application/json"},
            body=json.dumps({**LOCAL_USER, **fields}),
            route_key=route.key,
            path_parameters=parameters,
        )
        result = functions.call(functions.template.functions[route.function], event)
        status, _, content = http_response(result)
        if status in (200, 201):
            tokens: dict[str, str] = json.loads(content)
            return tokens
        answer = f"{status} {content.decode(errors='replace')}"
    raise UsageError(f"Could not log in or sign up {LOCAL_USER['email']} ({answer}): pass --token")


def _read_event(event_path: str | None) -> Any:
    if not event_path:
        return {}
    source = "stdin" if event_path == "-" else event_path
    try:
        text = sys.stdin.read() if event_path == "-" else Path(event_path).read_text()
        return json.loads(text)
    except FileNotFoundError:
        raise UsageError(
            f"No event file {event_path} (from {Path.cwd()}): name a JSON file,"
            f" '-' to read the event from stdin, or nothing to send {{}}"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"Cannot read the event file {event_path}: {error}") from None
    except json.JSONDecodeError as error:
        raise UsageError(f"The event from {source} is not JSON: {error}") from None


def _print_banner(template: Template, host: str, port: int, stage: str | None) -> None:
    url = f"http://{host}:{port}" + (f"/{stage}" if stage else "")
    lines = [f"Task API at {url}   docs: {url}/docs", "Routes:"]
    for route in template.routes:
        lines.append(f"  {route.key:<32} -> {route.function}")
    if template.unresolved:
        names = ", ".join(template.unresolved)
        lines.append(f"Not set locally (their values need AWS): {names}")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
