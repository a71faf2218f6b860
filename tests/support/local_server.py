"""`python -m localapi` serving a template on a free port, for the tests that go through
real HTTP, and what they send it."""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from localapi.server import free_port, stop_process
from tests.support.auth import PASSWORD
from tests.support.database import Database
from tests.support.functions import ROOT
from tests.support.keys import JWT_KEY


def wait_until_serving(
    process: "subprocess.Popen[bytes]", url: str, log: Path, *, name: str, pause: float = 0.1
) -> None:
    """Until `url` answers at all; the test fails with the process's log if it exits first
    or does not answer within 90 s. Every function's first worker imports at start-up, all
    at once: on a busy machine (tests in parallel) that takes a while."""
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            pytest.fail(f"{name} exited with {process.returncode}:\n{log.read_text()}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                pytest.fail(f"{name} did not start:\n{log.read_text()}")
            time.sleep(pause)


@contextmanager
def local_server(
    template: Path,
    *,
    env: dict[str, str | None] | None = None,
    cwd: Path | None = None,
    options: tuple[str, ...] = (),
) -> Iterator[tuple[httpx.Client, Path]]:
    """`python -m localapi` on a free port; yields a client for it and its log file.
    `env` adds variables to this process's environment (None removes one). The process
    is always stopped, and its log shown when it fails to start."""
    port = free_port()
    cwd = cwd or template.parent
    log = cwd / f"server-{port}.log"
    environment = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'shared'}"}
    for name, value in (env or {}).items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    command = [sys.executable, "-m", "localapi", "--template", str(template), "--port", str(port)]
    command += options
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            command, cwd=cwd, env=environment, stdout=output, stderr=output
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_serving(process, f"{base_url}/", log, name="The server")
        with httpx.Client(base_url=base_url, timeout=15) as client:
            yield client, log
    finally:
        stop_process(process)


def server_environment(database: Database) -> dict[str, str | None]:
    return {
        "STAGE": "local",
        "DATABASE_URL": database.url,
        "JWT_SECRET_KEY": JWT_KEY,
        "BCRYPT_ROUNDS": "4",
        "CORS_ORIGINS": "http://localhost:5173",
        "LOG_LEVEL": "WARNING",
        "DATABASE_SECRET_ARN": None,
        "JWT_SECRET_ARN": None,
    }


def signup_over_http(api: httpx.Client, email: str) -> dict[str, Any]:
    response = api.post(
        "/api/auth/signup", json={"email": email, "name": "Local", "password": PASSWORD}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
