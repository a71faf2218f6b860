"""Settings: environment variables, and secrets from Secrets Manager under moto."""

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from pydantic import ValidationError

from taskapi.settings import (
    LOCAL_DATABASE_URL,
    ConfigurationError,
    get_database_url,
    get_jwt_keys,
    get_settings,
    normalize_database_url,
)
from tests.support.environment import configure
from tests.support.functions import load_module
from tests.support.silent_server import silent_server


@pytest.fixture
def secretsmanager() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")


def test_contract_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "JWT_SECRET_KEY", "STAGE", "BCRYPT_ROUNDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir("/")  # no .env file
    configure(monkeypatch)
    settings = get_settings()
    assert settings.jwt_algorithm == "HS256"
    assert settings.access_token_expire_minutes == 15
    assert settings.refresh_token_expire_days == 7
    assert settings.bcrypt_rounds == 12
    assert settings.login_max_attempts == 5
    assert settings.login_lockout_minutes == 15
    assert settings.login_max_attempts_per_email == 100
    assert settings.secret_cache_seconds == 300
    assert (settings.database_pool_size, settings.database_max_overflow) == (1, 0)
    # Local development alone falls back to a SQLite file.
    assert get_database_url() == LOCAL_DATABASE_URL


def test_cors_origins_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, cors_origins="https://a.example, https://b.example,")
    assert get_settings().cors_origin_list == ["https://a.example", "https://b.example"]


def test_log_level_is_one_of_the_templates_names(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, log_level="warning")
    assert get_settings().log_level == "WARNING"
    configure(monkeypatch, log_level="LOUD")
    with pytest.raises(ValidationError, match="log_level"):
        get_settings()


# Settings with an upper bound: the largest value taken, and one just past it.
UPPER_BOUNDS = {
    # A run ends before the next minute's run starts.
    "reminders_time_budget_seconds": ("59.9", "60"),
    # A reset token is as good as the password while it lives.
    "password_reset_minutes": ("1440", "1441"),
    # The floor leaves the auth function's 10 s for the work itself.
    "password_reset_answer_seconds": ("5", "5.5"),
}


