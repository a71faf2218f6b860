"""Email: one call, `send_email`, that never raises.

Where the message goes is a setting (`EMAIL_DELIVERY`, by default chosen from the others):
an SMTP server when `SMTP_SERVER` is set, Amazon SES on a deployed stage (through the
container's bounded client, `taskapi.aws`), otherwise the server's log, so that under
`make run` a developer reads the link there. A message that cannot be sent is logged
(without its text: it may hold a token) and counted (the `EmailFailed` metric), and the
caller gets False: a mail server's trouble is never a 500, and an answer that depends on
whether a mail went out would tell a stranger whether an account exists.
"""

import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Literal

from taskapi.aws import aws_client
from taskapi.metrics import METRICS_NAMESPACE, put_metrics
from taskapi.settings import Settings, get_settings

logger = logging.getLogger(__name__)

Delivery = Literal["ses", "smtp", "log"]


def delivery(settings: Settings) -> Delivery:
    """Where `send_email` sends, for these settings."""
    if settings.email_delivery != "auto":
        return settings.email_delivery
    if settings.smtp_server:
        return "smtp"
    return "log" if settings.is_local else "ses"


def _message(settings: Settings, *, to: str, subject: str, text: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.email_from
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid()
    message.set_content(text)
    return message


def _send_smtp(settings: Settings, message: EmailMessage) -> None:
    if not settings.smtp_server:
        raise ValueError("EMAIL_DELIVERY=smtp needs SMTP_SERVER (and SMTP_PORT, 587 by default)")
    timeout = settings.smtp_timeout_seconds
    with smtplib.SMTP(settings.smtp_server, settings.smtp_port, timeout=timeout) as smtp:
        if settings.smtp_starttls:
            # Certificates checked against the system's CAs (SSL_CERT_FILE adds another).
            smtp.starttls(context=ssl.create_default_context())
        if settings.smtp_username:
            smtp.login(settings.smtp_username, settings.smtp_password or "")
        smtp.send_message(message)


def _send_ses(settings: Settings, *, to: str, subject: str, text: str) -> None:
    aws_client("sesv2").send_email(
        FromEmailAddress=settings.email_from,
        Destination={"ToAddresses": [to]},
        Content={
            "Simple": {
                "Subject": {"Data": subject, "Charset": "UTF-8"},
                "Body": {"Text": {"Data": text, "Charset": "UTF-8"}},
            }
        },
    )


def send_email(*, to: str, subject: str, text: str) -> bool:
    """Send a plain-text email; True once the server or SES accepted it (or it was logged),
    False after logging and counting a failure. Never raises."""
    settings = get_settings()
    how = delivery(settings)
    try:
        if how == "log":
            # WARNING: shown at any log level `make run` is given, and a sign that the
            # mail went nowhere else.
            logger.warning(
                "email (not sent: no SMTP_SERVER, local stage)\nTo: %s\nSubject: %s\n\n%s",
                to,
                subject,
                text,
                extra={"email_delivery": how},
            )
        elif how == "smtp":
            _send_smtp(settings, _message(settings, to=to, subject=subject, text=text))
        else:
            _send_ses(settings, to=to, subject=subject, text=text)
    # Whatever went wrong (the network, a refusal, a malformed address or setting), the
    # caller's answer must not change, so every exception ends here.
    except Exception as error:
        logger.warning(
            "email not sent",
            extra={"email_delivery": how, "error": f"{type(error).__name__}: {error}"[:500]},
        )
        _count(settings, sent=0, failed=1)
        return False
    _count(settings, sent=1, failed=0)
    return True


def _count(settings: Settings, *, sent: int, failed: int) -> None:
    put_metrics(
        namespace=METRICS_NAMESPACE,
        dimensions={"Stage": settings.stage},
        metrics={"EmailSent": (sent, "Count"), "EmailFailed": (failed, "Count")},
    )
