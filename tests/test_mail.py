"""The mail component (`taskapi.mail.send_email`) against a real SMTP server in the test
process, SES under moto, and the log: what arrives, and that a failure is logged, counted
and answered with False, never raised."""

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from taskapi.mail import delivery, send_email
from taskapi.settings import get_settings
from tests.support.environment import configure
from tests.support.silent_server import silent_server
from tests.support.smtp import USERNAME, Mailbox, body_of, smtp_server

SENDER = "Task API <no-reply@example.com>"
TEXT = "Reset your password: http://127.0.0.1:3000/reset-password?token=abc_123\n"


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SMTP_SERVER", "SMTP_PORT", "SMTP_USERNAME", "SMTP_PASSWORD", "EMAIL_DELIVERY"):
        monkeypatch.delenv(name, raising=False)
    configure(monkeypatch, stage="test", email_from=SENDER)


def emf_counts(output: str) -> list[tuple[int, int]]:
    """(EmailSent, EmailFailed) of every EMF line written."""
    records = [json.loads(line) for line in output.splitlines() if line.startswith('{"_aws"')]
    return [(r["EmailSent"], r["EmailFailed"]) for r in records if "EmailSent" in r]


def test_delivery_follows_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert delivery(get_settings()) == "log"
    configure(monkeypatch, stage="prod")
    assert delivery(get_settings()) == "ses"
    configure(monkeypatch, smtp_server="127.0.0.1")
    assert delivery(get_settings()) == "smtp"
    configure(monkeypatch, email_delivery="log")
    assert delivery(get_settings()) == "log"


def test_the_local_stage_writes_the_message_to_the_log(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with caplog.at_level(logging.INFO, logger="taskapi.mail"):
        assert send_email(to="ada@example.com", subject="Reset", text=TEXT) is True
    (record,) = [r for r in caplog.records if r.name == "taskapi.mail"]
    message = record.getMessage()
    assert "To: ada@example.com" in message
    assert "Subject: Reset" in message
    assert "http://127.0.0.1:3000/reset-password?token=abc_123" in message
    assert emf_counts(capsys.readouterr().out) == [(1, 0)]


def smtp_settings(monkeypatch: pytest.MonkeyPatch, mailbox: Mailbox, **more: str) -> None:
    configure(monkeypatch, smtp_server="127.0.0.1", smtp_port=str(mailbox.port), **more)


def test_smtp_delivers_a_plain_text_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with smtp_server() as mailbox:
        smtp_settings(monkeypatch, mailbox, smtp_starttls="false")
        assert send_email(to="ada@example.com", subject="Réinitialiser", text=TEXT) is True
    (message,) = mailbox.messages
    assert message["From"] == SENDER
    assert message["To"] == "ada@example.com"
    assert message["Subject"] == "Réinitialiser"
    assert message["Message-ID"]
    assert message["Date"]
    assert body_of(message) == TEXT
    assert mailbox.last_token("ada@example.com") == "abc_123"
    assert mailbox.encrypted == [False]
    assert emf_counts(capsys.readouterr().out) == [(1, 0)]


def test_smtp_with_starttls_and_a_login(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with smtp_server(tls_folder=tmp_path, monkeypatch=monkeypatch) as mailbox:
        smtp_settings(monkeypatch, mailbox, smtp_username=USERNAME, smtp_password="mail-password")
        assert send_email(to="bob@example.com", subject="Hello", text=TEXT) is True
    assert [m["To"] for m in mailbox.messages] == ["bob@example.com"]
    assert mailbox.encrypted == [True]
    assert mailbox.logins == [USERNAME]


@pytest.mark.parametrize(
    ("password", "trusted"),
    [("wrong-password", True), ("mail-password", False)],
    ids=["refused-login", "untrusted-certificate"],
)
def test_smtp_refusals_are_counted_not_raised(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    password: str,
    trusted: bool,
) -> None:
    with smtp_server(tls_folder=tmp_path, monkeypatch=monkeypatch) as mailbox:
        if not trusted:
            monkeypatch.delenv("SSL_CERT_FILE")
        smtp_settings(monkeypatch, mailbox, smtp_username=USERNAME, smtp_password=password)
        with caplog.at_level(logging.WARNING, logger="taskapi.mail"):
            assert send_email(to="bob@example.com", subject="Hello", text=TEXT) is False
    assert mailbox.messages == []
    # Only the layer's own line (aiosmtpd logs its side of the failure too).
    (record,) = [r for r in caplog.records if r.name == "taskapi.mail"]
    assert record.getMessage() == "email not sent"
    # The text (a token, in real use) never reaches the log.
    assert "abc_123" not in caplog.text
    assert emf_counts(capsys.readouterr().out) == [(0, 1)]


def test_starttls_is_required_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    with smtp_server() as mailbox:
        smtp_settings(monkeypatch, mailbox)
        assert send_email(to="ada@example.com", subject="Hello", text=TEXT) is False
    assert mailbox.messages == []


def test_an_smtp_server_that_never_answers_costs_the_timeout_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with silent_server() as server:
        configure(
            monkeypatch,
            smtp_server="127.0.0.1",
            smtp_port=str(server.port),
            smtp_timeout_seconds="0.2",
        )
        # Without the timeout smtplib would wait for the greeting forever.
        assert send_email(to="ada@example.com", subject="Hello", text=TEXT) is False
    assert server.accepted == 1


def test_nothing_listening_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    with smtp_server() as mailbox:
        port = mailbox.port
    configure(monkeypatch, smtp_server="127.0.0.1", smtp_port=str(port))
    assert send_email(to="ada@example.com", subject="Hello", text=TEXT) is False


def test_smtp_without_a_server_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, email_delivery="smtp")
    assert send_email(to="ada@example.com", subject="Hello", text=TEXT) is False


@pytest.fixture
def ses(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with mock_aws():
        configure(monkeypatch, stage="prod", jwt_secret_key="k" * 40)
        yield ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]


def test_ses_sends_from_the_verified_sender(ses: Any, capsys: pytest.CaptureFixture[str]) -> None:
    boto3.client("ses", region_name="us-east-1").verify_email_identity(
        EmailAddress="no-reply@example.com"
    )
    assert send_email(to="ada@example.com", subject="Reset", text=TEXT) is True
    (message,) = ses.sent_messages
    assert message.source == SENDER
    assert message.destinations == {"ToAddresses": ["ada@example.com"]}
    assert message.subject == "Reset"
    assert message.body == TEXT
    assert emf_counts(capsys.readouterr().out) == [(1, 0)]


def test_ses_refusing_an_unverified_sender_is_counted(
    ses: Any, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with caplog.at_level(logging.WARNING, logger="taskapi.mail"):
        assert send_email(to="ada@example.com", subject="Reset", text=TEXT) is False
    assert ses.sent_messages == []
    (record,) = [r for r in caplog.records if r.name == "taskapi.mail"]
    assert "MessageRejected" in record.__dict__["error"]
    assert emf_counts(capsys.readouterr().out) == [(0, 1)]


def test_links_start_with_public_url_or_the_local_server(monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_settings().link_base == "http://127.0.0.1:3000"
    configure(monkeypatch, public_url="https://app.example.com/")
    assert get_settings().link_base == "https://app.example.com"
    # A deployed stage without PUBLIC_URL has no address to link to: the token alone.
    configure(monkeypatch, public_url="", stage="prod")
    assert get_settings().link_base == ""
