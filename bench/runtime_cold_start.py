"""Cold starts inside Lambda's runtime: each subject started as the Python base image
starts a function, `python -m awslambdaric app.handler` (the runtime interface client,
the version that `make lambda-image` puts in the stand-in image, from
tools/lambda-image-requirements.txt), with the task root, the layer and the client on
`sys.path` in Lambda's order. The bench serves the Runtime API itself on 127.0.0.1: the
client fetches the event from it, calls the handler and posts the response back. The
wall time runs from starting the process to the response reaching the Runtime API: the
interpreter, the client's own import and its two HTTP calls included, as on Lambda.

Subjects run interleaved, one round at a time, as in bench/cold_start.py (which measures
the same subjects in a bare process).

    .venv/bin/python -m bench.runtime_cold_start [--runs 7]
"""

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.artifacts import BUILD, Artifacts, Log, last_build
from bench.cold_start import Subject, subject_event
from bench.database import SUBJECT_SETTINGS, BenchDatabase, scratch_database
from bench.report import RUNTIME_TARGETS

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "tools" / "lambda-image-requirements.txt"
RUNTIME = BUILD / "runtime"
SUBJECTS = (
    Subject("baseline: minimal app", "minimal", "app.handler", "GET /api/tasks?user_id"),
    Subject("baseline: bare app", "bare", "app.handler", "GET /health"),
    Subject("tasks", "tasks", "app.handler", "GET /api/tasks"),
    Subject("auth", "auth", "app.handler", "GET /api/auth/me"),
    Subject("health", "health", "app.handler", "GET /health"),
)
PATH = "/2018-06-01/runtime"


def install_runtime(python: str) -> Path:
    """awslambdaric and its dependencies for the subjects' interpreter, in build/bench;
    installed again only when the pins change."""
    version = subprocess.run(
        [python, "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    target = RUNTIME / version
    stamp = target / ".requirements"
    wanted = REQUIREMENTS.read_text()
    if not (stamp.exists() and stamp.read_text() == wanted):
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
                *("--no-deps", "--only-binary=:all:", "--python-version", version),
                *("--platform", "manylinux2014_x86_64", "--implementation", "cp", "--upgrade"),
                *("--target", str(target), "-r", str(REQUIREMENTS)),
            ],
            check=True,
            capture_output=True,
        )
        stamp.write_text(wanted)
    return target


class RuntimeApi(ThreadingHTTPServer):
    """Lambda's Runtime API for one process and one invocation: `next` hands out the
    event once, `response` (or an error) is put on `answers` with the time it arrived."""

    daemon_threads = True

    def __init__(self, event: dict[str, Any]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.event: dict[str, Any] | None = event
        self.answers: queue.Queue[tuple[float, str, bytes]] = queue.Queue()
        self.closing = threading.Event()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The process is killed once it has answered, its connection with it.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RuntimeApi

    def do_GET(self) -> None:
        if self.path != f"{PATH}/invocation/next":
            self._reply(404, b"{}")
            return
        event, self.server.event = self.server.event, None
        if event is None:
            # The client asks for its next event after answering; it gets none: the bench
            # ends the process once it has its answer.
            self.server.closing.wait()
            return
        body = json.dumps(event).encode()
        self._reply(
            200,
            body,
            {
                "Lambda-Runtime-Aws-Request-Id": "00000000-0000-0000-0000-000000000001",
                "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 30_000),
                "Lambda-Runtime-Invoked-Function-Arn": (
                    "arn:aws:lambda:us-east-1:123456789012:function:bench"
                ),
                "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000001",
            },
        )

    def do_POST(self) -> None:
        arrived = time.perf_counter()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        kind = self.path.rsplit("/", 1)[-1]
        self._reply(202, b'{"status": "OK"}')
        self.server.answers.put((arrived, kind, body))

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def runtime_api(event: dict[str, Any]) -> Iterator[RuntimeApi]:
    server = RuntimeApi(event)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.closing.set()
        server.shutdown()
        server.server_close()


def run_once(
    artifacts: Artifacts,
    runtime: Path,
    subject: Subject,
    database: BenchDatabase,
) -> float:
    """One cold start in the runtime interface client: wall ms to the posted response."""
    root = artifacts.task_roots[subject.function]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "TZ": ":UTC",
        "PYTHONDONTWRITEBYTECODE": "1",
        # Lambda's order: the function, the layer, then the runtime.
        "PYTHONPATH": os.pathsep.join((str(root), str(artifacts.layer), str(runtime))),
        "LAMBDA_TASK_ROOT": str(root),
        "AWS_LAMBDA_FUNCTION_NAME": "bench",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_REGION": "us-east-1",
        **SUBJECT_SETTINGS,
        "DATABASE_URL": database.url,
    }
    with runtime_api(subject_event(subject.request, database)) as api:
        env["AWS_LAMBDA_RUNTIME_API"] = api.address
        started = time.perf_counter()
        process = subprocess.Popen(
            [artifacts.python, "-m", "awslambdaric", subject.handler],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            arrived, kind, body = api.answers.get(timeout=60)
        except queue.Empty:
            raise RuntimeError(f"{subject.name}: no answer in the runtime") from None
        finally:
            process.kill()
            _, errors = process.communicate()
    if kind != "response":
        raise RuntimeError(f"{subject.name}: {kind} {body[:2000]!r}\n{errors.decode()[-2000:]}")
    status = json.loads(body).get("statusCode")
    if status != 200:
        raise RuntimeError(f"{subject.name} answered {status}")
    return (arrived - started) * 1000


def measure(
    artifacts: Artifacts, database: BenchDatabase, *, runs: int, log: Log, smoke: bool = False
) -> dict[str, Any]:
    runtime = install_runtime(artifacts.python)
    # The smoke run: a function and its baseline, enough to show the code works.
    chosen = (SUBJECTS[0], SUBJECTS[2]) if smoke else SUBJECTS
    samples: dict[str, list[float]] = {subject.name: [] for subject in chosen}
    for round_number in range(runs):
        log(f"cold starts in the runtime interface client: round {round_number + 1} of {runs}")
        shift = round_number % len(chosen)
        for subject in chosen[shift:] + chosen[:shift]:
            samples[subject.name].append(run_once(artifacts, runtime, subject, database))
    return {
        "backend": database.backend,
        "runs": runs,
        "subjects": {
            name: {"wall_ms": statistics.median(walls), "all_wall_ms": [round(w, 1) for w in walls]}
            for name, walls in samples.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    built = last_build()
    with scratch_database() as database:
        results = measure(built, database, runs=args.runs, log=Log())
    subjects = results["subjects"]
    for name, figures in subjects.items():
        print(f"{name:<24} {figures['wall_ms']:7.0f} ms")
    for subject, baseline, limit in RUNTIME_TARGETS:
        ratio = subjects[subject]["wall_ms"] / subjects[baseline]["wall_ms"]
        print(f"{subject} / {baseline}: {ratio:.2f} (limit {limit})")


if __name__ == "__main__":
    main()
