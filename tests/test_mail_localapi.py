"""`make run` with no mail settings: the password reset mail, link and all, is written to
the local server's log, where a developer (and this test) reads it, over real HTTP."""

import json
import re
import time
from pathlib import Path

import pytest

from tests.support.auth import NEW_PASSWORD
from tests.support.database import Database
from tests.support.functions import ROOT
from tests.support.local_server import local_server, server_environment, signup_over_http

LINK = re.compile(r"http://127\.0\.0\.1:3000/reset-password\?token=([A-Za-z0-9_-]+)")


def mails_in(log: Path) -> list[str]:
    """The messages of the log's JSON lines that carry a mail."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"email_delivery"' in line:
            found.append(json.loads(line)["message"])
    return found


def test_the_reset_mail_is_in_the_server_log(
    migrated_database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrated_database.truncate()
    template = tmp_path / "template.yaml"
    template.symlink_to(ROOT / "template.yaml")
    environment = server_environment(migrated_database) | {
        # What `make run` has: the INFO level, and no mail settings at all.
        "LOG_LEVEL": "INFO",
        "EMAIL_DELIVERY": None,
        "SMTP_SERVER": None,
        "PUBLIC_URL": None,
        "PASSWORD_RESET_ANSWER_SECONDS": "0",
    }
    with local_server(template.resolve(), env=environment, cwd=tmp_path) as (api, log):
        signup_over_http(api, "ada@example.com")
        response = api.post("/api/auth/password-reset", json={"email": "ada@example.com"})
        assert response.status_code == 202, response.text

        deadline = time.monotonic() + 15
        while not mails_in(log) and time.monotonic() < deadline:
            time.sleep(0.1)
        (mail,) = mails_in(log)
        assert "To: ada@example.com" in mail
        assert "Subject: Reset your Task API password" in mail
        match = LINK.search(mail)
        assert match, mail
        confirmed = api.post(
            "/api/auth/password-reset/confirm",
            json={"token": match.group(1), "new_password": NEW_PASSWORD},
        )
        assert confirmed.status_code == 200, confirmed.text
        login = api.post(
            "/api/auth/login", json={"email": "ada@example.com", "password": NEW_PASSWORD}
        )
        assert login.status_code == 200, login.text
