"""The input rules that more than one schema applies, each stated once: the password's
length (bcrypt reads at most 72 bytes) and the NUL character (PostgreSQL text cannot hold
one). Email normalisation has its own module, `taskapi.emails`.

Light on purpose (no SQLAlchemy): the schemas of the layer and of the functions import it.
"""

from typing import TypeVar

Text = TypeVar("Text", str, str | None)

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_BYTES = 72  # bcrypt ignores everything past 72 bytes; refuse rather than truncate

# The characters `str.strip()` removes (those for which `str.isspace()` holds), as a regex
# class: JSON Schema's `\s` (ECMA-262) is another set (it has U+FEFF and lacks U+001C to
# U+001F and U+0085), so the document names them one by one.
WHITESPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"

# How the OpenAPI document states the text rules that the validators enforce (the
# validators give the clearer message, so the patterns only document): no NUL character
# anywhere.
NO_NUL_PATTERN = r"^[^\x00]*$"


def trimmed_pattern(max_length: int) -> str:
    """The pattern of a name or title: once the whitespace around it is trimmed, 1 to
    `max_length` characters, none of them NUL. JSON Schema's `minLength` and `maxLength`
    would count the text as sent, whitespace included, which is not what the server counts.

    What is left after the leading whitespace starts with another character and runs to
    the trailing whitespace: at most `max_length` characters in all."""
    space = f"[{WHITESPACE}]*"
    return rf"^{space}[^{WHITESPACE}\x00][^\x00]{{0,{max_length - 1}}}{space}$"


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
