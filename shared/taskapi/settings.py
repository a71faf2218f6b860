"""Configuration, read from the environment once per container.

On AWS the database URL and the JWT key come from Secrets Manager (`DATABASE_SECRET_ARN`,
`JWT_SECRET_ARN`); each is fetched once, when first needed, and cached for the life of
the container. Functions that need them resolve them while the container starts (see
`taskapi.factory`), so a missing secret stops the container instead of failing requests.
"""

import functools
import json
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCAL_STAGES = frozenset({"local", "test"})
LOCAL_DATABASE_URL = "sqlite:///./taskapi.db"
# The drivers the layer ships: every way of writing a PostgreSQL URL means psycopg2
# (SQLAlchemy 2.1 reads a bare `postgresql://` as psycopg 3, which is not shipped).
_DATABASE_DRIVERS = {
    "postgresql": "postgresql+psycopg2",
    "postgres": "postgresql+psycopg2",
    "postgresql+psycopg2": "postgresql+psycopg2",
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite+pysqlite",
}
ACCEPTED_DATABASE_URLS = (
    "postgresql://user:password@host:5432/dbname (or postgres://, postgresql+psycopg2://)"
    " or sqlite:///path/to/file.db"
)
# Good enough for a laptop; any other stage must supply a real key.
LOCAL_JWT_SECRET_KEY = "local-development-only-not-a-secret"  # noqa: S105


class ConfigurationError(RuntimeError):
    """A required setting or secret is missing or unusable: the container must not start serving."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # `local` and `test` get development defaults; every other stage must be configured.
    stage: str = "local"
    database_url: str | None = None
    database_secret_arn: str | None = None
    jwt_secret_key: str | None = Field(default=None, repr=False)
    jwt_secret_arn: str | None = None
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    access_token_expire_minutes: int = Field(default=15, ge=1)
    refresh_token_expire_days: int = Field(default=7, ge=1)
    cors_origins: str = ""
    sql_echo: bool = False
    database_pool_size: int = Field(default=1, ge=1)
    database_max_overflow: int = Field(default=0, ge=0)
    database_pool_timeout: float = Field(default=10.0, gt=0)
    # Seconds to wait for a TCP connection before answering 503, well inside any Lambda timeout.
    database_connect_timeout: int = Field(default=3, ge=1)
    # RDS Proxy pools connections itself; a client-side pool on top only pins them.
    database_null_pool: bool = False
    bcrypt_rounds: int = Field(default=12, ge=4, le=31)
    login_max_attempts: int = Field(default=5, ge=1)
    login_lockout_minutes: int = Field(default=15, ge=1)
    log_level: str = "INFO"

    @property
    def is_local(self) -> bool:
        return self.stage in LOCAL_STAGES

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]


def _read_secret(arn: str) -> str:
    # boto3 is imported here so that containers without secrets never pay for it.
    import boto3

    client = boto3.client("secretsmanager")
    try:
        response = client.get_secret_value(SecretId=arn)
    except client.exceptions.ResourceNotFoundException as exc:
        raise ConfigurationError(f"Secret {arn} does not exist") from exc
    secret = response.get("SecretString")
    if not secret:
        raise ConfigurationError(f"Secret {arn} has no SecretString")
    return str(secret)


def normalize_database_url(url: str) -> str:
    """The URL with its driver spelled as the layer ships it; ConfigurationError otherwise.

    Every reader of the database URL goes through here: the functions, Alembic, the
    migrate function and the tests' TEST_DATABASE_URL.
    """
    # Imported here: the health function's `GET /health` does not load SQLAlchemy.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    text = url.strip()
    try:
        scheme = make_url(text).drivername
    except (ArgumentError, ValueError):
        # The URL itself is left out of the message: it may hold a password.
        raise ConfigurationError(
            f"The database URL cannot be parsed; write it as {ACCEPTED_DATABASE_URLS}"
        ) from None
    driver = _DATABASE_DRIVERS.get(scheme)
    if driver is None:
        raise ConfigurationError(
            f"The database URL's driver {scheme!r} is not shipped; write it as"
            f" {ACCEPTED_DATABASE_URLS}"
        )
    return driver + text[len(scheme) :]


def database_url_from_secret(secret: str) -> str:
    """Accept a plain URL, `{"url": ...}`, or the JSON that RDS writes for its secrets."""
    text = secret.strip()
    if not text.startswith("{"):
        return text
    data: dict[str, Any] = json.loads(text)
    if "url" in data:
        return str(data["url"])
    from sqlalchemy.engine import URL

    try:
        url = URL.create(
            "postgresql+psycopg2",
            username=data["username"],
            password=data["password"],
            host=data["host"],
            port=int(data.get("port", 5432)),
            database=data.get("dbname") or data.get("dbInstanceIdentifier") or "postgres",
        )
    except KeyError as exc:
        raise ConfigurationError(f"Database secret lacks the field {exc.args[0]!r}") from exc
    return url.render_as_string(hide_password=False)


def jwt_key_from_secret(secret: str) -> str:
    """Accept the plain string that `GenerateSecretString` writes, or `{"jwt_secret_key": ...}`."""
    text = secret.strip()
    if text.startswith("{"):
        data = json.loads(text)
        if "jwt_secret_key" not in data:
            raise ConfigurationError("JWT secret lacks the field 'jwt_secret_key'")
        return str(data["jwt_secret_key"])
    return text


@functools.cache
def get_settings() -> Settings:
    """The container's settings, from the environment (and `.env` locally)."""
    return Settings()


@functools.cache
def get_database_url() -> str:
    """The database URL: from Secrets Manager on AWS, a SQLite file in local development."""
    settings = get_settings()
    if settings.database_secret_arn:
        return normalize_database_url(
            database_url_from_secret(_read_secret(settings.database_secret_arn))
        )
    if settings.database_url:
        return normalize_database_url(settings.database_url)
    if settings.is_local:
        return LOCAL_DATABASE_URL
    raise ConfigurationError(f"Stage {settings.stage!r} needs DATABASE_SECRET_ARN or DATABASE_URL")


@functools.cache
def get_jwt_secret() -> str:
    """The JWT signing key: from Secrets Manager on AWS, a fixed key in local development."""
    settings = get_settings()
    if settings.jwt_secret_arn:
        return jwt_key_from_secret(_read_secret(settings.jwt_secret_arn))
    if settings.jwt_secret_key:
        return settings.jwt_secret_key
    if settings.is_local:
        return LOCAL_JWT_SECRET_KEY
    raise ConfigurationError(f"Stage {settings.stage!r} needs JWT_SECRET_ARN or JWT_SECRET_KEY")


def clear_settings_cache() -> None:
    """Forget settings and secrets (tests, after changing the environment)."""
    get_settings.cache_clear()
    get_database_url.cache_clear()
    get_jwt_secret.cache_clear()
