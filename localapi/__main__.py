"""`python -m localapi`: serve template.yaml's HTTP API without Docker, or invoke one
function with an event file (the Docker-free `sam local start-api` / `sam local invoke`).

    python -m localapi [--port 3000] [--reload] [--stage dev]
    python -m localapi invoke HealthFunction events/scheduled.json
"""

import argparse
import contextlib
import json
import logging
import os
import sys
import traceback
from pathlib import Path

import uvicorn

from localapi.reload import CodeReload
from localapi.runtime import InvocationTimeoutError, Runtime, apply_environment
from localapi.server import configure_logging, create_app
from localapi.template import Template, TemplateError, load_template

logger = logging.getLogger("localapi")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localapi", description=__doc__.split("\n")[0])
    parser.add_argument("--template", default="template.yaml", help="SAM template to serve")
    commands = parser.add_subparsers(dest="command")
    invoke = commands.add_parser("invoke", help="call one function with an event, print its result")
    invoke.add_argument("function", help="the function's logical id, e.g. HealthFunction")
    invoke.add_argument("event", nargs="?", help="JSON event file ('-' for stdin; default {})")
    for command in (parser, commands.add_parser("serve", help="serve the HTTP API (default)")):
        command.add_argument("--host", default="127.0.0.1")
        command.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
        command.add_argument("--threads", type=int, default=16, help="handler worker threads")
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
    args = parser.parse_args(argv)
    configure_logging()
    try:
        if args.command == "invoke":
            return _invoke(args.template, args.function, args.event)
        return _serve(
            args.template,
            args.host,
            args.port,
            args.threads,
            args.reload,
            args.log_level,
            args.stage,
        )
    except TemplateError as exc:
        logger.error("%s", exc)
        return 2


def _serve(
    template_path: str,
    host: str,
    port: int,
    threads: int,
    reload: bool,
    log_level: str,
    stage: str | None,
) -> int:
    template = load_template(template_path)
    _print_banner(template, host, port, stage)
    if not reload:
        app = create_app(template_path, threads=threads, stage=stage)
        uvicorn.run(app, host=host, port=port, log_level=log_level)
        return 0
    # The reloader runs the app in a child process, which builds it from these variables.
    os.environ["LOCALAPI_TEMPLATE"] = str(template.path)
    os.environ["LOCALAPI_THREADS"] = str(threads)
    os.environ["LOCALAPI_STAGE"] = stage or ""
    config = uvicorn.Config(
        "localapi.server:app_from_environment",
        factory=True,
        host=host,
        port=port,
        log_level=log_level,
        reload=True,
        reload_dirs=[str(folder) for folder in template.source_dirs],
    )
    # What uvicorn.run does with reload=True, with a reloader that misses no save.
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        CodeReload(config, target=server.run, sockets=[config.bind_socket()]).run()
    return 0


def _invoke(template_path: str, name: str, event_path: str | None) -> int:
    template = load_template(template_path)
    function = template.function(name)
    if event_path == "-":
        event = json.load(sys.stdin)
    else:
        event = json.loads(Path(event_path).read_text()) if event_path else {}
    apply_environment(template)
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


def _print_banner(template: Template, host: str, port: int, stage: str | None) -> None:
    url = f"http://{host}:{port}" + (f"/{stage}" if stage else "")
    lines = [f"Task API at {url}   docs: {url}/docs", "Routes:"]
    for route in template.routes:
        lines.append(f"  {route.key:<32} -> {route.function}")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
