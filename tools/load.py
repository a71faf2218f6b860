"""`make load`: many concurrent clients against the local server (`python -m localapi`) on
PostgreSQL, then proof that nothing was lost.

    python tools/load.py [--requests 10000] [--clients 32] [--time-limit 600]

It creates a fresh PostgreSQL database (next to TEST_DATABASE_URL's, default the local
`test` database), migrates it, starts the local server on a free port of 127.0.0.1, signs
up one user per client, and has the clients send a mix of list, get, create, update and
complete requests. Meanwhile it samples PostgreSQL's connections to that database
(`pg_stat_activity`). Afterwards every created task must be readable by its owner, and
belong to them; then the server is stopped and the database dropped.

Pass when: zero errors (any other status than the route's success, or a failed request),
every created task verified, the run inside its time limit, and the peak number of
connections within the pool's promise: the local server runs the three functions in one
process that shares the layer's one engine, so at most DATABASE_POOL_SIZE +
DATABASE_MAX_OVERFLOW connections.
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

from localapi.server import free_port, stop_process
from taskapi.settings import normalize_database_url

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
POOL_SIZE = 8
MAX_OVERFLOW = 4
SERVER_WORKERS = 2
# The share of each request kind in the mix.
MIX = {"list": 30, "get": 25, "create": 20, "update": 15, "complete": 10}
PRIORITIES = ("Low", "Medium", "High")
SUCCESS = {"list": 200, "get": 200, "create": 201, "update": 200, "complete": 200}


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

    @property
    def ok(self) -> bool:
        return (
            self.errors == 0
            and self.verified == self.created
            and self.peak_connections <= self.connection_bound
        )

    def summary(self) -> dict[str, Any]:
        latencies = sorted(self.latencies_ms) or [0.0]
        data = {name: value for name, value in vars(self).items() if name != "latencies_ms"}
        return {
            **data,
            "by_kind": dict(self.by_kind),
            "requests_per_second": round(self.requests / self.seconds, 1) if self.seconds else 0,
            "p50_ms": round(latencies[len(latencies) // 2], 1),
            "p95_ms": round(latencies[int(len(latencies) * 0.95)], 1),
            "max_ms": round(latencies[-1], 1),
            "ok": self.ok,
        }


# ---------------------------------------------------------------------------------------
# The database and the server


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new, migrated PostgreSQL database; dropped afterwards."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    name = f"taskapi_load_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": url, "STAGE": "local"},
            check=True,
            capture_output=True,
        )
        yield url
    finally:
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
    with log_path.open("w") as log:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)  # noqa: S603
        base_url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the local server did not start; see {log_path}")
                time.sleep(0.2)
            yield base_url
        finally:
            stop_process(server)


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


def drive(client: Client, count: int, result: Result, lock: threading.Lock, seed: int) -> None:
    rng = random.Random(seed * 1000 + client.number)  # noqa: S311 (a load mix, not security)
    kinds, weights = list(MIX), list(MIX.values())
    for _ in range(count):
        kind = rng.choices(kinds, weights)[0]
        if not client.tasks:
            kind = "create"
        started = time.perf_counter()
        try:
            response = one_request(client, kind, rng)
            status: int | str = response.status_code
        except httpx.HTTPError as error:
            status = type(error).__name__
        elapsed = (time.perf_counter() - started) * 1000
        failed = status != SUCCESS[kind]
        if not failed and kind == "create":
            client.tasks.append(response.json()["id"])
        with lock:
            result.requests += 1
            result.by_kind[kind] += 1
            result.latencies_ms.append(elapsed)
            if failed:
                result.errors += 1
                if len(result.error_samples) < 10:
                    result.error_samples.append(f"{kind}: {status}")


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
) -> Result:
    result = Result()
    lock = threading.Lock()
    with fresh_database(admin_url) as url, local_server(url, log_path) as base_url:
        sampler = ConnectionSampler(admin_url, make_url(url).database or "")
        sampler.start()
        with ThreadPoolExecutor(clients) as pool:
            users = list(pool.map(lambda n: sign_up(base_url, n), range(clients)))
            shares = [requests // clients + (n < requests % clients) for n in range(clients)]
            started = time.monotonic()
            futures = [
                pool.submit(drive, user, share, result, lock, seed)
                for user, share in zip(users, shares, strict=True)
            ]
            for future in futures:
                future.result(timeout=max(1.0, time_limit - (time.monotonic() - started)))
            result.seconds = time.monotonic() - started
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
        if owners != expected:
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
        "--admin-url", default=os.environ.get("TEST_DATABASE_URL", DEFAULT_ADMIN_URL)
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
    )
    print(json.dumps(result.summary(), indent=2))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
