"""Warm latency: thousands of `handler(event, context)` calls in one warm process, per
backend, against unauthenticated routes doing the same page query: the tutorial-style
FastAPI + Mangum + SQLModel app, and what a user would pick instead (a lean FastAPI route
on SQLAlchemy Core, Powertools' resolver, Chalice), and against the plain driver plus
`json.dumps` (the floor)."""

import json
import statistics
from pathlib import Path
from typing import Any

from bench.artifacts import Artifacts, run_child
from bench.database import SUBJECT_SETTINGS, BenchDatabase
from bench.events import rest_event
from localapi.events import http_event

CHILD = (Path(__file__).resolve().parent / "warm_child.py").read_text()


def percentiles(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {
        "p50_ms": statistics.median(samples),
        "p95_ms": cuts[94],
        "p99_ms": cuts[98],
        "mean_ms": statistics.fmean(samples),
    }


def measure(
    artifacts: Artifacts, database: BenchDatabase, *, invocations: int, warmup: int
) -> dict[str, Any]:
    auth = {"authorization": f"Bearer {database.token}"}
    writer = {
        "authorization": f"Bearer {database.writer_token}",
        "content-type": "application/json",
    }
    config = {
        "backend": database.backend,
        "raw_url": database.raw_url,
        "user_id": str(database.user_id),
        "invocations": invocations,
        "warmup": warmup,
        "roots": {
            name: str(artifacts.task_roots[name])
            for name in ("tasks", "health", "minimal", "bare", "lean", "powertools", "chalice")
        },
        "events": {
            "list": http_event("GET", "/api/tasks", headers=auth),
            "read": http_event("GET", f"/api/tasks/{database.task_id}", headers=auth),
            "create": http_event(
                "POST",
                "/api/tasks",
                headers=writer,
                body=json.dumps({"title": "Benchmark write", "priority": "High"}),
            ),
            "health": http_event("GET", "/health"),
            "minimal": http_event("GET", "/api/tasks", query={"user_id": str(database.user_id)}),
            "chalice": rest_event("GET", "/api/tasks", query={"user_id": str(database.user_id)}),
        },
    }
    samples: dict[str, list[float]] = run_child(
        artifacts,
        CHILD,
        config,
        env={"TZ": ":UTC", **SUBJECT_SETTINGS, "DATABASE_URL": database.url},
        what="warm latency",
    )
    return {
        "backend": database.backend,
        "invocations": invocations,
        "subjects": {name: percentiles(values) for name, values in samples.items()},
    }
