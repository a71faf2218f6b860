"""Cold starts: a fresh interpreter per run, laid out as Lambda lays a function out (task
root as the working directory and first on `sys.path`, the layer's `python/` on
`PYTHONPATH`, `PYTHONDONTWRITEBYTECODE=1`), importing the handler and serving its first
request, database connection and query included.

The wall time runs from starting the process to the child reporting its response (so
the interpreter's own start-up is in it, as it is on Lambda), not to its exit; the CPU time
is the child's own up to the same point. Subjects run interleaved, one round at a time, so
that a burst of load elsewhere on the machine hits the subject and its baseline alike.

`make bench` runs every subject; some of them alone, on what it last built (build/bench):

    .venv/bin/python -m bench.cold_start --runs 21 tasks auth health "baseline: minimal app" \
        "baseline: bare app"
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.artifacts import BASELINES, Artifacts, Log, last_build
from bench.database import SUBJECT_SETTINGS, BenchDatabase, scratch_database
from bench.events import rest_event
from localapi.events import http_event

CHILD = (Path(__file__).resolve().parent / "cold_start_child.py").read_text()


@dataclass(frozen=True)
class Subject:
    name: str
    function: str  # key of artifacts.task_roots
    handler: str
    request: str
    sources: bool = False  # the same code without shipped bytecode


# What a user would pick instead: each lists the same page as the tasks
# function, without authentication, on SQLAlchemy Core.
PEERS = (
    Subject("baseline: lean FastAPI + Core", "lean", "app:handler", "GET /api/tasks?user_id"),
    Subject("baseline: Powertools", "powertools", "app:handler", "GET /api/tasks?user_id"),
    Subject("baseline: Chalice", "chalice", "app:handler", "REST GET /api/tasks?user_id"),
)


def subjects(*, smoke: bool = False) -> list[Subject]:
    built = [
        Subject("tasks", "tasks", "app:handler", "GET /api/tasks"),
        Subject("auth", "auth", "app:handler", "GET /api/auth/me"),
        Subject("health", "health", "app:handler", "GET /health"),
        Subject("health /db", "health", "app:handler", "GET /health/db"),
        Subject("migrate", "migrate", "handler:handler", "current"),
    ]
    sources = [
        Subject(f"{s.name} (sources)", s.function, s.handler, s.request, sources=True)
        for s in built
    ]
    baselines = [
        Subject("baseline: minimal app", "minimal", "app:handler", "GET /api/tasks?user_id"),
        Subject("baseline: bare app", "bare", "app:handler", "GET /health"),
        *PEERS,
    ]
    if smoke:
        # One of each kind, enough to show the code works (the peers run in the warm
        # section as well).
        return [*baselines[:2], PEERS[0], built[0], built[2], sources[0]]
    return [*baselines, *built, *sources]


def subject_event(request: str, database: BenchDatabase) -> dict[str, Any]:
    auth = {"authorization": f"Bearer {database.token}"}
    events: dict[str, dict[str, Any]] = {
        "GET /api/tasks": http_event("GET", "/api/tasks", headers=auth),
        "GET /api/auth/me": http_event("GET", "/api/auth/me", headers=auth),
        "GET /health": http_event("GET", "/health"),
        "GET /health/db": http_event("GET", "/health/db"),
        "GET /api/tasks?user_id": http_event(
            "GET", "/api/tasks", query={"user_id": str(database.user_id)}
        ),
        "REST GET /api/tasks?user_id": rest_event(
            "GET", "/api/tasks", query={"user_id": str(database.user_id)}
        ),
        "current": {"action": "current"},
    }
    return events[request]


def run_once(
    artifacts: Artifacts,
    subject: Subject,
    database: BenchDatabase,
    *,
    python_options: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One cold start; with `python_options` (`-X importtime`) its stderr comes back too."""
    roots = artifacts.source_roots if subject.sources else artifacts.task_roots
    layer = str(artifacts.layer_sources if subject.sources else artifacts.layer)
    if subject.function in BASELINES:
        layer += os.pathsep + str(artifacts.baselines_layer)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "TZ": ":UTC",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": layer,
        **SUBJECT_SETTINGS,
        "DATABASE_URL": database.url,
        "BENCH_HANDLER": subject.handler,
        "BENCH_EVENT": json.dumps(subject_event(subject.request, database)),
        **({"BENCH_MARK_IMPORTED": "1"} if python_options else {}),
    }
    read_end, write_end = os.pipe()
    env["BENCH_FD"] = str(write_end)
    with tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(
            [artifacts.python, *python_options, "-c", CHILD],
            cwd=roots[subject.function],
            env=env,
            pass_fds=(write_end,),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        os.close(write_end)
        with os.fdopen(read_end, "rb") as reader:
            line = reader.readline()
        wall_ms = (time.perf_counter() - started) * 1000
        process.wait(timeout=60)
        if not line:
            stderr.seek(0)
            raise RuntimeError(f"{subject.name} failed:\n{stderr.read().decode()[-3000:]}")
        stderr.seek(0)
        errors = stderr.read().decode() if python_options else ""
    report: dict[str, Any] = json.loads(line)
    if report["status"] != 200:
        raise RuntimeError(f"{subject.name} answered {report['status']}")
    return {**report, "wall_ms": wall_ms, **({"stderr": errors} if python_options else {})}


def measure(
    artifacts: Artifacts,
    database: BenchDatabase,
    *,
    runs: int,
    log: Log,
    smoke: bool = False,
    names: Sequence[str] = (),
) -> dict[str, Any]:
    """Every subject's cold start, `runs` rounds; `names`: only these subjects."""
    chosen = subjects(smoke=smoke)
    if names:
        known = {subject.name: subject for subject in chosen}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise SystemExit(f"no such subject: {', '.join(unknown)}; choose from {list(known)}")
        chosen = [known[name] for name in names]
    samples: dict[str, list[dict[str, Any]]] = {subject.name: [] for subject in chosen}
    for round_number in range(runs):
        log(f"cold starts: round {round_number + 1} of {runs}")
        # Rotate the order, so that no subject always follows the same one.
        shift = round_number % len(chosen)
        for subject in chosen[shift:] + chosen[:shift]:
            samples[subject.name].append(run_once(artifacts, subject, database))
    results: dict[str, Any] = {}
    for subject in chosen:
        runs_of = samples[subject.name]
        results[subject.name] = {
            "request": subject.request,
            "runs": len(runs_of),
            "wall_ms": statistics.median(run["wall_ms"] for run in runs_of),
            "import_ms": statistics.median(run["import_ms"] for run in runs_of),
            "first_request_ms": statistics.median(run["first_request_ms"] for run in runs_of),
            "cpu_ms": statistics.median(run["cpu_ms"] for run in runs_of),
            "fastest_cpu_ms": min(run["cpu_ms"] for run in runs_of),
            "peak_rss_mib": max(run["peak_rss_kib"] for run in runs_of) / 1024,
            "all_wall_ms": [round(run["wall_ms"], 1) for run in runs_of],
        }
    return {"backend": database.backend, "subjects": results}


# The cold-start targets (bench/report.py): subject, baseline, limit.
TARGETS = (
    ("tasks", "baseline: minimal app", 1.1),
    ("auth", "baseline: minimal app", 1.2),
    ("health", "baseline: bare app", 1.1),
)


def table(results: dict[str, Any]) -> str:
    """Each subject's medians and fastest runs, then the targets' ratios by each."""
    measured = results["subjects"]
    lines = [
        f"Cold starts on {results['backend']} (ms; median and fastest of each subject's runs)",
        "",
        "| subject | runs | wall | fastest wall | CPU | fastest CPU |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, figures in measured.items():
        lines.append(
            f"| {name} | {figures['runs']} | {figures['wall_ms']:.0f} |"
            f" {min(figures['all_wall_ms']):.0f} | {figures['cpu_ms']:.0f} |"
            f" {figures['fastest_cpu_ms']:.0f} |"
        )
    rows = [
        (subject, baseline, limit)
        for subject, baseline, limit in TARGETS
        if subject in measured and baseline in measured
    ]
    if rows:
        lines += [
            "",
            "| ratio | limit | wall | fastest wall | CPU | fastest CPU |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
    for subject, baseline, limit in rows:
        mine, theirs = measured[subject], measured[baseline]
        ratios = (
            mine["wall_ms"] / theirs["wall_ms"],
            min(mine["all_wall_ms"]) / min(theirs["all_wall_ms"]),
            mine["cpu_ms"] / theirs["cpu_ms"],
            mine["fastest_cpu_ms"] / theirs["fastest_cpu_ms"],
        )
        lines.append(
            f"| {subject} / {baseline} | {limit} | "
            + " | ".join(f"{ratio:.2f}" for ratio in ratios)
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Cold starts of some subjects alone.")
    parser.add_argument("names", nargs="*", help="subjects (default: all of them)")
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"))
    args = parser.parse_args()
    built = last_build()
    with scratch_database(args.backend) as database:
        results = measure(built, database, runs=args.runs, log=Log(), names=args.names)
    where = "built layer, Python 3.13" if built.built else "sources"
    print(f"({where}; load average at the end {os.getloadavg()[0]:.1f})")
    print(table(results))


if __name__ == "__main__":
    main()
