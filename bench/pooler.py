"""Through the pooler: the authenticated list and a create, warm, through PgBouncer in
transaction mode (the tests' stand-in for RDS Proxy, tests/support/pgbouncer.py) with a
connection per request (`DATABASE_NULL_POOL=true`) and with a pool of one connection per
container, beside the same requests on a direct connection, in one warm process,
interleaved call by call.

    .venv/bin/python -m bench.pooler [--invocations 300]
"""

import argparse
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlmodel import Session

from bench.artifacts import Artifacts, Log, last_build, run_child
from bench.database import SUBJECT_SETTINGS, BenchDatabase, scratch_database, signed_in_user
from bench.report import POOLED_MODES
from bench.warm import percentiles
from localapi.events import http_event
from taskapi.db import build_engine
from taskapi.settings import Settings
from tests.support.pgbouncer import PgBouncer

CHILD = (Path(__file__).resolve().parent / "handler_child.py").read_text()
BASELINE = "direct, pool of one"
# name -> (through PgBouncer, DATABASE_NULL_POOL)
MODES = {
    BASELINE: (False, "false"),
    "direct, connection per request": (False, "true"),
    POOLED_MODES[0]: (True, "false"),
    POOLED_MODES[1]: (True, "true"),
}
REQUESTS = ("GET /api/tasks", "POST /api/tasks")


# What RDS Proxy asks of every client connection and PgBouncer does not by default: TLS
# and a password (SCRAM). A connection per request pays both each time, as it would
# against the proxy; the test suite's PgBouncer trusts its clients, which hides that cost.
PROXY_PASSWORD = "bench-proxy-password"


@contextmanager
def pgbouncer(database: BenchDatabase) -> Iterator[str]:
    """The database's URL through a PgBouncer of its own that, like RDS Proxy, requires TLS
    and authenticates each client with SCRAM."""
    with tempfile.TemporaryDirectory() as folder:
        key, certificate = Path(folder) / "server.key", Path(folder) / "server.crt"
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
                *("-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(certificate)),
            ],
            check=True,
            capture_output=True,
        )
        # PgBouncer drops root for another user, who must read them.
        for path in (Path(folder), key, certificate):
            path.chmod(0o755 if path.is_dir() else 0o644)
        server = make_url(database.url).set(password=PROXY_PASSWORD)
        bouncer = PgBouncer(
            server.render_as_string(hide_password=False),
            settings={
                "auth_type": "scram-sha-256",
                "client_tls_sslmode": "require",
                "client_tls_key_file": str(key),
                "client_tls_cert_file": str(certificate),
            },
        )
        try:
            url = bouncer.url(str(server.database)).update_query_dict({"sslmode": "require"})
            yield url.render_as_string(hide_password=False)
        finally:
            bouncer.stop()


def writers(database: BenchDatabase) -> dict[str, str]:
    """A user per mode for its creates (each stays far below the task quota)."""
    engine = build_engine(database.url, Settings(database_null_pool=True))
    now = datetime.now(UTC)
    with Session(engine) as session:
        tokens = {
            mode: signed_in_user(
                session, email=f"pooler-{number}@example.com", hashed_password="x", now=now
            )[1]
            for number, mode in enumerate(MODES)
        }
        session.commit()
    engine.dispose()
    return tokens


def measure(
    artifacts: Artifacts, database: BenchDatabase, *, invocations: int, warmup: int
) -> dict[str, Any]:
    tokens = writers(database)
    with pgbouncer(database) as pooled_url:
        subjects: list[dict[str, Any]] = []
        for mode, (pooled, null_pool) in MODES.items():
            env = {
                "DATABASE_URL": pooled_url if pooled else database.url,
                "DATABASE_NULL_POOL": null_pool,
            }
            list_event = http_event(
                "GET", "/api/tasks", headers={"authorization": f"Bearer {database.token}"}
            )
            create_event = http_event(
                "POST",
                "/api/tasks",
                headers={
                    "authorization": f"Bearer {tokens[mode]}",
                    "content-type": "application/json",
                },
                body='{"title": "Through the pooler"}',
            )
            for request, event, status in (
                (REQUESTS[0], list_event, 200),
                (REQUESTS[1], create_event, 201),
            ):
                subjects.append(
                    {
                        "name": f"{request}, {mode}",
                        "app": "tasks",
                        "env": env,
                        "event": event,
                        "status": status,
                    }
                )
        measured = run_child(
            artifacts,
            CHILD,
            {
                "roots": {"tasks": str(artifacts.task_roots["tasks"])},
                "subjects": subjects,
                "invocations": invocations,
                "warmup": warmup,
            },
            env={"TZ": ":UTC", **SUBJECT_SETTINGS},
            what="requests through the pooler",
        )
    if measured["failed"]:
        raise RuntimeError(f"requests through the pooler failed: {measured['failed']}")
    rows: dict[str, Any] = {}
    for request in REQUESTS:
        figures = {mode: percentiles(measured["samples"][f"{request}, {mode}"]) for mode in MODES}
        rows[request] = {
            mode: {**values, "p50_x_direct": values["p50_ms"] / figures[BASELINE]["p50_ms"]}
            for mode, values in figures.items()
        }
    return {"backend": database.backend, "invocations": invocations, "requests": rows}


def faster_mode(results: dict[str, Any]) -> str:
    """The connection mode whose list and create through the pooler take less, summed."""
    return min(
        POOLED_MODES,
        key=lambda mode: sum(results["requests"][r][mode]["p50_ms"] for r in REQUESTS),
    )


def table(results: dict[str, Any]) -> str:
    lines = [f"{'request, connection':<52} {'p50':>7} {'p99':>7} {'p50 x direct':>13}"]
    for request, modes in results["requests"].items():
        for mode, figures in modes.items():
            lines.append(
                f"{request + ', ' + mode:<52} {figures['p50_ms']:7.2f} {figures['p99_ms']:7.2f}"
                f" {figures['p50_x_direct']:13.2f}"
            )
    lines.append(f"faster through the pooler: {faster_mode(results)}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invocations", type=int, default=300)
    args = parser.parse_args()
    with scratch_database("postgresql") as database:
        Log()("requests through PgBouncer and direct")
        results = measure(last_build(), database, invocations=args.invocations, warmup=20)
    print(table(results))


if __name__ == "__main__":
    main()
