"""The targets a run's results are checked against, and the table `make bench` prints."""

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

FUNCTIONS = ("tasks", "auth", "health /db", "migrate")
# Cold starts against the minimal app: the tasks function, the one users wait on most,
# within 1.1 times; the others within 1.2.
COLD_START_LIMITS = {"tasks": 1.1}
LEAN = "baseline: lean FastAPI + Core GET /api/tasks"
POWERTOOLS = "baseline: Powertools GET /api/tasks"
# The warm authenticated list against an unauthenticated peer: the session check and the
# layer may cost a quarter more, no more.
PEER_LIMIT = 1.25
# Each function's first request in the runtime interface client against the minimal app
# (the bare one for health): within a tenth.
RUNTIME_TARGETS = (
    ("tasks", "baseline: minimal app", 1.1),
    ("auth", "baseline: minimal app", 1.1),
    ("health", "baseline: bare app", 1.1),
)
# bench/pooler.py's modes through PgBouncer: a pool of one, a connection per request.
POOLED_MODES = ("PgBouncer, pool of one", "PgBouncer, connection per request")
# Side by side: (name in the cold-start table, name in the warm tables).
SIDE_BY_SIDE = (
    ("tasks", "GET /api/tasks"),
    ("baseline: minimal app", "baseline: minimal GET /api/tasks"),
    ("baseline: lean FastAPI + Core", LEAN),
    ("baseline: Powertools", POWERTOOLS),
    ("baseline: Chalice", "baseline: Chalice GET /api/tasks"),
    (None, "floor: driver + json.dumps"),
)


def _target(
    name: str, figure: float, baseline: float, target: float | None, *, at_least: bool = False
) -> dict[str, Any]:
    """A ratio and its verdict; with no `target`, a ratio shown among the targets without a
    limit of its own (`met` is None)."""
    ratio = figure / baseline
    return {
        "target": name,
        "figure": round(figure, 3),
        "baseline": round(baseline, 3),
        "ratio": round(ratio, 3),
        "limit": "reported" if target is None else f"{'>=' if at_least else '<='} {target}",
        "met": None if target is None else ratio >= target if at_least else ratio <= target,
    }


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    cold = results["cold_start"]["subjects"]
    minimal = cold["baseline: minimal app"]["wall_ms"]
    for name in FUNCTIONS:
        if name not in cold:  # a smoke run measures a few
            continue
        checks.append(
            _target(
                f"cold start {name} / minimal app",
                cold[name]["wall_ms"],
                minimal,
                COLD_START_LIMITS.get(name, 1.2),
            )
        )
    checks.append(
        _target(
            "cold start GET /health / bare FastAPI + Mangum",
            cold["health"]["wall_ms"],
            cold["baseline: bare app"]["wall_ms"],
            1.1,
        )
    )
    for name in ("tasks", "auth", "health", "migrate"):
        if f"{name} (sources)" not in cold:
            continue
        checks.append(
            _target(
                f"bytecode speed-up, {name} (sources / shipped bytecode)",
                cold[f"{name} (sources)"]["wall_ms"],
                cold[name]["wall_ms"],
                2.0,
                at_least=True,
            )
        )
    for backend, warm in results["warm"].items():
        subjects = warm["subjects"]
        listing = subjects["GET /api/tasks"]
        checks.append(
            _target(
                f"warm GET /api/tasks p50 / minimal route p50 ({backend})",
                listing["p50_ms"],
                subjects["baseline: minimal GET /api/tasks"]["p50_ms"],
                1.0,
            )
        )
        # Powertools' ratio stands beside the target as a reference, without a limit.
        peers = ((LEAN, "lean FastAPI + Core", PEER_LIMIT), (POWERTOOLS, "Powertools", None))
        for peer, label, limit in peers:
            if peer in subjects:
                checks.append(
                    _target(
                        f"warm GET /api/tasks p50 / {label} p50 ({backend})",
                        listing["p50_ms"],
                        subjects[peer]["p50_ms"],
                        limit,
                    )
                )
        checks.append(
            _target(
                f"warm GET /api/tasks p99 / its p50 ({backend})",
                listing["p99_ms"],
                listing["p50_ms"],
                3.0,
            )
        )
        checks.append(
            _target(
                f"warm GET /health p50 / bare FastAPI + Mangum p50 ({backend})",
                subjects["GET /health"]["p50_ms"],
                subjects["baseline: bare GET /health"]["p50_ms"],
                1.1,
            )
        )
    if "servers" in results["local_server"]:
        server = results["local_server"]
        local, direct = server["servers"].values()
        for clients in (8, 32):
            if clients not in local:  # a smoke run measures 8 clients alone
                continue
            # At least uvicorn's throughput. The median of the rounds' ratios
            # where the run has them (one busy spell spoils a round, not the verdict).
            median = server.get("ratios", {}).get(clients, {}).get("median")
            checks.append(
                _target(
                    f"local server req/s at {clients} clients / uvicorn",
                    median if median is not None else local[clients]["requests_per_second"],
                    1.0 if median is not None else direct[clients]["requests_per_second"],
                    1.0,
                    at_least=True,
                )
            )
    checks += _production_path_targets(results)
    sizes = results["size"]["zip_mib"]
    layer = next(name for name in sizes if name.startswith("layer"))
    checks.append(_target(f"{layer} zip, MiB / 20 MiB", sizes[layer], 20.0, 1.0))
    return checks


