"""Configuration, read from the environment once per container.

On AWS the database URL and the JWT keys come from Secrets Manager (`DATABASE_SECRET_ARN`,
`JWT_SECRET_ARN`); each is fetched when first needed and read again once it is older than
`SECRET_CACHE_SECONDS`, so a rotation reaches warm containers without a redeploy.
Functions that need them resolve them while the container starts (see
`taskapi.factory`), so a missing secret stops the container instead of failing requests.
"""

import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from taskapi import state
from taskapi.aws import aws_client, describe_limits

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LOCAL_STAGES = frozenset({"local", "test"})
LOCAL_DATABASE_URL = "sqlite:///./taskapi.db"
# Where `make run` serves the API (its default PORT): the base of the links in emails.
LOCAL_PUBLIC_URL = "http://127.0.0.1:3000"
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
# HS256 wants a key at least as long as its hash (RFC 7518 section 3.2): 32 bytes.
JWT_KEY_MIN_BYTES = 32
# Good enough for a laptop; any other stage must supply a real key.
LOCAL_JWT_SECRET_KEY = "local-development-only-not-a-secret"  # noqa: S105


logger = logging.getLogger(__name__)

# The `kid` of a key given as a plain string (and of tokens issued before tokens had one).
DEFAULT_KID = "default"
# A forced re-read (a database login that failed) is skipped if the secret was read this
# recently: during an outage, every failed connect would otherwise call Secrets Manager.
SECRET_REREAD_MIN_SECONDS = 5.0


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
    # PostgreSQL ends any statement running longer (a 503), well inside the functions' 10 s.
    # The migrate function makes it the database's default (`taskapi.db.set_database_defaults`).
    database_statement_timeout_ms: int = Field(default=5000, ge=1)
    # RDS Proxy pools connections itself; a client-side pool on top only pins them.
    database_null_pool: bool = False
    bcrypt_rounds: int = Field(default=12, ge=4, le=31)
    # Failures from one source IP that lock an email for that source, and failures from
    # all sources together that lock it for every source, inside the lockout window.
    login_max_attempts: int = Field(default=5, ge=1)
    login_max_attempts_per_email: int = Field(default=100, ge=1)
    login_lockout_minutes: int = Field(default=15, ge=1)
    # template.yaml's LogLevel allows the same four names; any case is read (`info`).
    log_level: LogLevel = "INFO"
    # Seconds a value read from Secrets Manager is used before it is read again.
    secret_cache_seconds: int = Field(default=300, ge=1)
    # The base path of a custom domain's API mapping (`/v1`): API Gateway leaves it in the
    # path it sends, and every function strips it (see `taskapi.factory`).
    api_base_path: str = ""

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("api_base_path")
    @classmethod
    def _normalise_base_path(cls, value: str) -> str:
        # `v1`, `/v1` and `/v1/` all mean the same mapping; `/` means none.
        segments = value.strip().strip("/")
        return f"/{segments}" if segments else ""

    # Tasks per user, deleted ones in the trash included (a create past it is 409).
    max_tasks_per_user: int = Field(default=10000, ge=1)
    # Days a deleted task stays in the trash before the maintenance run removes it.
    trash_retention_days: int = Field(default=30, ge=1)
    # Days the changes feed keeps a removed task's tombstone; a cursor older is 410.
    changes_retention_days: int = Field(default=90, ge=1)
    # Seconds a reminders run may spend sending: it runs every minute, and a run ends before
    # the next one starts.
    reminders_time_budget_seconds: float = Field(default=45.0, ge=0, lt=60)
    # The maintenance run: rows deleted per transaction, and seconds it may spend (it also
    # stops 5 s before the function's own timeout).
    maintenance_batch_size: int = Field(default=500, ge=1)
    maintenance_time_budget_seconds: float = Field(default=240.0, ge=0)

    # Password reset by email: minutes a token stays valid (a day at most: the token is as
    # good as the password while it lives); requests allowed per email and per source IP
    # inside LOGIN_LOCKOUT_MINUTES (then 429); and the seconds every request takes at least,
    # mail or not, so its time does not tell whether the account exists (5 at most, which
    # leaves the auth function's 10 s for the work itself).
    password_reset_minutes: int = Field(default=30, ge=1, le=1440)
    password_reset_max_per_email: int = Field(default=3, ge=1)
    password_reset_max_per_source: int = Field(default=20, ge=1)
    password_reset_answer_seconds: float = Field(default=0.5, ge=0, le=5)
    # Minutes the confirmation link of an email change stays valid.
    email_change_minutes: int = Field(default=60, ge=1)
    # Days the security log keeps an event; the maintenance run deletes older ones.
    security_event_days: int = Field(default=90, ge=1)

    # Email (taskapi.mail). `auto`: SMTP when SMTP_SERVER is set, else SES on any stage but
    # `local`/`test`, else the message is written to the log (a developer clicks the link).
    email_delivery: Literal["auto", "ses", "smtp", "log"] = "auto"
    email_from: str = "Task API <no-reply@example.com>"
    # The base of the links in emails (the web app that takes the token); see `link_base`.
    public_url: str = ""
    smtp_server: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: str | None = Field(default=None, repr=False)
    # STARTTLS is required by default: credentials and reset links never cross in clear.
    # `false` only for a local catcher without TLS (MailHog, aiosmtpd).
    smtp_starttls: bool = True
    # Seconds for each SMTP step (connect, each command): a stuck server costs a request
    # a few seconds, never the function's timeout.
    smtp_timeout_seconds: float = Field(default=3.0, gt=0)

    @property
    def is_local(self) -> bool:
        return self.stage in LOCAL_STAGES

    @property
    def link_base(self) -> str:
        """The base of the links in emails: PUBLIC_URL; unset, the local server's address
        on a local stage (`make run`), and elsewhere none (the emails carry the token)."""
        if self.public_url.strip():
            return self.public_url.strip().rstrip("/")
        return LOCAL_PUBLIC_URL if self.is_local else ""

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]


