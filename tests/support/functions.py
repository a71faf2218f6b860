"""The repository's functions, imported as the Lambda runtime imports them, and the
template's routes to them."""

from functools import cache
from pathlib import Path
from types import ModuleType

from localapi.runtime import import_file
from localapi.template import Template, load_template

ROOT = Path(__file__).resolve().parents[2]


def load_module(relative_path: str, name: str) -> ModuleType:
    """Import a function's module (under a unique name: every function has an `app.py`)."""
    return import_file(ROOT / relative_path, name)


def load_function(domain: str) -> ModuleType:
    """The `app` module of `functions/<domain>`."""
    return load_module(f"functions/{domain}/app.py", f"{domain}_app")


@cache
def template() -> Template:
    """template.yaml as the local server reads it (its parameters at their defaults)."""
    return load_template(ROOT / "template.yaml")


def function_for(method: str, path: str) -> str | None:
    """The function (its folder under `functions/`) that API Gateway routes `METHOD path` to:
    the local server's router, on template.yaml's routes. None: no route takes it (a 404)."""
    found = template().match(method, path)
    return None if found is None else template().function(found[0].function).code_uri.name
