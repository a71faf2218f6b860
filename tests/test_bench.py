"""The benchmark's verdicts: each target is the ratio of a figure to the baseline measured
in the same run, compared in the right direction. (`make bench-smoke` runs the benchmark
code itself; timings are never asserted.)"""

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bench.localapi_throughput import measure_wrk, parse_wrk
from bench.report import table, targets


def results(
    *, tasks_cold: float, list_p50: float, local_rps: float, lean_p50: float = 1.6
) -> dict[str, Any]:
    def cold(wall: float) -> dict[str, Any]:
        return {
            "request": "GET /",
            "runs": 7,
            "wall_ms": wall,
            "import_ms": wall * 0.8,
            "first_request_ms": wall * 0.2,
            "peak_rss_mib": 90.0,
            "all_wall_ms": [wall, wall * 1.5],
        }

    def warm(p50: float, p99: float) -> dict[str, float]:
        return {"p50_ms": p50, "p95_ms": p99 * 0.8, "p99_ms": p99, "mean_ms": p50}

    servers = {
        "localapi": {
            c: {"requests_per_second": local_rps, "p50_ms": 5, "p99_ms": 9} for c in (1, 8, 32)
        },
        "uvicorn": {
            c: {"requests_per_second": 100.0, "p50_ms": 5, "p99_ms": 9} for c in (1, 8, 32)
        },
    }
    subjects = {
        "baseline: minimal app": cold(1000),
        "baseline: bare app": cold(500),
        "tasks": cold(tasks_cold),
        "health": cold(520),
        "tasks (sources)": cold(tasks_cold * 2.5),
        "baseline: lean FastAPI + Core": cold(900),
        "baseline: Powertools": cold(950),
        "baseline: Chalice": cold(700),
    }
    return {
        "mode": "full",
        "date": "2026-11-26T13:00:00+00:00",
        "python": {"subjects": "3.13.0"},
        "artifacts": "built",
        "machine": {"cpus": 2, "load_average_at_start": [1], "load_average_at_end": [1]},
        "cold_start": {"backend": "sqlite", "subjects": subjects},
        "warm": {
            "sqlite": {
                "invocations": 2000,
                "subjects": {
                    "GET /api/tasks": warm(list_p50, list_p50 * 4),
                    "GET /health": warm(1.0, 2.0),
                    "baseline: minimal GET /api/tasks": warm(2.0, 4.0),
                    "baseline: bare GET /health": warm(1.0, 2.0),
                    "baseline: lean FastAPI + Core GET /api/tasks": warm(lean_p50, 2.0),
                    "baseline: Powertools GET /api/tasks": warm(1.5, 2.0),
                    "baseline: Chalice GET /api/tasks": warm(1.2, 2.0),
                },
            }
        },
        "login": [
            {
                "rounds": 10,
                "login_ms": 70.0,
                "checkpw_ms": 60.0,
                "ratio": 70 / 60,
                "first_login_ms": 90.0,
                "bcrypt_costs_per_login": [10],
                "bcrypt_costs_first_login": [4, 10],
            }
        ],
        "local_server": {
            "client": "wrk",
            "seconds_per_cell": 3,
            "rounds": 2,
            "servers": servers,
        },
        "size": {"zip_mib": {"layer (arm64, deployed)": 19.5}, "peak_rss_mib": {"tasks": 90.0}},
        "seconds": 300,
    }


def verdicts(checks: list[dict[str, Any]]) -> dict[str, tuple[float | None, bool | None]]:
    return {check["target"]: (check["ratio"], check["met"]) for check in checks}


def test_targets_are_ratios_against_their_baselines() -> None:
    checks = verdicts(targets(results(tasks_cold=1050, list_p50=1.8, local_rps=105)))
    assert checks["cold start tasks / minimal app"] == (1.05, True)
    assert checks["cold start GET /health / bare FastAPI + Mangum"] == (1.04, True)
    assert checks["bytecode speed-up, tasks (sources / shipped bytecode)"] == (2.5, True)
    assert checks["warm GET /api/tasks p50 / minimal route p50 (sqlite)"] == (0.9, True)
    assert checks["warm GET /api/tasks p99 / its p50 (sqlite)"] == (4.0, False)
    assert checks["warm GET /api/tasks p50 / lean FastAPI + Core p50 (sqlite)"] == (1.125, True)
    # Reported beside the targets, without a verdict of its own (issue 19).
    assert checks["warm GET /api/tasks p50 / Powertools p50 (sqlite)"] == (1.2, None)
    assert checks["local server req/s at 8 clients / uvicorn"] == (1.05, True)
    assert checks["local server req/s at 32 clients / uvicorn"] == (1.05, True)
    assert checks["layer (arm64, deployed) zip, MiB / 20 MiB"] == (0.975, True)