def _read_secret(arn: str) -> str:
    client = aws_client("secretsmanager")
    # botocore is loaded by now (the client); importing it earlier would cost every container.
    from botocore.exceptions import ConnectionError, HTTPClientError

    try:
        response = client.get_secret_value(SecretId=arn)
    except client.exceptions.ResourceNotFoundException as exc:
        raise ConfigurationError(f"Secret {arn} does not exist") from exc
    except (ConnectionError, HTTPClientError) as exc:
        # Inside a VPC this is nearly always the network, not Secrets Manager.
        raise ConfigurationError(
            f"Secret {arn} could not be read: Secrets Manager at "
            f"{client.meta.endpoint_url} did not answer ({describe_limits()}: {exc}). "
            "A function in a VPC needs a Secrets Manager interface endpoint "
            "(com.amazonaws.<region>.secretsmanager, the template's CreateVpcEndpoints) "
            "or a NAT gateway; check the subnets' routes and the endpoint's security group."
        ) from exc
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


@dataclass(frozen=True)
class SigningKey:
    kid: str
    key: str = field(repr=False)


@dataclass(frozen=True)
class KeyRing:
    """The JWT keys: new tokens are signed with `current`; tokens signed with any key
    of the ring (found by their `kid`) are accepted until they expire."""

    current: SigningKey
    previous: tuple[SigningKey, ...] = ()

    def find(self, kid: str) -> SigningKey | None:
        return next((key for key in (self.current, *self.previous) if key.kid == kid), None)


def _signing_key(data: Any, where: str) -> SigningKey:
    if not isinstance(data, dict) or not all(
        isinstance(data.get(name), str) and data[name] for name in ("kid", "key")
    ):
        raise ConfigurationError(
            f'JWT secret: {where} must be {{"kid": "<id>", "key": "<secret>"}}, '
            "both non-empty strings"
        )
    return SigningKey(kid=data["kid"], key=data["key"])


