"""Throughput of the local server (`python -m localapi`) against uvicorn serving the tasks
function's FastAPI app directly, at 1, 8 and 32 concurrent clients.

    PYTHONPATH=shared:. .venv/bin/python -m bench.localapi_throughput [--requests 600]
        [--rounds 2] [--backend sqlite|postgresql]

(`make bench` runs it as part of the whole benchmark, on SQLite.) Both servers run at once
on the same fresh, migrated database (a SQLite file, or a PostgreSQL database of its own,
dropped afterwards) and answer the same authenticated `GET /api/tasks` (a JWT check, two
queries, 20 tasks serialised); the cells alternate between them, round by round, so that
load elsewhere on the machine hits both alike. Each round measures both servers back to
back, so each round gives a ratio; the median of those is the figure to read (a busy spell
on a shared machine spoils one round, not the result). The client is one asyncio process
with httpx; the machine's cores are shared between client and servers, so the figures
compare the two servers, not what Lambda would do.
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from bench.database import POSTGRES_ADMIN_URL, _admin
from localapi.server import free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = (1, 8, 32)
LOCAL, DIRECT = "localapi (handler via Mangum)", "uvicorn app:app (direct)"


@contextmanager
def server(command: list[str], env: dict[str, str], port: int) -> Iterator[str]:
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(f"{url}/api/tasks", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"{command} did not start")
        yield url
    finally:
        stop_process(process)


async def measure(
    url: str, token: str, concurrency: int, requests: int
) -> tuple[float, list[float], int]:
    """Seconds taken, each answered request's latency in milliseconds, and how many
    requests failed (counted, not fatal: on a loaded machine a keep-alive connection can
    close under a request that waited too long to be sent)."""
    latencies: list[float] = []
    failures = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        headers = {"Authorization": f"Bearer {token}"}

        async def worker(count: int) -> None:
            nonlocal failures
            for _ in range(count):
                started = time.perf_counter()
                try:
                    response = await client.get("/api/tasks", headers=headers)
                except httpx.TransportError:
                    failures += 1
                    continue
                if response.status_code != 200:
                    failures += 1
                    continue
                latencies.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(worker(5) for _ in range(concurrency)))  # warm-up
        latencies.clear()
        failures = 0
        started = time.perf_counter()
        await asyncio.gather(*(worker(max(1, requests // concurrency)) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies, failures


@contextmanager
def database(backend: str, folder: str) -> Iterator[str]:
    """An empty database's URL: a SQLite file in `folder`, or a PostgreSQL database."""
    if backend == "sqlite":
        yield f"sqlite:///{folder}/bench.db"
        return
    name = f"taskapi_bench_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(False)
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(
    *,
    requests: int,
    rounds: int,
    backend: str = "sqlite",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Both servers, every concurrency, `rounds` alternating measurements per cell."""
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        env = {
            **os.environ,
            "PYTHONPATH": f"{ROOT / 'shared'}{os.pathsep}{ROOT}",
            "STAGE": "local",
            "DATABASE_URL": stack.enter_context(database(backend, folder)),
            "BCRYPT_ROUNDS": "4",
            "LOG_LEVEL": "WARNING",
            "CORS_ORIGINS": "",
        }
        subprocess.run(
            [ROOT / ".venv/bin/alembic", "upgrade", "head"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        local_port, direct_port = free_port(), free_port()
        # Both at uvicorn's warning level: neither logs a line per request.
        local = [
            *(sys.executable, "-m", "localapi", "--port", str(local_port)),
            *("--log-level", "warning"),
        ]
        direct = [
            *(sys.executable, "-m", "uvicorn", "app:app", "--port", str(direct_port)),
            *("--app-dir", str(ROOT / "functions" / "tasks"), "--log-level", "warning"),
        ]
        urls = {
            LOCAL: stack.enter_context(server(local, env, local_port)),
            DIRECT: stack.enter_context(server(direct, env, direct_port)),
        }
        signup = httpx.post(
            f"{urls[LOCAL]}/api/auth/signup",
            json={"email": "bench@example.com", "name": "Bench", "password": "bench-password"},
        ).json()
        token = signup["access_token"]
        for number in range(20):
            httpx.post(
                f"{urls[LOCAL]}/api/tasks",
                json={"title": f"Task {number}", "description": "benchmark"},
                headers={"Authorization": f"Bearer {token}"},
            ).raise_for_status()
        cells: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in urls}
        ratios: dict[int, dict[str, Any]] = {}
        for concurrency in CONCURRENCY:
            log(f"local server: {concurrency} clients")
            taken: dict[str, list[tuple[float, list[float], int]]] = {name: [] for name in urls}
            for round_number in range(rounds):
                order = list(urls) if round_number % 2 == 0 else list(reversed(urls))
                for name in order:
                    taken[name].append(
                        asyncio.run(measure(urls[name], token, concurrency, requests))
                    )
            for name, measured in taken.items():
                latencies = [value for _, values, _ in measured for value in values]
                seconds = sum(elapsed for elapsed, _, _ in measured)
                cells[name][concurrency] = {
                    "requests_per_second": len(latencies) / seconds,
                    "p50_ms": statistics.median(latencies),
                    "p99_ms": statistics.quantiles(latencies, n=100, method="inclusive")[98],
                    "requests": len(latencies),
                    "failed_requests": sum(failures for _, _, failures in measured),
                    "round_requests_per_second": [
                        len(values) / elapsed for elapsed, values, _ in measured
                    ],
                }
            each = [
                local / direct
                for local, direct in zip(
                    cells[LOCAL][concurrency]["round_requests_per_second"],
                    cells[DIRECT][concurrency]["round_requests_per_second"],
                    strict=True,
                )
            ]
            ratios[concurrency] = {"median": statistics.median(each), "rounds": each}
    return {
        "requests_per_cell": requests,
        "rounds": rounds,
        "backend": backend,
        "servers": cells,
        "ratios": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    results = run(requests=args.requests, rounds=args.rounds, backend=args.backend)
    print(
        f"GET /api/tasks (20 tasks, {args.backend}), {args.requests} requests per cell,"
        f" {args.rounds} rounds; req/s (p99 ms)"
    )
    print(f"{'server':<32}" + "".join(f"{f'{c} clients':>20}" for c in CONCURRENCY))
    for name, cells in results["servers"].items():
        texts = [f"{c['requests_per_second']:.0f} ({c['p99_ms']:.1f})" for c in cells.values()]
        row = "".join(f"{text:>20}" for text in texts)
        print(f"{name:<32}{row}")
    medians = "".join(f"{ratio['median']:>20.2f}" for ratio in results["ratios"].values())
    print(f"{'localapi / uvicorn, median':<32}{medians}")
    for concurrency, ratio in results["ratios"].items():
        rounds = ", ".join(f"{value:.2f}" for value in ratio["rounds"])
        print(f"  {concurrency} clients, each round: {rounds}")


if __name__ == "__main__":
    main()