def test_the_local_server_is_judged_on_the_median_of_its_rounds() -> None:
    run = results(tasks_cold=1000, list_p50=1.8, local_rps=90)
    # One round spoilt by a busy spell: its ratio does not decide, the median does.
    run["local_server"]["ratios"] = {
        clients: {"median": 1.1, "rounds": [1.1, 0.4, 1.2]} for clients in (1, 8, 32)
    }
    checks = verdicts(targets(run))
    assert checks["local server req/s at 8 clients / uvicorn"] == (1.1, True)
    assert checks["local server req/s at 32 clients / uvicorn"] == (1.1, True)
    for name, cpu in (("localapi", 900), ("uvicorn", 500)):
        for cell in run["local_server"]["servers"][name].values():
            cell["server_cpu_us_per_request"] = cpu
    run["targets"] = targets(run)
    printed = table(run)
    assert "localapi / uvicorn, median of the rounds" in printed
    cpu_rows = [line.split() for line in printed.splitlines() if "CPU µs per request" in line]
    assert [row[-4:] for row in cpu_rows] == [
        ["localapi", "900", "900", "900"],
        ["uvicorn", "500", "500", "500"],
    ]


def test_missed_targets_are_reported_as_missed() -> None:
    run = results(tasks_cold=1150, list_p50=2.2, local_rps=70, lean_p50=1.1)
    checks = verdicts(targets(run))
    # Issue 19's limit for the tasks function is 1.1; the others keep 1.2.
    assert checks["cold start tasks / minimal app"] == (1.15, False)
    assert checks["warm GET /api/tasks p50 / lean FastAPI + Core p50 (sqlite)"] == (2.0, False)
    assert checks["warm GET /api/tasks p50 / minimal route p50 (sqlite)"] == (1.1, False)
    assert checks["local server req/s at 8 clients / uvicorn"] == (0.7, False)
    assert checks["local server req/s at 32 clients / uvicorn"] == (0.7, False)
    run["targets"] = targets(run)
    verdict_lines = table(run).split("\nTargets\n", 1)[1].splitlines()
    row = next(line for line in verdict_lines if line.startswith("cold start tasks"))
    assert row.split()[-3:] == ["<=", "1.1", "missed"]
    row = next(line for line in verdict_lines if "/ Powertools p50" in line)
    assert row.split()[-2:] == ["reported", "-"]


def test_the_peers_stand_beside_the_list() -> None:
    run = results(tasks_cold=1000, list_p50=2.4, local_rps=90)
    run["targets"] = targets(run)
    side = table(run).split("beside the peers", 1)[1].split("\n\n", 1)[0].splitlines()
    chalice = next(line for line in side if line.startswith("baseline: Chalice"))
    # cold ms, sqlite p50, p99, p50 x lean
    assert chalice.split()[-4:] == ["700", "1.20", "2.00", "0.75"]
    listing = next(line for line in side if line.startswith("GET /api/tasks"))
    assert listing.split()[-4:] == ["1000", "2.40", "9.60", "1.50"]


# A report of wrk 4.1 (Debian's), as the local-server benchmark reads it.
WRK_REPORT = """Running 1s test @ http://127.0.0.1:8765/api/tasks
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   603.58us  292.00us   5.08ms   85.48%
    Req/Sec     3.12k    63.95     3.18k    72.73%
  Latency Distribution
     50%  561.00us
     75%  708.00us
     90%    0.88ms
     99%    1.28s
  3418 requests in 1.10s, 1.70MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 18
Requests/sec:   3107.25
Transfer/sec:      1.54MB
"""


