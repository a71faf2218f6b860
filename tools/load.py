"""`make load`: many concurrent clients against the local server (`python -m localapi`) on
PostgreSQL, then proof that nothing was lost.

    python tools/load.py [--requests 10000] [--clients 32] [--time-limit 600]
    python tools/load.py --failover [--clients 16] [--duration 20] [--kill-every 2]
    python tools/load.py --pgbouncer ...   (the API behind PgBouncer in transaction mode)

It creates a fresh PostgreSQL database (next to TEST_DATABASE_URL's, default the local
`test` database), migrates it, starts the local server on a free port of 127.0.0.1, signs
up one user per client, and has the clients send a mix of list, get, create, update and
complete requests. Meanwhile it samples PostgreSQL's connections to that database
(`pg_stat_activity`). Afterwards every created task must be readable by its owner, and
belong to them; then the server is stopped and the database dropped.

Pass when: zero errors (any other status than the route's success, or a failed request),
every created task verified, the run inside its time limit, and the peak number of
connections within DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW (12). The local server runs
each function in SERVER_WORKERS processes of its own, each with its own engine but serving
one request at a time, so the API functions hold at most one connection per worker
process (6 here), under that bound.

`--failover` runs for `--duration` seconds instead of a number of requests, and every
`--kill-every` seconds ends every server process of the database (`pg_terminate_backend`),
as a failover, an RDS Proxy restart or an idle-connection reaper would. Pass when,
besides the above: every answer is the route's success except for writes that were in
flight while a kill happened (a connection that dies under a transaction's statements
cannot be replayed: 503), and after one last kill, once the load has stopped, every
client's next request succeeds. A create that got 503 may still exist (the server
committed before the client heard); every acknowledged one must.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from localapi.server import free_port, running
from taskapi.settings import normalize_database_url
from tests.support.pgbouncer import PgBouncer

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
POOL_SIZE = 8
MAX_OVERFLOW = 4
SERVER_WORKERS = 2
# The share of each request kind in the mix.
MIX = {"list": 30, "get": 25, "create": 20, "update": 15, "complete": 10}
PRIORITIES = ("Low", "Medium", "High")
SUCCESS = {"list": 200, "get": 200, "create": 201, "update": 200, "complete": 200}
WRITES = frozenset({"create", "update", "complete"})


@dataclass
class Sent:
    """One request: what, when (monotonic seconds), and what came back."""

    kind: str
    started: float
    ended: float
    status: int | str


@dataclass
class Result:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    by_kind: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    created: int = 0
    verified: int = 0
    peak_connections: int = 0
    connection_bound: int = POOL_SIZE + MAX_OVERFLOW
    # --failover: the kills, the failures they excuse, and the requests after the last one.
    kills: int = 0
    backends_killed: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    excused: int = 0
    excused_statuses: Counter[str] = field(default_factory=Counter)
    after_last_kill: Counter[str] = field(default_factory=Counter)
    unacknowledged_rows: int = 0
    sent: list[Sent] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return (
            self.errors == 0
            and self.verified == self.created
            and self.peak_connections <= self.connection_bound
        )

    def summary(self) -> dict[str, Any]:
        latencies = sorted(self.latencies_ms) or [0.0]
        hidden = {"latencies_ms", "sent"}
        data = {name: value for name, value in vars(self).items() if name not in hidden}
        return {
            **data,
            "by_kind": dict(self.by_kind),
            "statuses": dict(self.statuses),
            "excused_statuses": dict(self.excused_statuses),
            "after_last_kill": dict(self.after_last_kill),
            "requests_per_second": round(self.requests / self.seconds, 1) if self.seconds else 0,
            "p50_ms": round(latencies[len(latencies) // 2], 1),
            "p95_ms": round(latencies[int(len(latencies) * 0.95)], 1),
            "max_ms": round(latencies[-1], 1),
            "ok": self.ok,
        }


# ---------------------------------------------------------------------------------------
# The database and the server


@contextmanager
def fresh_database(admin_url: str, *, pgbouncer: bool = False) -> Iterator[str]:
    """A new, migrated PostgreSQL database, dropped afterwards; its URL for the API, through
    PgBouncer in transaction mode (started for the run) with `pgbouncer`."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    name = f"taskapi_load_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    pooler = PgBouncer(admin_url) if pgbouncer else None
    if pooler is not None:
        url = pooler.url(name).render_as_string(hide_password=False)
    try:
        subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": url, "STAGE": "local"},
            check=True,
            capture_output=True,
        )
        if pooler is not None:
            # New server connections, which read the defaults the migration set.
            pooler.reconnect(name)
        yield url
    finally:
        if pooler is not None:
            pooler.stop()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def local_server(database_url: str, log_path: Path) -> Iterator[str]:
    """`python -m localapi` on a free port, until the block ends."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'shared'}{os.pathsep}{ROOT}",
        "STAGE": "local",
        "DATABASE_URL": database_url,
        "JWT_SECRET_KEY": "load-test-secret-key-long-enough-for-hs256",
        "BCRYPT_ROUNDS": "4",
        "DATABASE_POOL_SIZE": str(POOL_SIZE),
        "DATABASE_MAX_OVERFLOW": str(MAX_OVERFLOW),
        "LOG_LEVEL": "WARNING",
    }
    command = [
        sys.executable,
        "-m",
        "localapi",
        "--port",
        str(port),
        "--workers",
        str(SERVER_WORKERS),
    ]
    base_url = f"http://127.0.0.1:{port}"
    with running(command, ready_url=f"{base_url}/health", log=log_path, env=env, cwd=ROOT):
        yield base_url


class ConnectionSampler(threading.Thread):
    """Counts the database's connections in pg_stat_activity every few milliseconds."""

    def __init__(self, admin_url: str, database: str) -> None:
        super().__init__(name="connection-sampler", daemon=True)
        self.engine = sa.create_engine(admin_url, poolclass=sa.NullPool)
        self.database = database
        self.peak = 0
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name")
        with self.engine.connect() as connection:
            while not self._stop_event.is_set():
                count = connection.execute(query, {"name": self.database}).scalar_one()
                connection.commit()  # a fresh snapshot of the statistics each time
                self.peak = max(self.peak, count)
                self.samples += 1
                self._stop_event.wait(0.02)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
        self.engine.dispose()


