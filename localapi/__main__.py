"""`python -m localapi`: serve template.yaml's HTTP API without Docker, or invoke one
function with an event file (the Docker-free `sam local start-api` / `sam local invoke`).

    python -m localapi [--port 3000] [--reload] [--stage dev] [--log-level warning] [--debug]
    python -m localapi invoke HealthFunction events/scheduled.json

A problem the developer can fix (a port in use, a setting a function refuses, a missing
event file) is one line and exit status 1 or 2; `--debug` (or LOG_LEVEL=DEBUG) adds the
traceback.
"""

import argparse
import contextlib
import errno
import json
import logging
import os
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

import uvicorn

from localapi.reload import CodeReload
from localapi.runtime import (
    FunctionInitError,
    InvocationTimeoutError,
    Runtime,
    apply_environment,
    developer_settings,
)
from localapi.server import configure_server_logging, report, start
from localapi.template import Template, TemplateError, load_template

logger = logging.getLogger("localapi")

# Every request crosses the server's one process twice (HTTP in, HTTP out): uvicorn's
# httptools parser costs that process about half of what its h11 one does.
HTTP_PARSER = "httptools"


class UsageError(ValueError):
    """Something the developer typed cannot be used: said in one line, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localapi", description=__doc__.split("\n")[0])
    parser.add_argument("--template", default="template.yaml", help="SAM template to serve")
    commands = parser.add_subparsers(dest="command")
    invoke = commands.add_parser("invoke", help="call one function with an event, print its result")
    invoke.add_argument("function", help="the function's logical id, e.g. HealthFunction")
    invoke.add_argument("event", nargs="?", help="JSON event file ('-' for stdin; default {})")
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
            default="info",
            choices=["critical", "error", "warning", "info", "debug", "trace"],
            help="uvicorn's log level (info logs every request)",
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
            return _invoke(args.template, args.function, args.event)
        return _serve(args, debug=debug)
    except (TemplateError, UsageError) as error:
        report(error, debug=debug, traceback=False)
        return 2
    except FunctionInitError as error:
        report(error, debug=debug)
        return 1


def _serve(args: argparse.Namespace, *, debug: bool) -> int:
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
            uvicorn.Config(
                app,
                host=args.host,
                port=args.port,
                log_level=args.log_level,
                http=HTTP_PARSER,
            )
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
        http=HTTP_PARSER,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        reload=True,
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


def _invoke(template_path: str, name: str, event_path: str | None) -> int:
    settings = developer_settings()
    template = load_template(template_path, settings)
    function = template.function(name)
    event = _read_event(event_path)
    apply_environment(template, settings=settings)
    runtime = Runtime(template, threads=1)
    try:
        # As with `sam local invoke`, stdout carries the result alone; the function's logs
        # (JSON lines its app factory sends to stdout, as on Lambda) go to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            result = runtime.invoke_sync(function, event)
    except InvocationTimeoutError as exc:
        print(json.dumps({"errorMessage": str(exc), "errorType": "Sandbox.Timedout"}))
        return 1
    except Exception as exc:
        # The shape Lambda (and `sam local invoke`) report an unhandled error in.
        error = {
            "errorMessage": str(exc),
            "errorType": type(exc).__name__,
            "stackTrace": traceback.format_tb(exc.__traceback__),
        }
        print(json.dumps(error, indent=2))
        return 1
    finally:
        runtime.close()
    print(json.dumps(result, indent=2, default=str))
    return 0


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
