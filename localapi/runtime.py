"""What a function's execution environment starts from: the developer's settings, the
handler imported as Lambda imports it, and the errors of a function that cannot start or
runs past its Timeout. `localapi.workers` runs each function in processes of its own, for
the server and for `python -m localapi invoke` alike."""

import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from dotenv import dotenv_values

from localapi.template import Function

logger = logging.getLogger("localapi")

Handler = Callable[[Any, Any], Any]

# The local server is a developer's machine, whatever stage the template deploys.
LOCAL_DEFAULTS = {"STAGE": "local"}


class InvocationTimeoutError(TimeoutError):
    """The handler ran past its function's Timeout; its worker process is killed."""


class FunctionInitError(RuntimeError):
    """A function failed to start (its module raised on import)."""

    def __init__(self, function: Function, error: BaseException | str) -> None:
        # A string: the error as a worker process described it ("Type: message").
        reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        super().__init__(f"{function.name} cannot start: {reason}")


def developer_settings(env_file: Path | str = ".env") -> dict[str, str]:
    """What the developer set: the shell's variables, then `.env`'s for the others."""
    dotenv = {name: value for name, value in dotenv_values(env_file).items() if value is not None}
    return {**dotenv, **os.environ}


def timeout_message(function: Function) -> str:
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


def import_handler(function: Function) -> Handler:
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