@pytest.mark.parametrize("setting", UPPER_BOUNDS)
def test_bounded_settings_refuse_a_value_past_their_limit(
    monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    largest, too_large = UPPER_BOUNDS[setting]
    configure(monkeypatch, **{setting: largest})
    assert getattr(get_settings(), setting) == float(largest)
    configure(monkeypatch, **{setting: too_large})
    with pytest.raises(ValidationError, match=setting):
        get_settings()


# What `GenerateSecretString` writes: long enough for HS256.
GENERATED_KEY = "generated-jwt-key-" + "g" * 32


def test_secrets_are_read_once_and_cached(
    secretsmanager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The JSON that RDS writes for a managed secret, and a plain generated string.
    database = secretsmanager.create_secret(
        Name="taskapi/db",
        SecretString=json.dumps(
            {
                "engine": "postgres",
                "username": "app",
                "password": "p@ss/word",
                "host": "db.internal",
                "port": 5432,
                "dbname": "tasks",
            }
        ),
    )
    jwt = secretsmanager.create_secret(Name="taskapi/jwt", SecretString=GENERATED_KEY)
    configure(
        monkeypatch,
        stage="prod",
        database_secret_arn=database["ARN"],
        jwt_secret_arn=jwt["ARN"],
    )
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("JWT_SECRET_KEY", raising=False)

    assert get_database_url() == "postgresql+psycopg2://app:p%40ss%2Fword@db.internal:5432/tasks"
    assert get_jwt_keys().current.key == GENERATED_KEY

    # Cached for SECRET_CACHE_SECONDS (300): a rotation is picked up after that
    # (tests/test_key_rotation.py), not on every call.
    secretsmanager.put_secret_value(SecretId=jwt["ARN"], SecretString="rotated-" + GENERATED_KEY)
    assert get_jwt_keys().current.key == GENERATED_KEY


def test_secret_may_hold_a_plain_url(secretsmanager: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = secretsmanager.create_secret(Name="url", SecretString="sqlite:///tmp/x.db")
    configure(monkeypatch, stage="dev", database_secret_arn=secret["ARN"])
    assert get_database_url() == "sqlite:///tmp/x.db"


def test_the_templates_empty_database_url_reads_as_unset(
    secretsmanager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """template.yaml declares DATABASE_URL="" for every function (so that `sam local
    --env-vars` can set it): a deployed function still reads its secret, and without one
    a deployed stage still fails clearly."""
    secret = secretsmanager.create_secret(Name="url", SecretString="sqlite:///tmp/x.db")
    configure(monkeypatch, stage="dev", database_url="", database_secret_arn=secret["ARN"])
    assert get_database_url() == "sqlite:///tmp/x.db"
    monkeypatch.chdir("/")  # no developer's .env
    configure(monkeypatch, stage="dev", database_url="", database_secret_arn="")
    with pytest.raises(ConfigurationError, match="needs DATABASE_SECRET_ARN or DATABASE_URL"):
        get_database_url()
    configure(monkeypatch, stage="local", database_url="", database_secret_arn="")
    assert get_database_url() == LOCAL_DATABASE_URL


def test_missing_secret_is_a_clear_error(
    secretsmanager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:taskapi/absent-AbCdEf"
    configure(monkeypatch, stage="prod", database_secret_arn=arn)
    with pytest.raises(ConfigurationError, match=r"Secret .*taskapi/absent.* does not exist"):
        get_database_url()


@pytest.mark.parametrize(
    ("variable", "resolve", "message"),
    [
        ("DATABASE_URL", get_database_url, "needs DATABASE_SECRET_ARN or DATABASE_URL"),
        ("JWT_SECRET_KEY", get_jwt_keys, "needs JWT_SECRET_ARN or JWT_SECRET_KEY"),
    ],
)
def test_no_local_defaults_outside_local_development(
    monkeypatch: pytest.MonkeyPatch, variable: str, resolve: Any, message: str
) -> None:
    monkeypatch.chdir("/")
    monkeypatch.delenv(variable, raising=False)
    configure(monkeypatch, stage="prod")
    with pytest.raises(ConfigurationError, match=message):
        resolve()


def test_a_function_does_not_start_without_its_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from taskapi.factory import create_app

    monkeypatch.chdir("/")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    configure(monkeypatch, stage="prod", jwt_secret_key="x")
    with pytest.raises(ConfigurationError, match="DATABASE_SECRET_ARN or DATABASE_URL"):
        create_app(title="needs a database")


SILENT_SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:taskapi/db-AbCdEf"


def cold_start_against_a_silent_secrets_manager(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[ConfigurationError, str, int, float]:
    """A Secrets Manager endpoint that accepts and never answers (a function in a VPC
    without an interface endpoint or NAT): the tasks function's cold start, and the error
    that stops it, the endpoint's URL, the connections it accepted and the seconds it took."""
    with silent_server() as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", endpoint.url)
        monkeypatch.delenv("DATABASE_URL", raising=False)
        configure(
            monkeypatch, stage="prod", database_secret_arn=SILENT_SECRET_ARN, jwt_secret_key="x"
        )
        started = time.monotonic()
        with pytest.raises(ConfigurationError) as raised:
            # A module name of its own: a cold start, even where another test loaded it.
            load_module("functions/tasks/app.py", "tasks_app_cold_start")
        elapsed = time.monotonic() - started
        return raised.value, endpoint.url, endpoint.accepted, elapsed


def test_an_unreachable_secrets_manager_fails_the_cold_start_with_what_to_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The start fails after bounded attempts, each under the client's timeouts (checked
    below), and says which secret and what to check."""
    from taskapi.aws import MAX_ATTEMPTS

    error, url, accepted, _ = cold_start_against_a_silent_secrets_manager(monkeypatch)
    message = str(error)
    assert SILENT_SECRET_ARN in message
    assert "VPC" in message
    assert "NAT" in message
    assert url in message
    # Bounded retries: the first attempt and one retry, no more.
    assert accepted == MAX_ATTEMPTS


@pytest.mark.perf
def test_an_unreachable_secrets_manager_fails_the_cold_start_within_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    *_, elapsed = cold_start_against_a_silent_secrets_manager(monkeypatch)
    assert elapsed < 5, f"the cold start took {elapsed:.1f} s to fail"


def test_the_secrets_client_is_built_once_per_container(
    secretsmanager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskapi.aws import CONNECT_TIMEOUT, READ_TIMEOUT, aws_client

    database = secretsmanager.create_secret(Name="once/db", SecretString="sqlite:///x.db")
    jwt = secretsmanager.create_secret(Name="once/jwt", SecretString=GENERATED_KEY)
    configure(monkeypatch, stage="prod", database_secret_arn=database["ARN"])
    configure(monkeypatch, jwt_secret_arn=jwt["ARN"])
    client = aws_client("secretsmanager")
    assert (get_database_url(), get_jwt_keys().current.key) == ("sqlite:///x.db", GENERATED_KEY)
    assert aws_client("secretsmanager") is client
    config = client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (CONNECT_TIMEOUT, READ_TIMEOUT)
    assert config.retries["total_max_attempts"] == 2


@pytest.mark.parametrize(
    "written",
    [
        "postgresql://app:s%40cret@db.internal:5432/tasks",
        "postgres://app:s%40cret@db.internal:5432/tasks",
        "postgresql+psycopg2://app:s%40cret@db.internal:5432/tasks",
    ],
)
def test_every_postgresql_url_means_the_shipped_driver(
    monkeypatch: pytest.MonkeyPatch, written: str
) -> None:
    configure(monkeypatch, stage="dev", database_url=written)
    assert get_database_url() == "postgresql+psycopg2://app:s%40cret@db.internal:5432/tasks"
    assert normalize_database_url(written) == get_database_url()


def test_sqlite_urls_are_kept_as_written() -> None:
    for url in ("sqlite:///./taskapi.db", "sqlite://", "sqlite+pysqlite:////tmp/x.db"):
        assert normalize_database_url(url) == url


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("mysql://app:pw@db.internal/tasks", "driver 'mysql' is not shipped"),
        ("postgresql+asyncpg://app@db.internal/tasks", "driver 'postgresql+asyncpg'"),
        ("postgresql+psycopg://app@db.internal/tasks", "driver 'postgresql+psycopg'"),
        ("db.internal:5432/tasks", "cannot be parsed"),
        ("postgresql://app:hunter2@db.internal:port/tasks", "cannot be parsed"),
    ],
)
def test_an_unusable_database_url_is_a_one_line_configuration_error(
    monkeypatch: pytest.MonkeyPatch, written: str, problem: str
) -> None:
    configure(monkeypatch, stage="dev", database_url=written)
    with pytest.raises(ConfigurationError) as raised:
        get_database_url()
    message = str(raised.value)
    assert problem in message
    assert "\n" not in message
    # It names the accepted forms, and never echoes a password.
    assert "postgresql://user:password@host:5432/dbname" in message
    assert "postgres://" in message
    assert "sqlite:///" in message
    assert "hunter2" not in message


def test_a_url_in_the_database_secret_is_normalised_too(
    secretsmanager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = secretsmanager.create_secret(Name="heroku", SecretString="postgres://a:b@h:5432/d")
    configure(monkeypatch, stage="dev", database_secret_arn=secret["ARN"])
    assert get_database_url() == "postgresql+psycopg2://a:b@h:5432/d"


@pytest.mark.parametrize(
    "secret",
    [
        "k",
        "x" * 31,
        json.dumps(
            {
                "current": {"kid": "new", "key": "y" * 32},
                "previous": [{"kid": "old", "key": "short"}],
            }
        ),
    ],
)
def test_a_short_jwt_key_outside_local_development_is_a_one_line_configuration_error(
    monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    configure(monkeypatch, stage="prod", jwt_secret_key=secret)
    with pytest.raises(ConfigurationError) as raised:
        get_jwt_keys()
    message = str(raised.value)
    assert "needs at least 32" in message
    assert "JWT_SECRET_KEY" in message
    assert "\n" not in message
    # It never echoes the key.
    assert not any(secret in message for secret in ("kk", "x" * 31, "zz"))


def test_a_short_jwt_key_is_allowed_in_local_development(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, stage="test", jwt_secret_key="k")
    assert get_jwt_keys().current.key == "k"
