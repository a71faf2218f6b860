"""The dummy hash that unknown emails are checked against is made while the auth
container starts, so a container's first unknown-email login costs what a wrong password
costs (the review measured about twice as much when it was made lazily).

Run in a fresh interpreter, as a new container: import the auth function, sign up, then
time the first unknown-email login against a wrong-password login. A ratio of the two in
the same process, at a bcrypt cost where bcrypt dominates the request, not a time."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.database import create_database, migrate
from tests.support.functions import ROOT
from tests.support.keys import JWT_KEY

SCRIPT = """
import importlib.util, json, sys, time
sys.path[:0] = [{shared!r}, {root!r}, {auth!r}]
import bcrypt

hashes = []
real_hashpw = bcrypt.hashpw
bcrypt.hashpw = lambda password, salt: hashes.append(1) or real_hashpw(password, salt)

from localapi.events import LambdaContext, http_event
spec = importlib.util.spec_from_file_location("auth_app", {auth!r} + "/app.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
hashes_at_start = len(hashes)

def call(path, body):
    event = http_event("POST", path, headers={{"content-type": "application/json"}},
                       body=json.dumps(body))
    started = time.perf_counter()
    result = module.handler(event, LambdaContext())
    return result["statusCode"], time.perf_counter() - started

status, _ = call("/api/auth/signup",
                 {{"email": "ada@example.com", "name": "Ada", "password": "correct horse"}})
assert status == 201, status
hashes_before_logins = len(hashes)
unknown_status, unknown = call("/api/auth/login",
                               {{"email": "nobody@example.com", "password": "wrong password"}})
wrong_status, wrong = call("/api/auth/login",
                           {{"email": "ada@example.com", "password": "wrong password"}})
print(json.dumps({{
    "hashes_at_start": hashes_at_start,
    "hashes_during_logins": len(hashes) - hashes_before_logins,
    "statuses": [unknown_status, wrong_status],
    "unknown": unknown,
    "wrong": wrong,
}}))
"""


def first_logins(tmp_path: Path) -> dict[str, Any]:
    """One new container's first unknown-email login and a wrong-password login after it."""
    tmp_path.mkdir()
    db = create_database("sqlite", tmp_path)
    migrate(db.url)
    script = SCRIPT.format(
        shared=str(ROOT / "shared"), root=str(ROOT), auth=str(ROOT / "functions" / "auth")
    )
    env = {
        **os.environ,
        "STAGE": "test",
        "DATABASE_URL": db.url,
        "JWT_SECRET_KEY": JWT_KEY,
        # About 60 ms a check: bcrypt, not the request around it, sets the time.
        "BCRYPT_ROUNDS": "10",
    }
    completed = subprocess.run(  # noqa: S603 (our own interpreter and script)
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    db.engine.dispose()
    assert completed.returncode == 0, completed.stderr[-3000:]
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def test_the_dummy_hash_is_made_while_the_container_starts(tmp_path: Path) -> None:
    result = first_logins(tmp_path / "container")
    assert result["statuses"] == [401, 401]
    # The dummy hash exists before any request; no login computes a hash.
    assert result["hashes_at_start"] == 1
    assert result["hashes_during_logins"] == 0


# A lazily made dummy hash doubles every first unknown-email login; one pair of timings on
# a machine busy with other tests can also come out far apart. So up to three containers
# are tried: the ratio must come out near 1 in one of them.
TRIALS = 3


@pytest.mark.perf
def test_the_first_unknown_email_login_costs_what_a_wrong_password_costs(tmp_path: Path) -> None:
    ratios = []
    for trial in range(TRIALS):
        result = first_logins(tmp_path / str(trial))
        assert result["statuses"] == [401, 401]
        # Lazily made, the first unknown-email login took about 2x; now about 1x.
        ratios.append(result["unknown"] / result["wrong"])
        print(f"first unknown-email login / wrong password: {ratios[-1]:.2f}")
        if ratios[-1] < 1.5:
            return
    raise AssertionError(f"the first unknown-email login cost more in every trial: {ratios}")
