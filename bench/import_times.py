"""`-X importtime` for each function's first request: what every
cold start imports, by top-level package, split into the handler's import and its first
request, beside the baselines.

    .venv/bin/python -m bench.import_times [--runs 3] [--backend postgresql]

Runs on what the last `make bench` built (build/bench; the sources in place without it),
as `bench/cold_start.py` runs a cold start. A package's time is the sum of its modules'
own ("self") times, median over the runs: nested imports count once, where they happen.
"""

import argparse
import statistics
from collections import defaultdict

from bench.artifacts import last_build
from bench.cold_start import PEERS, Subject, run_once, subjects
from bench.database import scratch_database

MARK = "bench: imported"


def parse(stderr: str) -> dict[str, dict[str, float]]:
    """Self µs by top-level package, for the import ("import") and the first request."""
    phase = "import"
    times: dict[str, dict[str, float]] = {
        "import": defaultdict(float),
        "request": defaultdict(float),
    }
    for line in stderr.splitlines():
        if line.startswith(MARK):
            phase = "request"
        if not line.startswith("import time:") or "[us]" in line:
            continue
        self_us, _cumulative, name = line.removeprefix("import time:").split("|")
        times[phase][name.strip().split(".")[0]] += int(self_us)
    return times


def chosen() -> list[Subject]:
    named = {subject.name: subject for subject in subjects()}
    wanted = ("tasks", "auth", "health", "health /db", "migrate", "baseline: minimal app")
    return [named[name] for name in wanted] + [named["baseline: bare app"], *PEERS]


def table(name: str, runs: list[dict[str, dict[str, float]]], *, top: int) -> str:
    def median(phase: str, package: str) -> float:
        return statistics.median(run[phase].get(package, 0.0) for run in runs) / 1000

    packages = {package for run in runs for phase in run.values() for package in phase}
    rows = sorted(
        packages, key=lambda package: -(median("import", package) + median("request", package))
    )
    total_import = statistics.median(sum(run["import"].values()) for run in runs) / 1000
    total_request = statistics.median(sum(run["request"].values()) for run in runs) / 1000
    lines = [
        f"**{name}**: {total_import:.0f} ms of imports at import, {total_request:.0f} ms in"
        " the first request",
        "",
        "| package | at import, ms | in 1st request, ms |",
        "| --- | --- | --- |",
    ]
    lines += [
        f"| {package} | {median('import', package):.1f} | {median('request', package):.1f} |"
        for package in rows[:top]
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"))
    args = parser.parse_args()
    built = last_build()
    with scratch_database(args.backend, tasks=100) as database:
        results = {
            subject.name: [
                parse(
                    run_once(built, subject, database, python_options=("-X", "importtime"))[
                        "stderr"
                    ]
                )
                for _ in range(args.runs)
            ]
            for subject in chosen()
        }
    where = "built layer, Python 3.13" if built.built else "sources"
    print(f"-X importtime on {database.backend} ({where}), median of {args.runs} runs\n")
    for name, runs in results.items():
        print(table(name, runs, top=args.top) + "\n")


if __name__ == "__main__":
    main()
