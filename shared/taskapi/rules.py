"""The input rules that more than one schema applies, each stated once: the password's
length (bcrypt reads at most 72 bytes) and the NUL character (PostgreSQL text cannot hold
one). Email normalisation has its own module, `taskapi.emails`.

Light on purpose (no SQLAlchemy): the schemas of the layer and of the functions import it.
"""

from typing import TypeVar

Text = TypeVar("Text", str, str | None)

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_BYTES = 72  # bcrypt ignores everything past 72 bytes; refuse rather than truncate

# How the OpenAPI document states the text rules that the validators enforce (the
# validators give the clearer message, so the patterns only document): no NUL character
# anywhere, and a title with more than whitespace.
NO_NUL_PATTERN = r"^[^\x00]*$"
NOT_BLANK_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]*$"


def storable_text(value: Text) -> Text:
    """Refuse a NUL character as bad input (a 422), not a 500 from the INSERT. (Lone
    surrogates never get this far: FastAPI's string validation refuses them.)"""
    if value is not None and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def fits_bcrypt(value: str) -> str:
    """Refuse a password that bcrypt cannot take: longer than 72 bytes, or holding NUL
    (bcrypt would ignore the rest, and bcrypt 5 raises on both)."""
    if len(value.encode("utf-8")) > PASSWORD_MAX_BYTES:
        raise ValueError(f"must be at most {PASSWORD_MAX_BYTES} bytes in UTF-8")
    return storable_text(value)
