"""Settings from the environment, which the layer reads once per container."""

import pytest

from taskapi.db import reset_engine
from taskapi.passwords import clear_password_cache
from taskapi.settings import clear_settings_cache
from taskapi.tokens import VERIFIED_TOKENS


def configure(monkeypatch: pytest.MonkeyPatch, **settings: str) -> None:
    """Set environment variables and make the layer read them afresh."""
    for name, value in settings.items():
        monkeypatch.setenv(name.upper(), value)
    reset_caches()


def reset_caches() -> None:
    clear_settings_cache()
    clear_password_cache()
    VERIFIED_TOKENS.clear()
    reset_engine()
