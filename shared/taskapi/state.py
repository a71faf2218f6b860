"""A container's state, in one place.

What the layer builds once per container and keeps between requests (the settings, the
secrets, the AWS clients, the engine, the dummy password hash, the verified tokens)
registers here, where it is made, how to drop it. `reset()` drops all of it: the tests
call it after changing the environment, and SnapStart's restore hook calls
`reset(restoring=True)`, which keeps what a restored environment may share with the
snapshot it starts from.
"""

from collections.abc import Callable

# Each entry: how to drop one piece of state, and whether a restored environment keeps it.
_registry: list[tuple[Callable[[], None], bool]] = []


def register(drop: Callable[[], None], *, kept_on_restore: bool = False) -> None:
    """Add state that `reset()` drops by calling `drop`. `kept_on_restore`: it depends on
    the environment variables alone, which a restored environment shares with the
    snapshot (the settings, what they derive), and making it again would only cost
    the first request; otherwise (connections, sockets, secrets that may have rotated
    while the snapshot was cached) a restore drops it too."""
    _registry.append((drop, kept_on_restore))


def reset(*, restoring: bool = False) -> None:
    """Drop the container's state; the next use builds it afresh."""
    for drop, kept_on_restore in _registry:
        if not (restoring and kept_on_restore):
            drop()
