"""Throughput of the local server (`python -m localapi`) against uvicorn serving the tasks
function's FastAPI app directly, at 1, 8 and 32 concurrent clients.

    PYTHONPATH=shared:. .venv/bin/python bench/localapi_throughput.py [--requests 600]

Both servers run on a fresh, migrated SQLite file and answer the same authenticated
`GET /api/tasks` (a JWT check, two queries, 20 tasks serialised). The client is one
asyncio process with httpx; the machine's cores are shared between client and server,
so the figures compare the two servers, not what Lambda would do.
"""

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


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
        process.terminate()
        process.wait(timeout=10)


async def measure(url: str, token: str, concurrency: int, requests: int) -> tuple[float, float]:
    """Requests per second and the median latency in milliseconds."""
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        headers = {"Authorization": f"Bearer {token}"}

        async def worker(count: int) -> None:
            for _ in range(count):
                started = time.perf_counter()
                response = await client.get("/api/tasks", headers=headers)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text}")

        await asyncio.gather(*(worker(10) for _ in range(concurrency)))  # warm-up
        latencies.clear()
        started = time.perf_counter()
        await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, statistics.median(latencies) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        env = {
            **os.environ,
            "PYTHONPATH": f"{ROOT / 'shared'}{os.pathsep}{ROOT}",
            "STAGE": "local",
            "DATABASE_URL": f"sqlite:///{folder}/bench.db",
            "BCRYPT_ROUNDS": "4",
            "LOG_LEVEL": "WARNING",
            "CORS_ORIGINS": "",
        }
        subprocess.run(
            [ROOT / ".venv/bin/alembic", "upgrade", "head"], cwd=ROOT, env=env, check=True
        )
        local_port, direct_port = free_port(), free_port()
        local = [sys.executable, "-m", "localapi", "--port", str(local_port)]
        direct = [
            *(sys.executable, "-m", "uvicorn", "app:app", "--port", str(direct_port)),
            *("--app-dir", str(ROOT / "functions" / "tasks")),
        ]
        results: dict[str, dict[int, tuple[float, float]]] = {}
        with server(local, env, local_port) as local_url:
            signup = httpx.post(
                f"{local_url}/api/auth/signup",
                json={"email": "bench@example.com", "name": "Bench", "password": "bench-password"},
            ).json()
            token = signup["access_token"]
            for number in range(20):
                httpx.post(
                    f"{local_url}/api/tasks",
                    json={"title": f"Task {number}", "description": "benchmark"},
                    headers={"Authorization": f"Bearer {token}"},
                ).raise_for_status()
            results["localapi (handler via Mangum)"] = {
                c: asyncio.run(measure(local_url, token, c, args.requests)) for c in (1, 8, 32)
            }
        with server(direct, env, direct_port) as direct_url:
            results["uvicorn app:app (direct)"] = {
                c: asyncio.run(measure(direct_url, token, c, args.requests)) for c in (1, 8, 32)
            }
    print(f"GET /api/tasks (20 tasks), {args.requests} requests per cell; req/s (median ms)")
    print(f"{'server':<32}" + "".join(f"{f'{c} clients':>20}" for c in (1, 8, 32)))
    for name, cells in results.items():
        row = "".join(f"{f'{rate:.0f} ({median:.1f})':>20}" for rate, median in cells.values())
        print(f"{name:<32}{row}")


if __name__ == "__main__":
    main()
