"""Throughput of the local server (`python -m localapi`) against uvicorn serving the tasks
function's FastAPI app directly, at 1, 8 and 32 concurrent clients.

    PYTHONPATH=shared:. .venv/bin/python -m bench.localapi_throughput [--seconds 3]
        [--rounds 3] [--backend sqlite|postgresql] [--client wrk|httpx]

(`make bench` runs it as part of the whole benchmark, on SQLite.) Both servers run at once
on the same fresh, migrated database (a SQLite file, or a PostgreSQL database of its own,
dropped afterwards) and answer the same authenticated `GET /api/tasks` (a JWT check, one
query, 20 tasks serialised); the cells alternate between them, round by round, so that
load elsewhere on the machine hits both alike. Each round measures both servers back to
back, so each round gives a ratio; the median of those is the figure to read (a busy spell
on a shared machine spoils one round, not the result).

The load comes from wrk (Debian's `wrk`, which `.ci/run` installs): one thread of C on
epoll, which takes a few per cent of a core at these rates. The machine's cores are shared
between client and servers, and a Python client (httpx, the fallback where wrk is missing,
with a warning) takes about a core of its own: on 2 cores that left the local server's
worker processes no core to scale onto, so the figures compared the client's share, not
the servers.
"""

import argparse
import asyncio
import os
import re
import shutil
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
from localapi.server import free_port, running

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = (1, 8, 32)
LOCAL, DIRECT = "localapi (handler via Mangum)", "uvicorn app:app (direct)"


@contextmanager
def server(command: list[str], env: dict[str, str], port: int) -> Iterator[tuple[str, int]]:
    """The server's URL and process id, once it answers."""
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "server.log"
        with running(command, ready_url=f"{url}/api/tasks", log=log, env=env, cwd=ROOT) as process:
            yield url, process.pid


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and all its descendants (the local server's
    workers), from /proc; 0 where there is no /proc."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for entry in Path("/proc").glob("[0-9]*") if Path("/proc").is_dir() else ():
        try:
            # The command name (field 2) may hold spaces: the fields after it are fixed.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    family, added = {pid}, True
    while added:
        more = {child for child, parent in parents.items() if parent in family} - family
        family |= more
        added = bool(more)
    return sum(times.get(member, 0.0) for member in family)


# A cell's figures: seconds taken, requests answered with 200, latency percentiles (ms),
# and requests that failed (counted, not fatal: on a loaded machine a keep-alive
# connection can close under a request that waited too long to be sent).
Cell = dict[str, float]


