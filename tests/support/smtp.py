"""A real SMTP server in the test process (aiosmtpd on 127.0.0.1, a free port): it
receives what `taskapi.mail` sends and keeps each message, parsed, for the test to read.
With `tls` it offers STARTTLS with a self-signed certificate (written by `openssl`) and
takes a login; `trust` makes the client's default context accept that certificate."""

import contextlib
import email
import email.policy
import re
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

USERNAME = "mailer"
PASSWORD = "mail-password"
TOKEN_PATTERN = re.compile(r"token=([A-Za-z0-9_-]+)")


@dataclass
class Mailbox:
    """What the server received, in order."""

    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    encrypted: list[bool] = field(default_factory=list)

    def to(self, address: str) -> list[EmailMessage]:
        return [message for message in self.messages if message["To"] == address]

    def last_token(self, address: str) -> str:
        """The token in the link of the last message to `address`."""
        body = body_of(self.to(address)[-1])
        match = TOKEN_PATTERN.search(body)
        assert match, body
        return match.group(1)


def body_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    # SMTP carries CRLF line ends; the text was written with LF.
    return str(part.get_content()).replace("\r\n", "\n")


class _Handler:
    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 (aiosmtpd's name)
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.mailbox.messages.append(message)
        self.mailbox.encrypted.append(session.ssl is not None)
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key."""
    cert, key = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    subprocess.run(  # noqa: S603
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",  # noqa: S607
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@contextlib.contextmanager
def smtp_server(
    *, tls_folder: Path | None = None, monkeypatch: pytest.MonkeyPatch | None = None
) -> Iterator[Mailbox]:
    """The server, running until the block ends. With `tls_folder` it requires STARTTLS and
    a login (USERNAME, PASSWORD), and `monkeypatch` points SSL_CERT_FILE at its certificate."""
    mailbox = Mailbox(port=_free_port())
    options: dict[str, Any] = {}
    if tls_folder is not None:
        cert, key = self_signed_certificate(tls_folder)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)

        def authenticate(
            server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
        ) -> AuthResult:
            ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
                USERNAME.encode(),
                PASSWORD.encode(),
            )
            if ok:
                mailbox.logins.append(USERNAME)
            return AuthResult(success=ok)

        options = {
            "tls_context": context,
            "require_starttls": True,
            "authenticator": authenticate,
            "auth_required": True,
        }
        if monkeypatch is not None:
            monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    controller = Controller(_Handler(mailbox), hostname="127.0.0.1", port=mailbox.port, **options)
    controller.start()
    try:
        yield mailbox
    finally:
        controller.stop()
