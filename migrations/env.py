"""Alembic environment: the models' metadata, and the URL from the functions' settings.

A caller that already holds a connection (the migrate function, the tests) passes it as
`config.attributes["connection"]`; otherwise an engine is built from the settings.
"""

from typing import Any

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from taskapi import models  # noqa: F401  (registers the tables on the metadata)
from taskapi.db import allow_long_statements, build_engine, set_database_defaults
from taskapi.settings import get_database_url, get_settings

config = context.config
target_metadata = SQLModel.metadata


def for_this_dialect(dialect: str) -> Any:
    """Alembic's `include_object`: an index made for another dialect only (`info`'s
    "dialect", as the trigram search index) is neither expected nor drift here."""

    def include(obj: Any, _name: str | None, type_: str, _reflected: bool, _other: Any) -> bool:
        if type_ != "index":
            return True
        only_on = obj.info.get("dialect")
        return only_on is None or only_on == dialect

    return include


def run_migrations(connection: Connection) -> None:
    # The migrations' own limit, whoever passed the connection: the database's default is
    # the API's (`set_database_defaults`), too short for an index build.
    allow_long_statements(connection)
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=for_this_dialect(connection.dialect.name),
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
        # On every run, not in a revision: a changed setting reaches the database with the
        # next deploy's migrate, even when there is no revision to apply.
        set_database_defaults(connection, get_settings())


def run_migrations_offline() -> None:
    context.configure(
        url=get_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
elif (connection := config.attributes.get("connection")) is not None:
    run_migrations(connection)
else:
    engine = build_engine(get_database_url(), get_settings())
    try:
        with engine.connect() as connection:
            run_migrations(connection)
            connection.commit()
    finally:
        engine.dispose()