def key_ring_from_secret(secret: str) -> KeyRing:
    """Accept the plain string that `GenerateSecretString` writes, `{"jwt_secret_key": ...}`,
    or a key ring `{"current": {"kid", "key"}, "previous": [{"kid", "key"}, ...]}`."""
    text = secret.strip()
    if not text.startswith("{"):
        return KeyRing(current=SigningKey(kid=DEFAULT_KID, key=text))
    try:
        data = json.loads(text)
    except ValueError as error:
        raise ConfigurationError(f"JWT secret starts with '{{' but is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise ConfigurationError("JWT secret: expected a JSON object")
    if "current" in data:
        previous = data.get("previous", [])
        if not isinstance(previous, list):
            raise ConfigurationError("JWT secret: 'previous' must be a list of keys")
        ring = KeyRing(
            current=_signing_key(data["current"], "'current'"),
            previous=tuple(_signing_key(key, f"previous[{i}]") for i, key in enumerate(previous)),
        )
        kids = [key.kid for key in (ring.current, *ring.previous)]
        if len(set(kids)) != len(kids):
            raise ConfigurationError(f"JWT secret: every kid must be different, got {kids}")
        return ring
    if "jwt_secret_key" in data:
        return KeyRing(current=SigningKey(kid=DEFAULT_KID, key=str(data["jwt_secret_key"])))
    raise ConfigurationError(
        "JWT secret lacks the field 'current' (a key ring) or 'jwt_secret_key' (one key)"
    )


@functools.cache
def get_settings() -> Settings:
    """The container's settings, from the environment (and `.env` locally)."""
    return Settings()


T = TypeVar("T")


class Refreshed(Generic[T]):
    """A value loaded on first use and loaded again once older than `SECRET_CACHE_SECONDS`.

    If a later load fails (Secrets Manager unreachable, say), the value in hand is kept,
    with a warning, until the next period: a rotation must never take the service down.
    """

    def __init__(self, load: Callable[[], T]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._value: T | None = None
        self._loaded_at = 0.0

    def __call__(self) -> T:
        with self._lock:
            age = time.monotonic() - self._loaded_at
            if self._value is None or age >= get_settings().secret_cache_seconds:
                return self._reload()
            return self._value

    def refresh(self) -> T:
        """Load now (unless just loaded): for a caller that knows the value went stale."""
        with self._lock:
            age = time.monotonic() - self._loaded_at
            min_age = min(SECRET_REREAD_MIN_SECONDS, get_settings().secret_cache_seconds)
            if self._value is None or age >= min_age:
                return self._reload()
            return self._value

    def _reload(self) -> T:
        try:
            value = self._load()
        except Exception as error:
            if self._value is None:
                raise
            logger.warning("could not read a secret again; keeping the one in use: %s", error)
            value = self._value
        self._value, self._loaded_at = value, time.monotonic()
        return value

    @property
    def loaded(self) -> bool:
        """Whether the value has been loaded (and not cleared since)."""
        return self._value is not None

    def cache_clear(self) -> None:
        with self._lock:
            self._value, self._loaded_at = None, 0.0


def _load_database_url() -> str:
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


def _load_jwt_keys() -> KeyRing:
    settings = get_settings()
    if settings.jwt_secret_arn:
        ring = key_ring_from_secret(_read_secret(settings.jwt_secret_arn))
    elif settings.jwt_secret_key:
        ring = key_ring_from_secret(settings.jwt_secret_key)
    elif settings.is_local:
        return KeyRing(current=SigningKey(kid=DEFAULT_KID, key=LOCAL_JWT_SECRET_KEY))
    else:
        raise ConfigurationError(f"Stage {settings.stage!r} needs JWT_SECRET_ARN or JWT_SECRET_KEY")
    if not settings.is_local:
        _refuse_short_keys(ring, stage=settings.stage)
    return ring


def _refuse_short_keys(ring: KeyRing, *, stage: str) -> None:
    # A short key can be brute-forced offline from any one token; PyJWT only warns.
    for key in (ring.current, *ring.previous):
        if len(key.key.encode()) < JWT_KEY_MIN_BYTES:
            raise ConfigurationError(
                f"JWT key {key.kid!r} is {len(key.key.encode())} bytes; stage {stage!r} needs"
                f" at least {JWT_KEY_MIN_BYTES} (set JWT_SECRET_KEY or the JWT_SECRET_ARN"
                " secret to a random string such as `openssl rand -hex 32`)"
            )


# The database URL: from Secrets Manager on AWS, a SQLite file in local development.
# `get_database_url.refresh()` re-reads it at once (a login the database refused).
get_database_url = Refreshed(_load_database_url)
# The JWT key ring: from Secrets Manager on AWS, a fixed key in local development.
get_jwt_keys = Refreshed(_load_jwt_keys)


state.register(get_settings.cache_clear, kept_on_restore=True)
# A restored environment reads its secrets again: they may have rotated while the snapshot
# was cached, a time that `Refreshed`'s monotonic clock may not count.
state.register(get_database_url.cache_clear)
state.register(get_jwt_keys.cache_clear)
