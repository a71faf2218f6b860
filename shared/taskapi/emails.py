"""The one rule for email addresses: how every email is normalised (sign-up, login, and
any lookup by email, such as the throttling counts) and which ones sign-up accepts.

Normalised = trimmed, NFC, the domain in the Unicode form email-validator gives it (so a
full-width or punycode domain is the same domain), and lower-cased, local part included.
The same string typed at sign-up and at login therefore always finds the same account.
"""

import contextlib
import unicodedata

from email_validator import EmailNotValidError, validate_email

EMAIL_MAX_LENGTH = 320


def normalise_email(value: str) -> str:
    """The form every email is stored and looked up in; any string has one."""
    text = unicodedata.normalize("NFC", value.strip())
    # Not an address (a login may send anything): no account has it, so it is only
    # compared, and counted, in the plain normalised form.
    with contextlib.suppress(EmailNotValidError):
        text = validate_email(text, check_deliverability=False).normalized
    return unicodedata.normalize("NFC", text.lower())


def signup_email(value: str) -> str:
    """A bare address (no display name such as `Bob <bob@x.com>`), normalised; raises
    `ValueError` saying what is wrong (for schema validators)."""
    try:
        validate_email(unicodedata.normalize("NFC", value.strip()), check_deliverability=False)
    except EmailNotValidError as error:
        raise ValueError(f"not a valid email address: {error}") from None
    return normalise_email(value)
