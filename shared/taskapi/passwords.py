"""Password hashing with bcrypt, called directly.

bcrypt's own `hashpw`/`checkpw` are all the service needs: one scheme, one cost
(`BCRYPT_ROUNDS`), and hashes in the modular crypt format (`$2b$<cost>$...`) that passlib
wrote before, so every stored hash still verifies. passlib's `CryptContext` on top of it
cost the auth function about 15 modules and a backend self-test of 16 more bcrypt
operations in every cold start.

Passwords longer than 72 bytes or holding a NUL byte are refused by the schemas before
they get here (`taskapi.rules.fits_bcrypt`): bcrypt would ignore the rest, and bcrypt 5
raises on both.
"""

import functools

import bcrypt

from taskapi import state
from taskapi.settings import get_settings


@functools.cache
def _dummy_hash() -> bytes:
    # Made once per container, at the configured cost, so that checking a password
    # against it takes as long as checking a real one.
    return _hash(b"dummy password for unknown accounts")


def prepare_password_checks() -> None:
    """Make the dummy hash now (the auth function does it while its container starts):
    made on the first unknown-email login instead, the hash would double that login's
    time, telling an attacker the email has no account."""
    _dummy_hash()


def _hash(password: bytes) -> bytes:
    # `bcrypt.` at every call, not imported names: the tests and the login benchmark count
    # the operations by wrapping the module's functions.
    return bcrypt.hashpw(password, bcrypt.gensalt(rounds=get_settings().bcrypt_rounds))


def hash_password(password: str) -> str:
    return _hash(password.encode()).decode()


def verify_password(password: str, hashed: str | None) -> bool:
    """Check a password; with no hash (unknown account), spend the same time and fail."""
    if hashed is None:
        bcrypt.checkpw(password.encode(), _dummy_hash())
        return False
    return bcrypt.checkpw(password.encode(), hashed.encode())


def needs_rehash(hashed: str) -> bool:
    """Whether a stored hash has another cost than `BCRYPT_ROUNDS` (`$2b$<cost>$...`).

    A login re-hashes such a password once it is verified: left at an old, lower cost,
    a wrong password for a known email would be checked faster than an unknown email
    (checked against the dummy hash at the configured cost), telling them apart.
    """
    _, _, cost, _ = hashed.split("$", 3)
    return int(cost) != get_settings().bcrypt_rounds


# Made before a snapshot for the restored environments (`prepare_password_checks`); it
# depends on BCRYPT_ROUNDS alone.
state.register(_dummy_hash.cache_clear, kept_on_restore=True)
