"""PgBouncer in transaction mode: the tests' stand-in for RDS Proxy in front of PostgreSQL.

Like RDS Proxy it hands each transaction to any of its server connections and refuses a
client that sends startup options (`ignore_startup_parameters` left empty). Debian's
`pgbouncer` package provides it; the test session starts one per test process on a free
port of 127.0.0.1 and stops it at the end. With REQUIRE_POSTGRES=1 (CI) a missing
`pgbouncer` is an error, not a skip.
"""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy.engine import URL, make_url

from localapi.server import free_port, stop_process

START_WITHIN_SECONDS = 10


class PgBouncer:
    """A running PgBouncer that pools every database of one PostgreSQL server."""

    def __init__(self, server_url: str, settings: Mapping[str, str] | None = None) -> None:
        """`settings` add to or replace the [pgbouncer] section's."""
        self.server = make_url(server_url)
        self.port = free_port()
        executable = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        # PgBouncer refuses to run as root; its files must be readable by the user it
        # switches to.
        self.directory = Path(tempfile.mkdtemp(prefix="taskapi-pgbouncer-"))
        self.directory.chmod(0o755)
        config = self.directory / "pgbouncer.ini"
        users = self.directory / "users.txt"
        users.write_text(f'"{self.server.username}" "{self.server.password or ""}"\n')
        options = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            # Clients on 127.0.0.1 only (listen_addr), as the tests' PostgreSQL trusts them.
            "auth_type": "trust",
            "auth_file": str(users),
            "admin_users": str(self.server.username),
            "pool_mode": "transaction",
            # Empty, as RDS Proxy: a client that sends `options` is refused.
            "ignore_startup_parameters": "",
            # Consecutive transactions of one client go to different server connections,
            # as they may behind RDS Proxy: state a request left behind shows up.
            "server_round_robin": "1",
            "min_pool_size": "2",
            "default_pool_size": "40",
            # The suite's workers share one PostgreSQL: idle server connections go back to
            # it after 10 s (not PgBouncer's 600), and a server login refused while its
            # connection slots are briefly full is tried again after 1 s. With PgBouncer's
            # 15 s every client of that database waited out its 3 s connect timeout.
            "server_idle_timeout": "10",
            "server_login_retry": "1",
            "max_client_conn": "1000",
            **(settings or {}),
        }
        config.write_text(
            "[databases]\n"
            f"* = host={self.server.host or '127.0.0.1'} port={self.server.port or 5432}\n"
            "[pgbouncer]\n" + "".join(f"{name} = {value}\n" for name, value in options.items())
        )
        for path in (config, users):
            path.chmod(0o644)
        command = [executable, str(config)]
        if os.geteuid() == 0:
            command[1:1] = ["-u", _unprivileged_user()]
        self.log = (self.directory / "pgbouncer.log").open("w")
        self.process = subprocess.Popen(  # noqa: S603 (a fixed command line)
            command, stdout=self.log, stderr=subprocess.STDOUT
        )
        self._wait_until_listening()

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + START_WITHIN_SECONDS
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    output = (self.directory / "pgbouncer.log").read_text()
                    raise RuntimeError(f"pgbouncer did not start:\n{output}") from None
                time.sleep(0.05)

    def url(self, database: str) -> URL:
        """The URL of `database` through PgBouncer."""
        return self.server.set(host="127.0.0.1", port=self.port, database=database)

    def reconnect(self, database: str) -> None:
        """PgBouncer's `RECONNECT`: its server connections to `database` close once idle,
        and it reads the database's parameters afresh (its time zone, which PgBouncer
        reports to every new client and sets on the server connections it hands out)."""
        # The admin console speaks its own commands alone (no BEGIN, no SQLAlchemy's
        # first queries): psycopg2 directly, in autocommit mode.
        url = self.url("pgbouncer")
        console = psycopg2.connect(
            host=url.host,
            port=url.port,
            user=url.username,
            password=url.password,
            dbname="pgbouncer",
        )
        try:
            console.autocommit = True
            with console.cursor() as cursor:
                cursor.execute(f"RECONNECT {database}")
        finally:
            console.close()

    def warnings(self) -> list[str]:
        """The lines of PgBouncer's log that are not routine (a failed test shows them)."""
        text = (self.directory / "pgbouncer.log").read_text(errors="replace")
        return [line for line in text.splitlines() if " LOG " not in line]

    def stop(self) -> None:
        if self.process.poll() is None:
            stop_process(self.process)
        self.log.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def _unprivileged_user() -> str:
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("pgbouncer will not run as root, and there is no postgres or nobody user")


def start_pgbouncer(server_url: str) -> PgBouncer:
    """PgBouncer in front of the server of `server_url`; skipped where it is not installed
    (an error with REQUIRE_POSTGRES=1)."""
    if not (shutil.which("pgbouncer") or Path("/usr/sbin/pgbouncer").exists()):
        message = "pgbouncer is not installed (Debian: apt-get install pgbouncer)"
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(f"REQUIRE_POSTGRES=1 but {message}")
        pytest.skip(message)
    return PgBouncer(server_url)
