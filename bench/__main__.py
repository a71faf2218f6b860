"""`make bench`: every benchmark, a table on stdout and `bench/results.json`.

    .venv/bin/python -m bench            # the full run (about 10 minutes on 2 cores)
    .venv/bin/python -m bench --smoke    # a minute: checks that the code runs, not its figures

Every figure comes with a baseline measured in the same run, interleaved with it, and the
ratio between them: on a shared machine only the ratios mean something.
"""

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import artifacts, cold_start, login, pooler, quota, report, runtime_cold_start, warm
from bench.database import bench_database, postgres_available, scratch_database
from bench.localapi_throughput import CONCURRENCY
from bench.localapi_throughput import run as local_server

RESULTS = Path(__file__).resolve().parent / "results.json"
# Cold starts per subject: the issue asks for the median of at least 7. On this shared
# 2-core machine a run lands in a quiet spell or in a busy one (up to 1.5 times slower),
# and with 7 runs a subject's median and its baseline's can land in different ones;
# 11 narrow that for 60 to 90 s more (16 to 21 s a round).
COLD_START_RUNS = 11
# In the runtime interface client a run also starts the client and makes two HTTP calls;
# 7 rounds keep the section near a minute.
RUNTIME_COLD_START_RUNS = 7
# A connection per request through PgBouncer costs a TLS handshake and SCRAM each time
# (tens of ms on 2 cores): 300 calls per mode keep the section near a minute, and the
# modes' ratio is several times over, far beyond what more calls would settle.
POOLER_INVOCATIONS = 300


def machine() -> dict[str, Any]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": model,
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny counts, no build")
    parser.add_argument("--output", type=Path, help=f"JSON results (default: {RESULTS})")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    smoke: bool = args.smoke
    output: Path | None = args.output or (None if smoke else RESULTS)
    log = artifacts.Log()
    started = time.perf_counter()
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "smoke" if smoke else "full",
        "machine": machine(),
        "python": {"runner": platform.python_version()},
    }
    built = artifacts.build(smoke=smoke, log=log)
    results["python"]["subjects"] = _version(built.python)
    results["python"]["subjects_executable"] = built.python
    results["artifacts"] = (
        "built by shared/Makefile for x86_64 (the deployable layer is arm64)"
        if built.built
        else "sources in place (no build)"
    )
    backends = ["sqlite"]
    if not args.skip_postgres and postgres_available():
        backends.append("postgresql")
    else:
        log("PostgreSQL is not reachable: SQLite only")
    results["warm"] = {}
    with tempfile.TemporaryDirectory() as folder:
        for backend in backends:
            with bench_database(backend, Path(folder) / backend) as database:
                if backend == backends[-1]:
                    # Cold starts connect to the production-like database.
                    log(f"cold starts on {backend}")
                    results["cold_start"] = cold_start.measure(
                        built, database, runs=1 if smoke else COLD_START_RUNS, log=log, smoke=smoke
                    )
                    costs = (4,) if smoke else (10, 12)
                    log(f"login at BCRYPT_ROUNDS {' and '.join(map(str, costs))}")
                    results["login"] = [
                        login.measure(built, database, rounds=rounds, repeats=1 if smoke else 5)
                        for rounds in costs
                    ]
                    log(f"cold starts in the runtime interface client on {backend}")
                    results["runtime_cold_start"] = runtime_cold_start.measure(
                        built,
                        database,
                        runs=1 if smoke else RUNTIME_COLD_START_RUNS,
                        log=log,
                        smoke=smoke,
                    )
                if backend == "postgresql":
                    log("through PgBouncer and direct, PostgreSQL")
                    results["pooler"] = pooler.measure(
                        built,
                        database,
                        invocations=20 if smoke else POOLER_INVOCATIONS,
                        warmup=5 if smoke else 20,
                    )
                log(f"warm latency on {backend}")
                results["warm"][backend] = warm.measure(
                    built, database, invocations=20 if smoke else 2000, warmup=5 if smoke else 50
                )
    if "postgresql" in backends:
        log("reads at the quota, PostgreSQL")
        with scratch_database("postgresql", tasks=0) as database:
            results["quota"] = quota.measure(
                built,
                database,
                sizes=quota.SMOKE_SIZES if smoke else quota.SIZES,
                invocations=5 if smoke else 100,
                warmup=2 if smoke else 10,
            )
    log("local server against uvicorn")
    try:
        results["local_server"] = local_server(
            seconds=1 if smoke else 3,
            rounds=1 if smoke else 3,
            # The smoke run's one cell: the code is the same at any count of clients.
            concurrencies=(8,) if smoke else CONCURRENCY,
            log=log,
        )
    except Exception as error:  # keep the other sections' results
        log(f"local server benchmark failed: {error!r}")
        results["local_server"] = {"error": repr(error)}
    results["size"] = {
        "zip_mib": {name: size / artifacts.MIB for name, size in built.zip_bytes.items()},
        "peak_rss_mib": {
            name: figures["peak_rss_mib"]
            for name, figures in results["cold_start"]["subjects"].items()
            if "(sources)" not in name
        },
    }
    results["targets"] = report.targets(results)
    results["machine"]["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    results["seconds"] = round(time.perf_counter() - started, 1)
    print(report.table(results))
    if output is not None:
        output.write_text(json.dumps(results, indent=2) + "\n")
        log(f"wrote {output}")
    if "error" in results["local_server"]:
        raise SystemExit(1)


def _version(python: str) -> str:
    import subprocess

    return subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


if __name__ == "__main__":
    main()
