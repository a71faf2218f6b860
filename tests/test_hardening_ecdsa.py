"""python-jose depends on `ecdsa` (CVE-2024-23342, GHSA-wj6h-64fc-37mp: a timing side
channel, no fix upstream), but with the `cryptography` backend installed it never imports
it. Proven in a fresh interpreter that does what a container does: import the layer, sign
and verify tokens, and serve auth requests through the real handler."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, create_database, migrate

SCRIPT = """
import importlib.util, json, sys
sys.path[:0] = [{shared!r}, {root!r}, {auth!r}]

from taskapi.tokens import decode_token, issue_token_pair
import uuid
pair = issue_token_pair(user_id=uuid.uuid4(), session_id=uuid.uuid4())
decode_token(pair.access.token, expected_type="access")
decode_token(pair.refresh.token, expected_type="refresh")

from localapi.events import LambdaContext, http_event
spec = importlib.util.spec_from_file_location("auth_app", {auth!r} + "/app.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)

def call(method, path, body=None, token=None):
    headers = {{"content-type": "application/json"}}
    if token:
        headers["authorization"] = "Bearer " + token
    event = http_event(method, path, headers=headers, body=json.dumps(body) if body else None)
    result = module.handler(event, LambdaContext())
    return result["statusCode"], json.loads(result["body"])

credentials = {{"email": "ada@example.com", "name": "Ada", "password": "correct horse battery"}}
status, body = call("POST", "/api/auth/signup", credentials)
assert status == 201, body
status, body = call("POST", "/api/auth/refresh", {{"refresh_token": body["refresh_token"]}})
assert status == 200, body
status, body = call("GET", "/api/auth/me", token=body["access_token"])
assert status == 200, body
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("ecdsa", "jose", "rsa"))))
"""


def test_signing_verifying_and_serving_auth_never_import_ecdsa(tmp_path: Path) -> None:
    # Which modules load does not depend on the database: one SQLite file is enough.
    db = create_database("sqlite", tmp_path)
    migrate(db.url)
    script = SCRIPT.format(
        shared=str(ROOT / "shared"), root=str(ROOT), auth=str(ROOT / "functions" / "auth")
    )
    env = {
        **os.environ,
        "STAGE": "test",
        "DATABASE_URL": db.url,
        "JWT_SECRET_KEY": "test-secret-key-that-is-long-enough-for-hs256",
        "BCRYPT_ROUNDS": "4",
    }
    completed = subprocess.run(  # noqa: S603 (our own interpreter and script)
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr
    modules = json.loads(completed.stdout.strip().splitlines()[-1])
    assert "jose.jwt" in modules  # the check is real: the JWT code did run
    assert "jose.backends.cryptography_backend" in modules
    assert not [m for m in modules if m.split(".")[0] == "ecdsa"], modules
    assert "jose.backends.ecdsa_backend" not in modules
    db.engine.dispose()
