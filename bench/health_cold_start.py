"""Cold start of the health function, with and without Powertools: what its Logger and
Metrics would add to the first request.

Each run is a fresh interpreter that imports `functions/health/app.py` and serves one
`GET /health` through the handler; it reports the milliseconds from before the first
import to the response, and separately what importing and setting up Powertools' Logger and
Metrics would add. Prints the median of the runs. Powertools is not a project dependency
(it was measured and left out): install `aws-lambda-powertools` into the interpreter given.

    .venv/bin/python bench/health_cold_start.py --python python3.13 --runs 21
"""

import argparse
import json
import os
import statistics
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RUN = """
import importlib.util, json, sys, time
started = time.perf_counter()
sys.path.insert(0, "functions/health")
spec = importlib.util.spec_from_file_location("health_app", "functions/health/app.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
from localapi.events import LambdaContext, http_event
assert module.handler(http_event("GET", "/health"), LambdaContext())["statusCode"] == 200
served = time.perf_counter()
from aws_lambda_powertools import Logger, Metrics
Logger(service="health")
Metrics(namespace="TaskApi")
powertools = time.perf_counter()
print(json.dumps({"health": (served - started) * 1000, "powertools": (powertools - served) * 1000}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="python3.13")
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'shared'}:{ROOT}", "STAGE": "test"}
    results = []
    for _ in range(args.runs):
        completed = subprocess.run(
            [args.python, "-c", RUN], capture_output=True, text=True, env=env, cwd=ROOT, check=True
        )
        results.append(json.loads(completed.stdout.splitlines()[-1]))
    health = statistics.median(result["health"] for result in results)
    powertools = statistics.median(result["powertools"] for result in results)
    print(f"runs: {args.runs}")
    print(f"health app import + first GET /health: {health:.1f} ms (median)")
    print(f"Powertools Logger + Metrics on top:    {powertools:.1f} ms ({powertools / health:.1%})")


if __name__ == "__main__":
    main()
