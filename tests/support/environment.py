"""Settings from the environment, which the layer reads once per container."""

import pytest

from taskapi import state


def configure(monkeypatch: pytest.MonkeyPatch, **settings: str) -> None:
    """Set environment variables and make the layer read them afresh."""
    for name, value in settings.items():
        monkeypatch.setenv(name.upper(), value)
    reset_caches()


def reset_caches() -> None:
    """Drop the container's state (`taskapi.state`): the next use builds it afresh."""
    state.reset()