def _production_path_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Cold starts in the runtime interface client, the connection mode through
    the pooler, the reads at the quota."""
    checks = []
    runtime = results.get("runtime_cold_start", {}).get("subjects", {})
    for subject, baseline, limit in RUNTIME_TARGETS:
        if subject in runtime:
            checks.append(
                _target(
                    f"cold start in the runtime client, {subject} / {baseline.split(': ')[1]}",
                    runtime[subject]["wall_ms"],
                    runtime[baseline]["wall_ms"],
                    limit,
                )
            )
    if "pooler" in results:
        requests = results["pooler"]["requests"]
        default = template_connection_mode()
        other = next(mode for mode in POOLED_MODES if mode != default)
        checks.append(
            _target(
                f"through PgBouncer, list + create p50: {default.split(', ')[1]} (the"
                f" template's default) / {other.split(', ')[1]}",
                sum(modes[default]["p50_ms"] for modes in requests.values()),
                sum(modes[other]["p50_ms"] for modes in requests.values()),
                1.0,
            )
        )
    if "quota" in results:
        quota = results["quota"]
        first, last = quota["sizes"][0], quota["sizes"][-1]
        for read, figures in quota["reads"].items():
            name = f"at the quota, {read} p50: {last:,} tasks / {first:,}"
            if figures["growth"] is None:
                # A read that failed (its status in place of a time) misses.
                failed = ", ".join(
                    f"{size}: {status}" for size, status in figures["failed"].items()
                )
                checks.append(
                    {
                        "target": name,
                        "figure": None,
                        "baseline": None,
                        "ratio": None,
                        "limit": f"<= {quota['growth_limit']} (failed: {failed})",
                        "met": False,
                    }
                )
                continue
            checks.append(
                _target(
                    name,
                    figures["p50_ms"][str(last)],
                    figures["p50_ms"][str(first)],
                    quota["growth_limit"],
                )
            )
    return checks


def template_connection_mode() -> str:
    """The connection mode template.yaml deploys by default, as the pooler rows name it."""
    from samtranslator.yaml_helper import yaml_parse

    template = yaml_parse((ROOT / "template.yaml").read_text())
    null_pool = template["Parameters"]["DatabaseNullPool"]["Default"] == "true"
    return POOLED_MODES[1] if null_pool else POOLED_MODES[0]


def _production_path(results: dict[str, Any], markdown: bool) -> list[str]:
    """The production path's sections: the runtime client's cold starts beside the bare process's,
    the pooler rows, the reads at the quota."""
    parts = []
    if "runtime_cold_start" in results:
        runtime = results["runtime_cold_start"]
        bare = results["cold_start"]["subjects"]
        minimal = runtime["subjects"]["baseline: minimal app"]["wall_ms"]
        parts.append(
            f"\nCold start in the runtime interface client (python -m awslambdaric) on"
            f" {runtime['backend']}: process start to the response posted to the Runtime"
            f" API, median of {runtime['runs']} (ms), beside the bare process's"
        )
        parts.append(
            _rows(
                markdown,
                ["subject", "runtime client", "x minimal", "bare process"],
                [
                    [
                        name,
                        f"{figures['wall_ms']:.0f}",
                        f"{figures['wall_ms'] / minimal:.2f}",
                        f"{bare[name]['wall_ms']:.0f}" if name in bare else "-",
                    ]
                    for name, figures in runtime["subjects"].items()
                ],
            )
        )
    if "pooler" in results:
        pooler = results["pooler"]
        parts.append(
            f"\nThrough PgBouncer (transaction mode) and direct, {pooler['backend']}:"
            f" {pooler['invocations']} invocations each, interleaved (ms)"
        )
        parts.append(
            _rows(
                markdown,
                ["request", "connection", "p50", "p99", "p50 x direct pool of one"],
                [
                    [
                        request,
                        mode,
                        f"{figures['p50_ms']:.2f}",
                        f"{figures['p99_ms']:.2f}",
                        f"{figures['p50_x_direct']:.2f}",
                    ]
                    for request, modes in pooler["requests"].items()
                    for mode, figures in modes.items()
                ],
            )
        )
    if "quota" in results:
        quota = results["quota"]
        sizes = [str(size) for size in quota["sizes"]]
        parts.append(
            f"\nAt the quota, {quota['backend']}: warm p50 (ms) of one user's reads by the"
            f" tasks that user holds (200-character titles, 5,000-character descriptions),"
            f" {quota['invocations']} invocations each"
            + "".join(f" ({read}: {calls})" for read, calls in quota.get("slow_reads", {}).items())
        )
        parts.append(
            _rows(
                markdown,
                ["read", *(f"{int(size):,} tasks" for size in sizes), "growth"],
                [
                    [
                        read,
                        *(
                            str(figures["failed"][size])
                            if size in figures["failed"]
                            else f"{figures['p50_ms'][size]:.2f}"
                            for size in sizes
                        ),
                        "-" if figures["growth"] is None else f"{figures['growth']:.2f}",
                    ]
                    for read, figures in quota["reads"].items()
                ],
            )
        )
    return parts


def _peak(peaks: dict[str, float], name: str) -> str:
    return f"{peaks[name]:.0f}" if name in peaks else "-"


def _met(check: dict[str, Any]) -> str:
    if check["met"] is None:
        return "-"
    return "met" if check["met"] else "missed"


def _rows(markdown: bool, headers: list[str], rows: list[list[str]]) -> str:
    if markdown:
        return "\n".join(
            "| " + " | ".join(cells) + " |" for cells in [headers, ["---"] * len(headers), *rows]
        )
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        first, *rest = cells
        return "  ".join(
            [first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))]
        )

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def _side_by_side(results: dict[str, Any], markdown: bool) -> str:
    """The authenticated list beside what a user would pick instead: cold start (median
    wall time) and warm p50/p99 per backend, each with its ratio to the lean route."""
    cold = results["cold_start"]["subjects"]
    backends = list(results["warm"])
    headers = ["subject", "cold ms"]
    for backend in backends:
        headers += [f"{backend} p50", "p99", "p50 x lean"]
    rows = []
    for cold_name, warm_name in SIDE_BY_SIDE:
        row = [warm_name, f"{cold[cold_name]['wall_ms']:.0f}" if cold_name in cold else "-"]
        for backend in backends:
            subjects = results["warm"][backend]["subjects"]
            if warm_name not in subjects:
                row += ["-", "-", "-"]
                continue
            figures = subjects[warm_name]
            lean = subjects.get(LEAN, figures)["p50_ms"]
            row += [
                f"{figures['p50_ms']:.2f}",
                f"{figures['p99_ms']:.2f}",
                f"{figures['p50_ms'] / lean:.2f}",
            ]
        rows.append(row)
    title = "\nGET /api/tasks beside the peers (cold: fresh process to first response, ms)"
    return title + "\n" + _rows(markdown, headers, rows)


def table(results: dict[str, Any], *, markdown: bool = False) -> str:
    """The run as plain-text tables, or Markdown ones to paste into the docs."""
    machine = results["machine"]
    parts = [
        f"Benchmarks ({results['mode']}), {results['date']}, Python {results['python']['subjects']}"
        f" ({results['artifacts']}), {machine['cpus']} CPUs, load average"
        f" {machine['load_average_at_start']} -> {machine['load_average_at_end']}"
    ]
    cold = results["cold_start"]
    minimal = cold["subjects"]["baseline: minimal app"]["wall_ms"]
    # Load elsewhere only ever adds time: the fastest run is the least disturbed one.
    fastest_minimal = min(cold["subjects"]["baseline: minimal app"]["all_wall_ms"])
    parts.append(
        f"\nCold start on {cold['backend']}: fresh process to first response, median of"
        f" {cold['subjects']['tasks']['runs']} (ms)"
    )
    parts.append(
        _rows(
            markdown,
            [
                "subject",
                "request",
                "wall",
                "import",
                "1st request",
                "x minimal",
                "fastest run",
                "x minimal's",
                "peak MiB",
            ],
            [
                [
                    name,
                    figures["request"],
                    f"{figures['wall_ms']:.0f}",
                    f"{figures['import_ms']:.0f}",
                    f"{figures['first_request_ms']:.0f}",
                    f"{figures['wall_ms'] / minimal:.2f}",
                    f"{min(figures['all_wall_ms']):.0f}",
                    f"{min(figures['all_wall_ms']) / fastest_minimal:.2f}",
                    f"{figures['peak_rss_mib']:.0f}",
                ]
                for name, figures in cold["subjects"].items()
            ],
        )
    )
    for backend, warm in results["warm"].items():
        subjects = warm["subjects"]
        baseline = subjects["baseline: minimal GET /api/tasks"]["p50_ms"]
        parts.append(
            f"\nWarm latency on {backend}: {warm['invocations']} invocations each, interleaved (ms)"
        )
        parts.append(
            _rows(
                markdown,
                ["subject", "p50", "p95", "p99", "p99/p50", "p50 x minimal"],
                [
                    [
                        name,
                        f"{figures['p50_ms']:.2f}",
                        f"{figures['p95_ms']:.2f}",
                        f"{figures['p99_ms']:.2f}",
                        f"{figures['p99_ms'] / figures['p50_ms']:.2f}",
                        f"{figures['p50_ms'] / baseline:.2f}",
                    ]
                    for name, figures in subjects.items()
                ],
            )
        )
    parts.append(_side_by_side(results, markdown))
    parts.append("\nLogin (POST /api/auth/login through the handler, fresh auth function)")
    parts.append(
        _rows(
            markdown,
            ["BCRYPT_ROUNDS", "login ms", "checkpw ms", "x checkpw", "bcrypt ops", "1st login"],
            [
                [
                    str(entry["rounds"]),
                    f"{entry['login_ms']:.0f}",
                    f"{entry['checkpw_ms']:.0f}",
                    f"{entry['ratio']:.2f}",
                    str(len(entry["bcrypt_costs_per_login"])),
                    f"{entry['first_login_ms']:.0f} ms, costs {entry['bcrypt_costs_first_login']}",
                ]
                for entry in results["login"]
            ],
        )
    )
    server = results["local_server"]
    if "error" in server:
        parts.append(f"\nLocal server: failed, {server['error']}")
    else:
        parts.append(
            f"\nLocal server, GET /api/tasks, {server['seconds_per_cell']:g} s per cell,"
            f" {server['rounds']} rounds, load from {server['client']}: req/s (p99 ms)"
        )
        parts.append(
            _rows(
                markdown,
                [
                    "server",
                    *(
                        f"{clients} client{'' if int(clients) == 1 else 's'}"
                        for clients in next(iter(server["servers"].values()))
                    ),
                ],
                [
                    [
                        name,
                        *(
                            f"{cell['requests_per_second']:.0f} ({cell['p99_ms']:.1f})"
                            for cell in cells.values()
                        ),
                    ]
                    for name, cells in server["servers"].items()
                ]
                + (
                    [
                        [
                            "localapi / uvicorn, median of the rounds",
                            *(f"{ratio['median']:.2f}" for ratio in server["ratios"].values()),
                        ]
                    ]
                    if "ratios" in server
                    else []
                )
                + [
                    # Where the throughput goes: the local server's own process and its
                    # workers together, against uvicorn's one process.
                    [
                        f"server CPU µs per request, {name.split(' ')[0]}",
                        *(f"{cell['server_cpu_us_per_request']:.0f}" for cell in cells.values()),
                    ]
                    for name, cells in server["servers"].items()
                    if all("server_cpu_us_per_request" in cell for cell in cells.values())
                ],
            )
        )
    parts += _production_path(results, markdown)
    size = results["size"]
    parts.append("\nSize")
    parts.append(
        _rows(
            markdown,
            ["artifact", "zip MiB", "peak RSS MiB after 1st request"],
            [
                [name, f"{mib:.2f}", _peak(size["peak_rss_mib"], name)]
                for name, mib in size["zip_mib"].items()
            ],
        )
    )
    if results.get("mode") == "smoke":
        # CI runs the smoke mode to keep the code working: 32 requests in one round are
        # over in a blink, so a verdict there says nothing about the target.
        parts.append("\nTargets (smoke run: tiny counts, the verdicts are not measurements)")
    else:
        parts.append("\nTargets")
    parts.append(
        _rows(
            markdown,
            ["target", "ratio", "limit", "verdict"],
            [
                [
                    check["target"],
                    "-" if check["ratio"] is None else f"{check['ratio']:.2f}",
                    check["limit"],
                    _met(check),
                ]
                for check in results["targets"]
            ],
        )
    )
    parts.append(f"\n{results['seconds']:.0f} s")
    return "\n".join(parts)


if __name__ == "__main__":
    import json
    import sys

    print(table(json.loads(open(sys.argv[1]).read()), markdown=True))  # noqa: SIM115
