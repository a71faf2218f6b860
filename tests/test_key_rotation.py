"""Rotation without logouts, under moto: JWT keys move through a key ring (current and
previous, tokens carry a `kid`) and reach a warm container after `SECRET_CACHE_SECONDS`;
a database secret rotated to new credentials is picked up by the first connection the
database refuses."""

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import sqlalchemy as sa
from moto import mock_aws
from sqlalchemy.engine import make_url

from taskapi.settings import get_jwt_keys
from tests.support.auth import login, signup, tokens
from tests.support.client import Client
from tests.support.database import Database
from tests.support.environment import configure
from tests.support.keys import forge, kid_of, payload_of, ring

OLD_KEY = "old-signing-key-" + "o" * 40
NEW_KEY = "new-signing-key-" + "n" * 40
ME = "/api/auth/me"
CACHE_SECONDS = 1


@pytest.fixture
def secretsmanager() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")


def wait_for_the_cache() -> None:
    time.sleep(CACHE_SECONDS + 0.1)


@pytest.fixture
def jwt_secret(db: Database, secretsmanager: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    arn: str = secretsmanager.create_secret(Name="taskapi/jwt", SecretString=OLD_KEY)["ARN"]
    monkeypatch.delenv("JWT_SECRET_KEY", raising=False)
    configure(monkeypatch, stage="prod", jwt_secret_arn=arn, secret_cache_seconds="1")
    return arn


def test_rotating_the_jwt_key_logs_nobody_out(jwt_secret: str, secretsmanager: Any) -> None:
    client = Client("auth")  # one warm container for the whole test
    access, refresh = tokens(signup(client))
    assert kid_of(access) == "default"
    # A token from before tokens had a `kid`: the default key signed it.
    legacy = forge(payload_of(access), secret=OLD_KEY)
    assert kid_of(legacy) is None

    # Step 1: a new current key, the old one kept as previous.
    secretsmanager.put_secret_value(
        SecretId=jwt_secret, SecretString=ring(("2026-12", NEW_KEY), ("default", OLD_KEY))
    )
    wait_for_the_cache()
    assert get_jwt_keys().current.kid == "2026-12"
    for token in (access, legacy):
        assert client.get(ME, token=token).status == 200
    new_access, new_refresh = tokens(login(client))
    assert kid_of(new_access) == kid_of(new_refresh) == "2026-12"
    assert client.get(ME, token=new_access).status == 200
    # The old session's refresh token still refreshes, into tokens of the new key.
    refreshed = client.post("/api/auth/refresh", json_body={"refresh_token": refresh})
    assert refreshed.status == 200, refreshed.body
    refreshed_access, _ = tokens(refreshed)
    assert kid_of(refreshed_access) == "2026-12"

    # Step 2, once every old token has expired: the old key leaves the ring.
    secretsmanager.put_secret_value(SecretId=jwt_secret, SecretString=ring(("2026-12", NEW_KEY)))
    wait_for_the_cache()
    for token in (access, legacy):
        assert client.get(ME, token=token).status == 401
    assert client.get(ME, token=refreshed_access).status == 200
    assert client.get(ME, token=new_access).status == 200


def test_a_kid_outside_the_ring_is_refused(jwt_secret: str) -> None:
    client = Client("auth")
    access, _ = tokens(signup(client))
    claims = payload_of(access)
    for header in ({"alg": "HS256", "kid": "unknown"}, {"alg": "HS256", "kid": 7}):
        assert client.get(ME, token=forge(claims, secret=OLD_KEY, header=header)).status == 401
    assert (
        client.get(ME, token=forge(claims, secret=OLD_KEY, header={"alg": "HS256"})).status == 200
    )


def test_a_failed_re_read_keeps_the_keys_in_use(
    jwt_secret: str, secretsmanager: Any, caplog: pytest.LogCaptureFixture
) -> None:
    assert get_jwt_keys().current.key == OLD_KEY
    secretsmanager.delete_secret(SecretId=jwt_secret, ForceDeleteWithoutRecovery=True)
    wait_for_the_cache()
    assert get_jwt_keys().current.key == OLD_KEY
    assert "could not read a secret again" in caplog.text


@pytest.mark.parametrize(
    "secret",
    [
        '{"current": {"kid": "a"}}',
        '{"current": {"kid": "a", "key": "k"}, "previous": [{"kid": "a", "key": "j"}]}',
        '{"current": {"kid": "a", "key": "k"}, "previous": {"kid": "b", "key": "j"}}',
        '{"keys": []}',
        "{not json",
    ],
)
def test_a_malformed_key_ring_is_a_clear_start_up_error(
    secret: str, secretsmanager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskapi.settings import ConfigurationError

    arn = secretsmanager.create_secret(Name="taskapi/bad", SecretString=secret)["ARN"]
    monkeypatch.delenv("JWT_SECRET_KEY", raising=False)
    configure(monkeypatch, stage="prod", jwt_secret_arn=arn)
    with pytest.raises(ConfigurationError, match="JWT secret"):
        get_jwt_keys()


# ---------------------------------------------------------------------------------------
# The database password


def _admin(db: Database, sql: str) -> None:
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text(sql))


def _login_role(db: Database, name: str) -> None:
    _admin(db, f'CREATE ROLE "{name}" LOGIN')
    _admin(db, f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{name}"')
    _admin(db, f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{name}"')


# The password is the server's: behind PgBouncer the pooler logs in with its own.
@pytest.mark.direct_only
def test_a_rotated_database_password_is_picked_up_by_a_warm_container(
    db: Database, secretsmanager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test server trusts local logins, so a rotation is played as RDS's
    # alternating-users rotation does it: the secret moves to a second user, and the
    # first may no longer log in. Sessions already open are left alone, as in RDS.
    suffix = uuid.uuid4().hex[:8]
    first, second = f"rot_a_{suffix}", f"rot_b_{suffix}"
    for role in (first, second):
        _login_role(db, role)
    url = make_url(db.url)
    secret_of = {
        role: json.dumps(
            {
                "username": role,
                "password": f"pw-{role}",
                "host": url.host,
                "port": url.port or 5432,
                "dbname": url.database,
            }
        )
        for role in (first, second)
    }
    arn = secretsmanager.create_secret(Name="taskapi/db", SecretString=secret_of[first])["ARN"]
    monkeypatch.delenv("DATABASE_URL", raising=False)
    # A connection per request (as behind RDS Proxy), so each request logs in afresh.
    configure(
        monkeypatch,
        stage="prod",
        database_secret_arn=arn,
        database_null_pool="true",
        secret_cache_seconds="1",
    )
    try:
        client = Client("auth")
        access, _ = tokens(signup(client))
        assert client.get(ME, token=access).status == 200

        secretsmanager.put_secret_value(SecretId=arn, SecretString=secret_of[second])
        _admin(db, f'ALTER ROLE "{first}" NOLOGIN')
        time.sleep(CACHE_SECONDS + 0.1)  # a forced re-read waits at most this long
        response = client.get(ME, token=access)
        assert response.status == 200, response.body
        assert client.get(ME, token=access).status == 200
        users = {row[0] for row in db.rows("SELECT usename FROM pg_stat_activity")}
        assert first not in users
    finally:
        from tests.support.environment import reset_caches

        reset_caches()
        for role in (first, second):
            _admin(db, f'DROP OWNED BY "{role}"')
            _admin(db, f'DROP ROLE "{role}"')


@pytest.mark.postgres_only
def test_a_database_that_refuses_with_an_unchanged_secret_is_a_503(
    db: Database, secretsmanager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = make_url(db.url).set(username=f"nobody_{uuid.uuid4().hex[:8]}")
    arn = secretsmanager.create_secret(
        Name="taskapi/db", SecretString=url.render_as_string(hide_password=False)
    )["ARN"]
    monkeypatch.delenv("DATABASE_URL", raising=False)
    configure(monkeypatch, stage="prod", database_secret_arn=arn, secret_cache_seconds="1")
    response = signup(Client("auth"))
    assert response.status == 503
    assert response.headers["retry-after"]
