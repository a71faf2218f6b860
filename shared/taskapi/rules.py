"""The input rules that more than one schema applies, each stated once: the password's
length (bcrypt reads at most 72 bytes) and commonness, and the NUL character (PostgreSQL
text cannot hold one). Email normalisation has its own module, `taskapi.emails`.

Light on purpose (no SQLAlchemy): the schemas of the layer and of the functions import it.
"""

import functools
import gzip
from pathlib import Path
from typing import TypeVar

Text = TypeVar("Text", str, str | None)

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_BYTES = 72  # bcrypt ignores everything past 72 bytes; refuse rather than truncate
# How the OpenAPI document describes a password that a request sets.
NEW_PASSWORD_DESCRIPTION = (
    "At least 8 characters and at most 72 bytes in UTF-8; no NUL character; not one of"  # noqa: S105
    " the 20,000 most common passwords (in any letter case)"
)

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


# The 20,000 most common passwords (19,640 once lower-cased and deduplicated), one a line:
# Django's `CommonPasswordValidator` list, copied unchanged from Django 5.2.20
# (django/contrib/auth/common-passwords.txt.gz, BSD-3-Clause, its licence beside the
# file); Django credits the list to Royce Williams. A file rather than a package: the
# maintained packages that carry such a list (Django, zxcvbn) weigh megabytes in the
# layer, this 80 KB.
COMMON_PASSWORDS_FILE = Path(__file__).with_name("common-passwords.txt.gz")


@functools.cache
def common_passwords() -> frozenset[str]:
    """The list, read on the first password set in a container (a few milliseconds), not
    at import: logins, the routes of other functions and cold starts never pay for it."""
    with gzip.open(COMMON_PASSWORDS_FILE, "rt", encoding="utf-8") as lines:
        return frozenset(line.strip() for line in lines if line.strip())


def not_common(value: str) -> str:
    """Refuse a password from the common-password list, whatever its letters' case
    (ASVS 5.0 6.2.4): the first an attacker's guessing tries."""
    if value.lower() in common_passwords():
        raise ValueError(
            "is one of the most commonly used passwords, which attackers try first; choose another"
        )
    return value


def settable_password(value: str) -> str:
    """The rules of a password that a request sets (sign-up, change, reset)."""
    return not_common(fits_bcrypt(value))


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
