"""Password hashing with bcrypt, through passlib's API.

The `passlib` import comes from libpass, the maintained fork: passlib 1.7.4's own bcrypt
self-test fails on bcrypt 5. Passwords longer than 72 bytes or holding a NUL byte are
refused by the schemas before they get here (`taskapi.rules.fits_bcrypt`): bcrypt would
ignore the rest, and bcrypt 5 raises on both.
"""

import functools

from passlib.context import CryptContext

from taskapi.settings import get_settings


@functools.cache
def _context() -> CryptContext:
    return CryptContext(schemes=["bcrypt"], bcrypt__rounds=get_settings().bcrypt_rounds)


@functools.cache
def _dummy_hash() -> str:
    # Made once per container, at the configured cost, so that checking a password
    # against it takes as long as checking a real one.
    return str(_context().hash("dummy password for unknown accounts"))


def prepare_password_checks() -> None:
    """Build the context and the dummy hash now (the auth function does it while its
    container starts): made on the first unknown-email login instead, the hash would
    double that login's time, telling an attacker the email has no account."""
    _dummy_hash()


def hash_password(password: str) -> str:
    return str(_context().hash(password))


def verify_password(password: str, hashed: str | None) -> bool:
    """Check a password; with no hash (unknown account), spend the same time and fail."""
    if hashed is None:
        _context().verify(password, _dummy_hash())
        return False
    return bool(_context().verify(password, hashed))


def clear_password_cache() -> None:
    """Forget the context (tests, after changing BCRYPT_ROUNDS)."""
    _context.cache_clear()
    _dummy_hash.cache_clear()