def test_wrk_reports_are_read_in_milliseconds() -> None:
    cell = parse_wrk(WRK_REPORT)
    assert cell == {
        "seconds": 1.1,
        "requests": 3400,  # answered with 2xx
        "p50_ms": 0.561,
        "p99_ms": 1280.0,
        "failed_requests": 21,  # 18 non-2xx, 3 socket errors
    }
    with pytest.raises(ValueError, match="not a wrk report"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


@contextmanager
def tasks_stand_in(token: str) -> Iterator[str]:
    """An HTTP server that answers `GET /api/tasks` with 200 for `token` alone."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without this, delayed ACKs hold each
        # keep-alive answer back by 40 ms.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            ok = self.path == "/api/tasks" and self.headers["authorization"] == f"Bearer {token}"
            body = b'{"items": []}' if ok else b'{"detail": "Not authenticated"}'
            self.send_response(200 if ok else 401)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (.ci/run installs it)"
)
def test_the_local_server_benchmark_drives_wrk() -> None:
    with tasks_stand_in("the-token") as url:
        answered = measure_wrk(url, "the-token", 2, 1)
        refused = measure_wrk(url, "another-token", 2, 1)
    assert answered["requests"] > 100
    assert answered["failed_requests"] == 0
    assert 0 < answered["p50_ms"] <= answered["p99_ms"]
    # wrk ran its whole duration (1 s); a busy machine may only make it longer.
    assert answered["seconds"] >= 0.9
    # Every answer a 401: none counts as served, each as a failure.
    assert refused["requests"] == 0
    assert refused["failed_requests"] > 100


def test_the_production_path_rows_are_judged() -> None:
    run = results(tasks_cold=1000, list_p50=1.8, local_rps=100)
    run["runtime_cold_start"] = {
        "backend": "postgresql",
        "runs": 7,
        "subjects": {
            "baseline: minimal app": {"wall_ms": 1000.0, "all_wall_ms": [1000.0]},
            "baseline: bare app": {"wall_ms": 500.0, "all_wall_ms": [500.0]},
            "tasks": {"wall_ms": 1200.0, "all_wall_ms": [1200.0]},
            "auth": {"wall_ms": 1050.0, "all_wall_ms": [1050.0]},
            "health": {"wall_ms": 540.0, "all_wall_ms": [540.0]},
        },
    }

    def pooled(p50: float) -> dict[str, float]:
        return {
            "p50_ms": p50,
            "p95_ms": p50,
            "p99_ms": p50 * 2,
            "mean_ms": p50,
            "p50_x_direct": p50,
        }

    modes = {
        "direct, pool of one": pooled(1.0),
        "direct, connection per request": pooled(3.0),
        "PgBouncer, pool of one": pooled(1.5),
        "PgBouncer, connection per request": pooled(2.5),
    }
    run["pooler"] = {
        "backend": "postgresql",
        "invocations": 10,
        "requests": {"GET /api/tasks": modes, "POST /api/tasks": modes},
    }
    run["quota"] = {
        "backend": "postgresql",
        "sizes": [100, 1000, 10000],
        "invocations": 10,
        "growth_limit": 1.5,
        "reads": {
            "first page": {
                "p50_ms": {"100": 2.0, "1000": 2.1, "10000": 2.4},
                "failed": {},
                "growth": 1.2,
            },
            "total": {
                "p50_ms": {"100": 2.0, "1000": 4.0, "10000": 20.0},
                "failed": {},
                "growth": 10.0,
            },
            "worst search": {
                "p50_ms": {"100": 50.0, "1000": None, "10000": None},
                "failed": {"1000": 503, "10000": 503},
                "growth": None,
            },
        },
    }
    checks = verdicts(targets(run))
    assert checks["cold start in the runtime client, tasks / minimal app"] == (1.2, False)
    assert checks["cold start in the runtime client, auth / minimal app"] == (1.05, True)
    assert checks["cold start in the runtime client, health / bare app"] == (1.08, True)
    # The template deploys a pool of one: 3.0 ms against 5.0 for a connection per request.
    (pooler,) = (name for name in checks if name.startswith("through PgBouncer"))
    assert "pool of one (the template's default) / connection per request" in pooler
    assert checks[pooler] == (0.6, True)
    assert checks["at the quota, first page p50: 10,000 tasks / 100"] == (1.2, True)
    assert checks["at the quota, total p50: 10,000 tasks / 100"] == (10.0, False)
    assert checks["at the quota, worst search p50: 10,000 tasks / 100"] == (None, False)
    run["targets"] = targets(run)
    printed = table(run)
    assert "PgBouncer, connection per request" in printed
    quota_rows = printed.split("At the quota", 1)[1].split("\n\n", 1)[0].splitlines()
    search = next(line for line in quota_rows if line.startswith("worst search"))
    assert search.split()[-4:] == ["50.00", "503", "503", "-"]


def test_performance_md_shows_the_table_of_the_saved_results() -> None:
    """docs/PERFORMANCE.md's figures are what `python -m bench.report bench/results.json`
    prints today: a new `make bench` run must be copied in."""
    root = Path(__file__).resolve().parent.parent
    doc = (root / "docs" / "PERFORMANCE.md").read_text()
    start = "<!-- python -m bench.report bench/results.json -->\n"
    shown = doc[doc.index(start) + len(start) : doc.index("\n<!-- end of python -m bench.report")]
    results = json.loads((root / "bench" / "results.json").read_text())
    assert shown == table(results, markdown=True).strip("\n")


@pytest.mark.parametrize(
    ("tool", "columns"),
    [("bench.batch", 3), ("bench.password_reset", 5)],
)
def test_the_standalone_benchmarks_run(tool: str, columns: int) -> None:
    """The tools docs/PERFORMANCE.md quotes outside `make bench`, on one round: each
    prints its table (they check their own answers: 201s, 202s, the mails sent)."""
    root = Path(__file__).resolve().parent.parent
    completed = subprocess.run(  # noqa: S603 (this interpreter, a module of the project)
        [sys.executable, "-m", tool, "--rounds", "1"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": f"{root / 'shared'}:{root}"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = [line.strip("|").split("|") for line in completed.stdout.splitlines()]
    measured = [row for row in rows if row[0].strip() in ("sqlite", "postgresql")]
    assert measured, completed.stdout
    for row in measured:
        assert len(row) == columns, row
        # Numbers (the reset's first column is the answer time, 0 for none), a ratio last.
        assert all(float(cell) >= 0 for cell in row[1:]), row
        assert float(row[-1]) > 0, row