async def measure_httpx(
    url: str, token: str, concurrency: int, seconds: float, *, warmed: Callable[[], None]
) -> Cell:
    """The fallback client: `concurrency` asyncio workers on keep-alive connections;
    `warmed` is called between the warm-up and the measured run."""
    latencies: list[float] = []
    failures = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        headers = {"Authorization": f"Bearer {token}"}

        async def worker(deadline: float) -> None:
            nonlocal failures
            while time.perf_counter() < deadline:
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

        await asyncio.gather(*(worker(time.perf_counter() + 0.2) for _ in range(concurrency)))
        latencies.clear()
        failures = 0
        warmed()
        started = time.perf_counter()
        await asyncio.gather(*(worker(started + seconds) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    percentiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "seconds": elapsed,
        "requests": len(latencies),
        "p50_ms": percentiles[49],
        "p99_ms": percentiles[98],
        "failed_requests": failures,
    }


_DURATION = re.compile(r"^\s*(\d+)%\s+([\d.]+)(us|ms|s)\s*$")
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(output: str) -> Cell:
    """wrk's report (with `--latency`): requests, seconds, p50 and p99, and failures
    (non-2xx answers and socket errors)."""
    done = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", output, re.MULTILINE)
    if done is None:
        raise ValueError(f"not a wrk report:\n{output}")
    unit = done.group(3)
    seconds = float(done.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]
    percentiles = {}
    for line in output.splitlines():
        match = _DURATION.match(line)
        if match:
            percentiles[int(match.group(1))] = float(match.group(2)) * _UNITS_MS[match.group(3)]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    refused = int(non_2xx.group(1)) if non_2xx else 0
    failures = refused + (sum(int(count) for count in errors.groups()) if errors else 0)
    return {
        "seconds": seconds,
        "requests": int(done.group(1)) - refused,
        "p50_ms": percentiles[50],
        "p99_ms": percentiles[99],
        "failed_requests": failures,
    }


def measure_wrk(
    url: str,
    token: str,
    concurrency: int,
    seconds: float,
    *,
    warmed: Callable[[], None] = lambda: None,
) -> Cell:
    """One wrk thread holding `concurrency` keep-alive connections: a second of warm-up
    (every connection made, every worker warm), `warmed()`, then `seconds` measured."""
    command = [
        *("wrk", "--threads", "1", "--connections", str(concurrency), "--latency"),
        *("--header", f"Authorization: Bearer {token}", "--timeout", "30s"),
    ]
    subprocess.run([*command, "--duration", "1s", f"{url}/api/tasks"], capture_output=True)
    warmed()
    completed = subprocess.run(
        [*command, "--duration", f"{max(1, round(seconds))}s", f"{url}/api/tasks"],
        capture_output=True,
        text=True,
        check=True,
    )
    return parse_wrk(completed.stdout)


def measure(
    url: str, pid: int, token: str, concurrency: int, seconds: float, *, client: str
) -> Cell:
    """One cell, with the CPU time the server's processes spent per request answered."""
    before: list[float] = []

    def warmed() -> None:
        before.append(cpu_seconds(pid))

    if client == "wrk":
        cell = measure_wrk(url, token, concurrency, seconds, warmed=warmed)
    else:
        cell = asyncio.run(measure_httpx(url, token, concurrency, seconds, warmed=warmed))
    used = cpu_seconds(pid) - before[0]
    cell["server_cpu_us_per_request"] = used * 1e6 / max(1, cell["requests"])
    return cell


def load_client(log: Callable[[str], None]) -> str:
    if shutil.which("wrk"):
        return "wrk"
    log("wrk is not installed (Debian: apt-get install wrk): the load comes from httpx,")
    log("which takes about a core of its own, so the ratios understate the local server")
    return "httpx"


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
    seconds: float,
    rounds: int,
    backend: str = "sqlite",
    client: str | None = None,
    concurrencies: tuple[int, ...] = CONCURRENCY,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Both servers, each of `concurrencies`, `rounds` alternating measurements of
    `seconds` per cell; the load from `client` (wrk where installed, else httpx)."""
    client = client or load_client(log)
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
        servers = {
            LOCAL: stack.enter_context(server(local, env, local_port)),
            DIRECT: stack.enter_context(server(direct, env, direct_port)),
        }
        urls = {name: url for name, (url, _) in servers.items()}
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
        for concurrency in concurrencies:
            log(f"local server: {concurrency} clients")
            taken: dict[str, list[Cell]] = {name: [] for name in urls}
            for round_number in range(rounds):
                order = list(urls) if round_number % 2 == 0 else list(reversed(urls))
                for name in order:
                    taken[name].append(
                        measure(*servers[name], token, concurrency, seconds, client=client)
                    )
            for name, measured in taken.items():
                per_round = [cell["requests"] / cell["seconds"] for cell in measured]
                cells[name][concurrency] = {
                    "requests_per_second": statistics.median(per_round),
                    # The median round's percentiles: wrk reports percentiles, not samples.
                    "p50_ms": statistics.median(cell["p50_ms"] for cell in measured),
                    "p99_ms": statistics.median(cell["p99_ms"] for cell in measured),
                    "requests": sum(int(cell["requests"]) for cell in measured),
                    "failed_requests": sum(int(cell["failed_requests"]) for cell in measured),
                    # All the server's processes: the local server's and its workers'.
                    "server_cpu_us_per_request": statistics.median(
                        cell["server_cpu_us_per_request"] for cell in measured
                    ),
                    "round_requests_per_second": per_round,
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
        "client": client,
        "seconds_per_cell": seconds,
        "rounds": rounds,
        "backend": backend,
        "servers": cells,
        "ratios": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    # httpx: the client of the runs before wrk, to compare the two instruments.
    parser.add_argument("--client", choices=["wrk", "httpx"])
    args = parser.parse_args()
    results = run(
        seconds=args.seconds, rounds=args.rounds, backend=args.backend, client=args.client
    )
    print(
        f"GET /api/tasks (20 tasks, {args.backend}), {args.seconds:g} s per cell,"
        f" {args.rounds} rounds, load from {results['client']}; req/s (p99 ms)"
    )
    print(f"{'server':<32}" + "".join(f"{f'{c} clients':>20}" for c in CONCURRENCY))
    for name, cells in results["servers"].items():
        texts = [f"{c['requests_per_second']:.0f} ({c['p99_ms']:.1f})" for c in cells.values()]
        row = "".join(f"{text:>20}" for text in texts)
        print(f"{name:<32}{row}")
    medians = "".join(f"{ratio['median']:>20.2f}" for ratio in results["ratios"].values())
    print(f"{'localapi / uvicorn, median':<32}{medians}")
    for name, cells in results["servers"].items():
        used = "".join(f"{c['server_cpu_us_per_request']:>20.0f}" for c in cells.values())
        print(f"{'CPU µs/request, ' + name.split(' ')[0]:<32}{used}")
    for concurrency, ratio in results["ratios"].items():
        rounds = ", ".join(f"{value:.2f}" for value in ratio["rounds"])
        print(f"  {concurrency} clients, each round: {rounds}")


if __name__ == "__main__":
    main()
