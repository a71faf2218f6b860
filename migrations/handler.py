"""MigrateFunction: run Alembic from Lambda.

Event: `{"action": "upgrade" | "downgrade" | "current" | "history", "revision": ...}`.
Returns `{"action", "before", "after"}` (plus `"revisions"` for history). An unknown action
or revision raises, which fails the invocation with that message.

On PostgreSQL every action runs inside one transaction that first takes an advisory lock,
so two deploys that migrate at once run one after the other; DDL is transactional there,
so a failed migration leaves the schema as it was.
"""

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from deploy_hook import handle as handle_custom_resource
from deploy_hook import is_custom_resource_event
from sqlalchemy import text
from sqlalchemy.engine import Connection

from taskapi.db import allow_long_statements, get_engine
from taskapi.logs import configure_logging
from taskapi.settings import get_settings

logger = logging.getLogger("taskapi.migrate")

# Any fixed 64-bit number; it only has to be the same for every MigrateFunction.
ADVISORY_LOCK_KEY = 0x7461736B617069  # "taskapi"
DEFAULT_REVISIONS = {"upgrade": "head", "downgrade": "-1"}
ACTIONS = ("upgrade", "downgrade", "current", "history")


class MigrationError(Exception):
    """A bad event or an unknown revision: the invocation fails with this message."""


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).resolve().parent))
    config.attributes["connection"] = connection
    return config


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def run(event: dict[str, Any]) -> dict[str, Any]:
    action = event.get("action", "upgrade")
    if action not in ACTIONS:
        raise MigrationError(f"Unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    revision = str(event.get("revision") or DEFAULT_REVISIONS.get(action, "head"))

    with get_engine().begin() as connection:
        # Before the lock: waiting for another deploy's migration counts against it too.
        allow_long_statements(connection)
        if connection.dialect.name == "postgresql":
            # Held until this transaction ends; a second invocation waits here.
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
            )
        config = alembic_config(connection)
        before = current_revision(connection)
        result: dict[str, Any] = {"action": action, "before": before}
        try:
            if action == "upgrade":
                command.upgrade(config, revision)
            elif action == "downgrade":
                command.downgrade(config, revision)
            elif action == "history":
                script = ScriptDirectory.from_config(config)
                result["revisions"] = [
                    {"revision": rev.revision, "down_revision": rev.down_revision, "doc": rev.doc}
                    for rev in script.walk_revisions()
                ]
        except CommandError as error:
            raise MigrationError(f"{action} to {revision!r} failed: {error}") from error
        result["after"] = current_revision(connection)
    logger.info("migration", extra=result)
    return result


def handler(event: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    configure_logging(get_settings().log_level)
    # template.yaml's MigrateOnDeploy: CloudFormation's request, answered at its ResponseURL.
    if is_custom_resource_event(event):
        return handle_custom_resource(event, run)
    return run(event or {})
