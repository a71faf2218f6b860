"""Runs the template's real handlers in this process, as the Lambda runtime would: each
function imported once (its "container"), called with a Lambda-like context, bounded by
the function's Timeout. `python -m localapi invoke` uses it; the server runs each function
in worker processes instead (`localapi.workers`), which import it with `_import_handler`."""

import asyncio
import importlib.util
import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

from dotenv import dotenv_values

from localapi.events import LambdaContext
from localapi.template import Function, Template

logger = logging.getLogger("localapi")

Handler = Callable[[Any, Any], Any]

# The local server is a developer's machine, whatever stage the template deploys.
LOCAL_DEFAULTS = {"STAGE": "local"}


class InvocationTimeoutError(TimeoutError):
    """The handler ran past its function's Timeout; its thread is abandoned, not killed."""


class FunctionInitError(RuntimeError):
    """A function failed to start (its module raised on import): the server does not serve."""

    def __init__(self, function: Function, error: BaseException | str) -> None:
        # A string: the error as a worker process described it ("Type: message").
        reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        super().__init__(f"{function.name} cannot start: {reason}")


def developer_settings(env_file: Path | str = ".env") -> dict[str, str]:
    """What the developer set: the shell's variables, then `.env`'s for the others."""
    dotenv = {name: value for name, value in dotenv_values(env_file).items() if value is not None}
    return {**dotenv, **os.environ}


def apply_environment(
    template: Template, *, threads: int = 1, settings: Mapping[str, str] | None = None
) -> None:
    """Set the developer's settings, then the template's environment for the rest.

    `settings` (default: `developer_settings()`) win over the local defaults, which win
    over the template: STAGE is local whatever stage the template deploys, and the
    database pool holds a connection per worker thread (a Lambda container serves one
    request at a time; this process serves `threads`). `.env`'s values go into the
    environment too, so that a function reads them as it reads the shell's. All functions
    share this process, so a variable that two functions set differently takes the first
    value, with a warning.
    """
    settings = developer_settings() if settings is None else settings
    local_defaults = {**LOCAL_DEFAULTS, "DATABASE_POOL_SIZE": str(threads)}
    chosen: dict[str, tuple[str, str]] = {}
    for function in template.functions.values():
        for name, value in function.environment.items():
            if name in settings or name in local_defaults:
                continue
            if name in chosen and chosen[name][0] != value:
                logger.warning(
                    "%s: %s=%r differs from %s's %r; all functions share the latter",
                    function.name,
                    name,
                    value,
                    chosen[name][1],
                    chosen[name][0],
                )
            chosen.setdefault(name, (value, function.name))
    local = {name: value for name, value in local_defaults.items() if name not in settings}
    os.environ.update({**{name: value for name, (value, _) in chosen.items()}, **local, **settings})


def _give_thread_an_event_loop() -> None:
    # Mangum runs each request with `asyncio.get_event_loop().run_until_complete(...)`.
    # Outside the main thread there is no implicit loop (RuntimeError), so every worker
    # owns one, as a Lambda container's single thread does. The server's own loop runs in
    # another thread and is never touched by handlers.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    weakref.finalize(threading.current_thread(), loop.close)


class Runtime:
    """The template's functions, imported on first use and invoked on worker threads."""

    def __init__(self, template: Template, *, threads: int = 16) -> None:
        self.template = template
        self._handlers: dict[str, Handler] = {}
        self._import_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(
            max_workers=threads,
            thread_name_prefix="lambda",
            initializer=_give_thread_an_event_loop,
        )

    def handler(self, function: Function) -> Handler:
        """The function's handler, importing its module on first use (a cold start)."""
        with self._import_lock:
            if function.name not in self._handlers:
                self._handlers[function.name] = _import_handler(function)
            return self._handlers[function.name]

    def submit(self, function: Function, event: Any) -> "Future[Any]":
        context = LambdaContext(
            function_name=function.name,
            timeout_seconds=function.timeout,
            memory_limit_in_mb=function.memory,
        )
        return self._executor.submit(self._call, function, event, context)

    def _call(self, function: Function, event: Any, context: LambdaContext) -> Any:
        return self.handler(function)(event, context)

    def invoke_sync(self, function: Function, event: Any) -> Any:
        future = self.submit(function, event)
        try:
            return future.result(timeout=function.timeout)
        except TimeoutError:
            if future.done():  # it just finished, or raised TimeoutError itself
                return future.result()
            raise InvocationTimeoutError(_timeout_message(function)) from None

    def close(self) -> None:
        # Abandoned (timed-out) handlers cannot be stopped: don't wait for them.
        self._executor.shutdown(wait=False, cancel_futures=True)


def _timeout_message(function: Function) -> str:
    return f"{function.name} timed out after {function.timeout:g} seconds"


def import_file(path: Path, name: str, *, search_paths: Iterable[Path] = ()) -> ModuleType:
    """Import `path` as the module `name`, once; its folder and `search_paths` go on sys.path.

    That is how Lambda sees a function: its task root (for its sibling modules, uniquely
    named by convention) and its layers' folders (as /opt/python) on the path. Every
    function's entry point is `app.py`, so each needs a module name of its own.
    """
    if name in sys.modules:
        return sys.modules[name]
    for folder in (path.parent, *search_paths):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not path.is_file():
        raise ImportError(f"no module at {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import_handler(function: Function) -> Handler:
    """Import the function's handler module, as a cold start does."""
    path = function.handler_file
    try:
        module = import_file(
            path,
            f"localapi_function_{function.name}_{path.stem}",
            search_paths=[function.code_uri, *function.layers],
        )
    except ImportError as error:
        raise ImportError(f"{function.name}: {error} for Handler {function.handler}") from error
    handler: Handler | None = getattr(module, function.handler_name, None)
    if not callable(handler):
        raise ImportError(f"{function.name}: {path} has no callable {function.handler_name!r}")
    return handler
