"""PostgreSQL's statement log for one database, and the statements in it that would pin
a client to one server connection behind RDS Proxy (or leave state behind for the next
client of a transaction pooler).

The database logs every statement (`ALTER DATABASE ... SET log_statement = 'all'`, for that
database alone). The log is read through the server (`pg_read_binary_file`, as a
superuser), so that the tests need no access to the server's files: the file that
`pg_current_logfile()` names when the logging collector runs, otherwise the server's
standard error (Debian's clusters write it to /var/log/postgresql/), which every server
process inherits as its descriptor 2.
"""

import os
import re
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from taskapi.db import MIGRATE_SESSION_MARK

# What pins a session behind RDS Proxy, or outlives the transaction behind any
# transaction pooler. SET LOCAL and SET TRANSACTION end with the transaction;
# pg_advisory_xact_lock too.
PINNING = {
    "session SET": re.compile(r"^\s*SET\s+(?!LOCAL\b|TRANSACTION\b)", re.IGNORECASE),
    "session set_config": re.compile(r"set_config\s*\([^)]*,\s*false\s*\)", re.IGNORECASE),
    "RESET or DISCARD": re.compile(r"^\s*(RESET|DISCARD)\b", re.IGNORECASE),
    "session advisory lock": re.compile(
        r"pg_(try_)?advisory_(un)?lock(_shared|_all)?\s*\(", re.IGNORECASE
    ),
    "prepared statement": re.compile(r"^\s*(PREPARE|EXECUTE|DEALLOCATE)\b", re.IGNORECASE),
    "LISTEN or LOAD": re.compile(r"^\s*(LISTEN|LOAD)\b", re.IGNORECASE),
    "held cursor": re.compile(r"^\s*DECLARE\b.*\bWITH\s+HOLD\b", re.IGNORECASE | re.DOTALL),
    "temporary object": re.compile(
        r"^\s*CREATE\s+(GLOBAL\s+|LOCAL\s+)?(TEMP|TEMPORARY)\b", re.IGNORECASE
    ),
    "currval or lastval": re.compile(r"\b(currval|lastval)\s*\(", re.IGNORECASE),
}
# A log entry starts with log_line_prefix's timestamp (%m or %t), as on Debian.
ENTRY_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", re.MULTILINE)
# The simple protocol's statements, and the extended protocol's, whose statement name is
# `<unnamed>` unless the client prepared it on the server (that pins too).
STATEMENT = re.compile(r"LOG:\s+(statement|execute (?P<name>\S+?)):\s(?P<sql>.*)", re.DOTALL)


@dataclass
class StatementLog:
    """The statements that one database logs from now on."""

    admin_url: str
    database: str
    path: str
    offset: int

    def _read(self, sql: str) -> object:
        engine = sa.create_engine(self.admin_url, poolclass=sa.NullPool)
        try:
            with engine.connect() as connection:
                return connection.execute(
                    sa.text(sql), {"path": self.path, "offset": self.offset}
                ).scalar()
        finally:
            engine.dispose()

    def skip_to_end(self) -> None:
        """Leave out what was logged so far."""
        size = self._read("SELECT size FROM pg_stat_file(:path, true)")
        self.offset = int(size) if isinstance(size, int) else self.offset

    def statements(self) -> list[str]:
        """Every statement the database logged since this log was opened (or skipped)."""
        text = self._read(
            "SELECT pg_read_binary_file(:path, :offset,"
            " greatest((pg_stat_file(:path)).size - :offset, 0), true)"
        )
        raw = bytes(text) if isinstance(text, (bytes, memoryview)) else b""
        entries = ENTRY_START.split(raw.decode("utf-8", "replace"))
        # log_line_prefix's `%u@%d` names the database.
        marker = f"@{self.database} "
        found = []
        for entry in entries:
            if marker not in entry:
                continue
            match = STATEMENT.search(entry)
            if match is None:
                continue
            name = match.group("name")
            sql = match.group("sql").strip()
            found.append(f"EXECUTE {name}: {sql}" if name and name != "<unnamed>" else sql)
        return found

    def pinning(self, statements: list[str] | None = None) -> list[tuple[str, str]]:
        """(reason, statement) for each logged statement (or each of `statements`) that
        would pin a session, but the migrate function's, which may pin its own
        (`MIGRATE_SESSION_MARK`)."""
        found = []
        for sql in self.statements() if statements is None else statements:
            if sql.startswith(MIGRATE_SESSION_MARK):
                continue
            for reason, pattern in PINNING.items():
                if pattern.search(sql):
                    found.append((reason, sql))
                    break
        return found


def log_statements(admin_url: str, database: str) -> StatementLog | None:
    """Start logging every statement of `database`; None (a skip, an error under
    REQUIRE_POSTGRES=1) where the server's log cannot be read."""
    engine = sa.create_engine(admin_url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            prefix = connection.exec_driver_sql("SHOW log_line_prefix").scalar_one()
            path = connection.exec_driver_sql("SELECT pg_current_logfile()").scalar()
            if path is None:
                path = "/proc/self/fd/2"
            try:
                size = connection.execute(
                    sa.text("SELECT size FROM pg_stat_file(:path, true)"), {"path": path}
                ).scalar()
            except sa.exc.DBAPIError:
                size = None  # not a superuser
            if "%d" not in prefix or not prefix.startswith(("%m", "%t")) or size is None:
                reason = (
                    f"the PostgreSQL log cannot be read for statements ({path}; log_line_prefix"
                    f" {prefix!r} must start with the time, %m or %t, and name the database,"
                    " %d): the pinning check is skipped"
                )
                if os.environ.get("REQUIRE_POSTGRES") == "1":
                    pytest.fail(f"REQUIRE_POSTGRES=1 but {reason}")
                return None
            connection.exec_driver_sql(f"ALTER DATABASE \"{database}\" SET log_statement = 'all'")
    finally:
        engine.dispose()
    return StatementLog(admin_url, database, path, int(size))