class BackendKiller(threading.Thread):
    """Every `every` seconds, ends every server process of the database and waits until
    they are gone; keeps the time window of each kill."""

    def __init__(self, admin_url: str, database: str, every: float) -> None:
        super().__init__(name="backend-killer", daemon=True)
        self.engine = sa.create_engine(admin_url, poolclass=sa.NullPool)
        self.database = database
        self.every = every
        self.windows: list[tuple[float, float]] = []
        self.killed = 0
        self._stop_event = threading.Event()

    def kill_all(self, connection: sa.Connection) -> None:
        started = time.monotonic()
        pids = connection.execute(
            sa.text(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": self.database},
        ).all()
        connection.commit()
        alive = sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            left = connection.execute(alive, {"pids": [row[0] for row in pids]}).scalar_one()
            connection.commit()
            if not left:
                break
            time.sleep(0.005)
        self.windows.append((started, time.monotonic()))
        self.killed += len(pids)

    def run(self) -> None:
        with self.engine.connect() as connection:
            while not self._stop_event.wait(self.every):
                self.kill_all(connection)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    def close(self) -> None:
        self.engine.dispose()

    def during_a_kill(self, sent: Sent) -> bool:
        return any(start <= sent.ended and sent.started <= end for start, end in self.windows)


# ---------------------------------------------------------------------------------------
# The clients


@dataclass
class Client:
    number: int
    token: str
    user_id: str
    http: httpx.Client
    tasks: list[int] = field(default_factory=list)


def sign_up(base_url: str, number: int) -> Client:
    http = httpx.Client(base_url=base_url, timeout=30)
    response = http.post(
        "/api/auth/signup",
        json={
            "email": f"load-{number}-{uuid.uuid4().hex[:6]}@example.com",
            "name": f"Load {number}",
            "password": "load test password",
        },
    )
    response.raise_for_status()
    body = response.json()
    http.headers["Authorization"] = f"Bearer {body['access_token']}"
    return Client(number, body["access_token"], body["user"]["id"], http)


def one_request(client: Client, kind: str, rng: random.Random) -> httpx.Response:
    if kind == "create" or not client.tasks:
        kind = "create"
        return client.http.post("/api/tasks", json={"title": f"task {rng.random():.6f}"})
    task_id = rng.choice(client.tasks)
    if kind == "list":
        return client.http.get("/api/tasks", params={"limit": rng.choice((5, 20, 100))})
    if kind == "get":
        return client.http.get(f"/api/tasks/{task_id}")
    if kind == "update":
        return client.http.put(f"/api/tasks/{task_id}", json={"priority": rng.choice(PRIORITIES)})
    return client.http.patch(f"/api/tasks/{task_id}/complete")


def drive(
    client: Client,
    count: int | None,
    result: Result,
    lock: threading.Lock,
    seed: int,
    *,
    until: float = float("inf"),
) -> None:
    """Send `count` requests, or (count None) send until the monotonic time `until`."""
    rng = random.Random(seed * 1000 + client.number)  # noqa: S311 (a load mix, not security)
    kinds, weights = list(MIX), list(MIX.values())
    sent = 0
    while (sent < count) if count is not None else (time.monotonic() < until):
        sent += 1
        kind = rng.choices(kinds, weights)[0]
        if not client.tasks:
            kind = "create"
        started = time.monotonic()
        try:
            response = one_request(client, kind, rng)
            status: int | str = response.status_code
        except httpx.HTTPError as error:
            status = type(error).__name__
        ended = time.monotonic()
        if status == SUCCESS[kind] and kind == "create":
            client.tasks.append(response.json()["id"])
        with lock:
            result.requests += 1
            result.by_kind[kind] += 1
            result.latencies_ms.append((ended - started) * 1000)
            result.sent.append(Sent(kind, started, ended, status))


def tally(result: Result, killer: BackendKiller | None) -> None:
    """Count the failures; with kills, a write in flight during one is excused."""
    for sent in result.sent:
        result.statuses[str(sent.status)] += 1
        if sent.status == SUCCESS[sent.kind]:
            continue
        if killer is not None and sent.kind in WRITES and killer.during_a_kill(sent):
            result.excused += 1
            result.excused_statuses[f"{sent.kind}: {sent.status}"] += 1
            continue
        result.errors += 1
        if len(result.error_samples) < 10:
            result.error_samples.append(f"{sent.kind}: {sent.status}")


def verify(client: Client) -> int:
    """How many of the client's tasks its owner reads back as theirs."""
    verified = 0
    for task_id in client.tasks:
        response = client.http.get(f"/api/tasks/{task_id}")
        if response.status_code == 200 and response.json()["user_id"] == client.user_id:
            verified += 1
    return verified


def run(
    *,
    requests: int,
    clients: int,
    admin_url: str,
    time_limit: float,
    log_path: Path,
    seed: int = 1,
    duration: float | None = None,
    kill_every: float | None = None,
    pgbouncer: bool = False,
) -> Result:
    """`requests` requests in all; or, with `duration`, as many as the clients send in that
    many seconds. With `kill_every`, the database's server processes die that often."""
    result = Result()
    lock = threading.Lock()
    with (
        fresh_database(admin_url, pgbouncer=pgbouncer) as url,
        local_server(url, log_path) as base_url,
    ):
        database = make_url(url).database or ""
        sampler = ConnectionSampler(admin_url, database)
        sampler.start()
        killer = BackendKiller(admin_url, database, kill_every) if kill_every else None
        with ThreadPoolExecutor(clients) as pool:
            users = list(pool.map(lambda n: sign_up(base_url, n), range(clients)))
            shares = [requests // clients + (n < requests % clients) for n in range(clients)]
            started = time.monotonic()
            until = started + duration if duration is not None else float("inf")
            if killer is not None:
                killer.start()
            futures = [
                pool.submit(
                    drive, user, None if duration else share, result, lock, seed, until=until
                )
                for user, share in zip(users, shares, strict=True)
            ]
            for future in futures:
                future.result(timeout=max(1.0, time_limit - (time.monotonic() - started)))
            result.seconds = time.monotonic() - started
            if killer is not None:
                killer.stop()
                # Once more with the load stopped: each client's next request must succeed
                # although every pooled connection is dead.
                with killer.engine.connect() as connection:
                    killer.kill_all(connection)
                after = pool.map(lambda user: user.http.get("/api/tasks").status_code, users)
                result.after_last_kill.update(str(status) for status in after)
                result.kills, result.backends_killed = len(killer.windows), killer.killed
                killer.close()
            tally(result, killer)
            if set(result.after_last_kill) - {"200"}:
                result.errors += 1
                result.error_samples.append(f"after the last kill: {result.after_last_kill}")
            sampler.stop()
            result.peak_connections = sampler.peak
            result.created = sum(len(user.tasks) for user in users)
            result.verified = sum(pool.map(verify, users))
        # And straight from the database: each task row belongs to the user who created it.
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT id, user_id::text FROM task")).all()
            owners: dict[int, str] = {row[0]: row[1] for row in rows}
        engine.dispose()
        expected = {task_id: user.user_id for user in users for task_id in user.tasks}
        # With kills, a create answered 503 may have been committed: an extra row, whole.
        extra = set(owners) - set(expected) if killer is not None else set()
        result.unacknowledged_rows = len(extra)
        if {t: o for t, o in owners.items() if t not in extra} != expected:
            result.verified = sum(owners.get(t) == owner for t, owner in expected.items())
            result.error_samples.append(f"database rows differ: {len(owners)} rows")
        for user in users:
            user.http.close()
    if result.seconds > time_limit:
        result.errors += 1
        result.error_samples.append(f"took {result.seconds:.0f}s, over {time_limit:.0f}s")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--failover",
        action="store_true",
        help="run for --duration seconds, ending the database's connections every --kill-every",
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds (--failover)")
    parser.add_argument("--kill-every", type=float, default=2.0, help="seconds (--failover)")
    parser.add_argument(
        "--admin-url", default=os.environ.get("TEST_DATABASE_URL", DEFAULT_ADMIN_URL)
    )
    parser.add_argument(
        "--pgbouncer",
        action="store_true",
        help="the API reaches the database through PgBouncer in transaction mode",
    )
    parser.add_argument("--log", type=Path, default=ROOT / "build" / "load-server.log")
    args = parser.parse_args(argv)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    result = run(
        requests=args.requests,
        clients=args.clients,
        admin_url=normalize_database_url(args.admin_url),
        time_limit=args.time_limit,
        log_path=args.log,
        seed=args.seed,
        duration=args.duration if args.failover else None,
        kill_every=args.kill_every if args.failover else None,
        pgbouncer=args.pgbouncer,
    )
    print(json.dumps(result.summary(), indent=2))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
