"""Where the warm authenticated `GET /api/tasks` spends its time: a breakdown
by stage, and a cProfile of the same invocations.

    .venv/bin/python -m bench.profile_list [--backend postgresql] [--invocations 2000]

Runs in a warm Python 3.13 on the layer `make bench` built (build/bench), or on the
sources with this interpreter when there is none, against the benchmark's data (a page
of 20 of the user's 1,000 tasks). Prints the breakdown in Markdown, then the profiles.
"""

import argparse
import json
import os
from pathlib import Path

from bench.artifacts import BUILD, last_build, run_child
from bench.database import SUBJECT_SETTINGS, scratch_database
from localapi.events import http_event

CHILD = (Path(__file__).resolve().parent / "profile_child.py").read_text()
STAGES = (
    "token decoding",
    "connection open/close",
    "page query",
    "page data (rows to dicts)",
    "serialisation",
    "request log line",
)

LEAN = "reference: lean FastAPI + Core route, whole invocation"
POWERTOOLS = "reference: Powertools resolver + Core, whole invocation"
WHOLE = ", whole invocation"


def _shares(medians: dict[str, float]) -> list[tuple[str, float]]:
    total, asgi = medians["invocation"], medians["asgi app"]
    rows = [(stage, medians[stage]) for stage in STAGES]
    rows += [
        ("FastAPI + Starlette (the rest of the ASGI call)", asgi - sum(ms for _, ms in rows)),
        ("Mangum (handler minus the ASGI call)", total - asgi),
        ("**whole invocation**", total),
    ]
    return rows


def breakdown(wall: dict[str, float], cpu: dict[str, float]) -> str:
    """Median µs per stage, wall and CPU time, and each stage's share of the CPU time."""
    lines = ["| stage | wall µs | CPU µs | share of CPU |", "| --- | --- | --- | --- |"]
    total = cpu["invocation"]
    for (name, wall_ms), (_, cpu_ms) in zip(_shares(wall), _shares(cpu), strict=True):
        lines.append(
            f"| {name} | {wall_ms * 1000:.0f} | {cpu_ms * 1000:.0f} | {cpu_ms / total:.0%} |"
        )
    others = [name for name in cpu if name.startswith(("candidate", "reference"))]
    if others:
        lines += ["", "| not part of the request | wall µs | CPU µs |", "| --- | --- | --- |"]
        lines += [f"| {n} | {wall[n] * 1000:.0f} | {cpu[n] * 1000:.0f} |" for n in others]
    lean = cpu.get(LEAN)
    if lean:
        lines += ["", "| against the lean route (CPU) | ratio |", "| --- | --- |"]
        lines.append(f"| GET /api/tasks | {total / lean:.2f} |")
        if POWERTOOLS in cpu:
            lines.append(f"| GET /api/tasks against Powertools | {total / cpu[POWERTOOLS]:.2f} |")
        lines += [
            f"| {n} | {cpu[n] / lean:.2f} |" for n in others if n.endswith(WHOLE) and n != LEAN
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--invocations", type=int, default=2000)
    args = parser.parse_args()
    subject = last_build()
    with scratch_database(args.backend) as database:
        config = {
            "root": str(subject.task_roots["tasks"]),
            "token": database.token,
            "event": http_event(
                "GET", "/api/tasks", headers={"authorization": f"Bearer {database.token}"}
            ),
            "lean_root": str(subject.task_roots["lean"]),
            # Powertools answers the lean route's event too (the same query parameter).
            "powertools_root": str(subject.task_roots["powertools"]),
            "lean_event": http_event("GET", "/api/tasks", query={"user_id": str(database.user_id)}),
            # The other two routes of the warm benchmark, as whole invocations.
            "read_event": http_event(
                "GET",
                f"/api/tasks/{database.task_id}",
                headers={"authorization": f"Bearer {database.token}"},
            ),
            "create_event": http_event(
                "POST",
                "/api/tasks",
                headers={
                    "authorization": f"Bearer {database.writer_token}",
                    "content-type": "application/json",
                },
                body=json.dumps({"title": "Benchmark write", "priority": "High"}),
            ),
            "invocations": args.invocations,
            "warmup": 100,
        }
        result = run_child(
            subject,
            CHILD,
            config,
            env={
                "TZ": ":UTC",
                **SUBJECT_SETTINGS,
                "DATABASE_URL": database.url,
                # The stages hold a connection and a session while the requests use a third.
                "DATABASE_POOL_SIZE": "3",
                "PYTHONPATH": os.pathsep.join(
                    str(path) for path in (subject.layer, subject.baselines_layer)
                ),
            },
            what="profile",
        )
    where = "built layer, Python 3.13" if subject.built else "sources, the virtualenv's Python"
    print(f"Warm GET /api/tasks on {args.backend} ({where}), {args.invocations} invocations\n")
    print(breakdown(result["medians_ms"], result["cpu_medians_ms"]))
    print("\ncProfile, by cumulative time:\n")
    print(result["cprofile_cumulative"])
    print("\ncProfile, by own time:\n")
    print(result["cprofile_tottime"])
    Path(BUILD / f"profile-{args.backend}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
