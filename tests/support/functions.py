"""The repository's functions, imported as the Lambda runtime imports them."""

from pathlib import Path
from types import ModuleType

from localapi.runtime import import_file

ROOT = Path(__file__).resolve().parents[2]


def load_module(relative_path: str, name: str) -> ModuleType:
    """Import a function's module (under a unique name: every function has an `app.py`)."""
    return import_file(ROOT / relative_path, name)


def load_function(domain: str) -> ModuleType:
    """The `app` module of `functions/<domain>`."""
    return load_module(f"functions/{domain}/app.py", f"{domain}_app")
