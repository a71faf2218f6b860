"""`make migrate`: upgrade the configured database (the local SQLite file by default) to
the newest revision, through the migrate function's own code, and say so in one line.

A setting the layer refuses, or a database it cannot reach, is one line and exit status 1;
`--debug` (or LOG_LEVEL=DEBUG) adds the traceback and Alembic's own log.
"""

import argparse
import logging
import sys
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import exc
from sqlalchemy.engine import make_url

from localapi.runtime import import_file
from taskapi.db import get_engine, reset_engine
from taskapi.settings import ConfigurationError, get_database_url, get_settings

ROOT = Path(__file__).resolve().parent.parent

logger = logging.getLogger("taskapi.migrate")


class MigrateError(Exception):
    """What to tell the developer, in one line."""


def migrate(revision: str) -> str:
    """Upgrade to `revision`; the line that says what happened."""
    # The MigrateFunction's handler module: the same advisory lock and Alembic calls as on AWS.
    handler = import_file(ROOT / "migrations" / "handler.py", "migrate_handler")
    try:
        url = get_database_url()
    except ConfigurationError as error:
        raise MigrateError(f"Configuration error: {error}") from error
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        # Connect once on its own, so that "cannot connect" is never a failed migration.
        get_engine().connect().close()
    except exc.DBAPIError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise MigrateError(
            f"Cannot connect to the database at {shown}: {reason}. Start it, or point"
            f" DATABASE_URL (shell or .env) at one that runs"
        ) from error
    try:
        result = handler.run({"action": "upgrade", "revision": revision})
    except handler.MigrationError as error:
        raise MigrateError(str(error)) from error
    before, after = result["before"], result["after"]
    if before == after:
        return f"Database {shown}: already at revision {after}, nothing to migrate"
    return f"Database {shown}: migrated from {before or 'an empty database'} to revision {after}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--revision", default="head", help="where to upgrade to (default: head)")
    parser.add_argument("--debug", action="store_true", help="tracebacks and Alembic's log")
    args = parser.parse_args(argv)
    try:
        debug = args.debug or get_settings().log_level.upper() == "DEBUG"
    except ValidationError as error:  # a setting of the wrong type (BCRYPT_ROUNDS=abc...)
        problems = "; ".join(
            f"{'.'.join(map(str, problem['loc'])).upper()}: {problem['msg']}"
            for problem in error.errors()
        )
        print(f"Configuration error: {problems}", file=sys.stderr)
        return 1
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s [%(name)s] %(message)s",
    )
    try:
        print(migrate(args.revision), flush=True)
    except MigrateError as error:
        if debug:
            logger.exception("migration failed")
        print(f"{error}{'' if debug else ' (--debug shows the traceback)'}", file=sys.stderr)
        return 1
    finally:
        reset_engine()
    return 0


if __name__ == "__main__":
    sys.exit(main())
