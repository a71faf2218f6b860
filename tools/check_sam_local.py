"""`make check-sam-local`: the functions in Lambda containers under `sam local`, as a
developer runs them, on a fresh PostgreSQL database.

1. A Docker engine: the running one, or `dockerd` started here (and stopped at the end).
2. The Lambda base image for this machine's architecture (tools/lambda_image.py: the real
   one where it can be pulled, a stand-in under its name where it cannot).
3. `sam build` for this machine's architecture into .aws-sam/build-local (the deployable
   arm64 build in .aws-sam/build stays as it is).
4. A fresh database on the PostgreSQL of TEST_DATABASE_URL, reached from the containers as
   `host.docker.internal` (`--add-host` to the bridge's gateway) through a forwarder on
   that gateway: the cluster's own listen_addresses and pg_hba stay as they are.
5. `sam local invoke MigrateFunction` (upgrade) and the scheduled HealthFunction event.
6. `sam local start-api --warm-containers EAGER`: the first request of each function,
   the whole flow (tests/support/local_server.py: sign-up to logout, the task routes,
   /health/db, /docs, CORS preflight), warm latency, and 50 creates from 16 clients, with
   every status and the rows in the database checked.

Prints its figures as JSON; exits non-zero on any failure.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from localapi.server import free_port
from tests.support.auth import PASSWORD
from tests.support.database import Database, create_database, drop_database
from tests.support.local_server import SAM_LOCAL, bearer, signup_over_http, the_whole_flow
from tests.support.tcp_proxy import TcpProxy
from tools.lambda_image import docker, ensure_image, machine_architecture

ROOT = Path(__file__).resolve().parent.parent
SAM = ROOT / ".venv-sam" / "bin" / "sam"
BUILD_DIR = ROOT / ".aws-sam" / "build-local"
ORIGIN = "http://localhost:5173"  # the flow's preflight asks for it
START_SECONDS = 180
BURST, CLIENTS, WARM_REQUESTS = 50, 16, 30


def say(message: str) -> None:
    print(f"check-sam-local: {message}", flush=True)


@contextmanager
def docker_engine() -> Iterator[None]:
    """The running engine, or one started here for the check and stopped after it."""
    if docker("info", capture_output=True).returncode == 0:
        say("Docker engine: already running")
        yield
        return
    if shutil.which("dockerd") is None:
        raise SystemExit("no Docker engine: apt-get install docker.io")
    log = Path(tempfile.gettempdir()) / "check-sam-local-dockerd.log"
    say(f"Docker engine: none running; starting dockerd (log: {log})")
    with log.open("wb") as output:
        engine = subprocess.Popen(["dockerd"], stdout=output, stderr=output)  # noqa: S607
    try:
        deadline = time.monotonic() + 60
        while docker("info", capture_output=True).returncode != 0:
            if engine.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"dockerd did not start:\n{log.read_text()}")
            time.sleep(0.5)
        yield
    finally:
        engine.send_signal(signal.SIGTERM)
        engine.wait(timeout=60)
        say("Docker engine: the dockerd started here is stopped")


def bridge_gateway() -> str:
    """The host's address on Docker's default bridge, which containers reach it by."""
    inspected = docker("network", "inspect", "bridge", capture_output=True)
    (network,) = json.loads(inspected.stdout)
    for config in network["IPAM"]["Config"]:
        if config.get("Gateway"):
            return str(config["Gateway"])
    # Docker 20.10 leaves the gateway out of a default bridge it did not create with one:
    # it is the bridge device's own address.
    shown = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "docker0"],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    )
    return shown.stdout.split("inet ")[1].split("/")[0]


def sam(*arguments: str) -> list[str]:
    return [str(SAM), *arguments]


def sam_environment() -> dict[str, str]:
    environment = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1"}
    # The SAM CLI runs in its own virtualenv: the project's PYTHONPATH would shadow it.
    environment.pop("PYTHONPATH", None)
    return environment


def run_sam(
    arguments: list[str], *, extra: dict[str, str] | None = None
) -> "subprocess.CompletedProcess[str]":
    say(" ".join(arguments))
    result = subprocess.run(  # noqa: S603
        arguments,
        cwd=ROOT,
        env={**sam_environment(), **(extra or {})},
        text=True,
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"failed:\n{result.stdout}\n{result.stderr}")
    return result


def build(architecture: str) -> float:
    """`make build ARCH=...` into BUILD_DIR: the parameter and the layer's PLATFORM."""
    started = time.monotonic()
    command = sam("build", "--build-dir", str(BUILD_DIR), "--parameter-overrides")
    run_sam([*command, f"Architecture={architecture}"], extra={"PLATFORM": architecture})
    return time.monotonic() - started


def local_options(architecture: str, env_file: Path, gateway: str) -> list[str]:
    """What every `sam local` command here is given, as docs/DEPLOY.md tells developers."""
    options = ["--template", str(BUILD_DIR / "template.yaml"), "--env-vars", str(env_file)]
    options += ["--parameter-overrides", f"Architecture={architecture} CorsOrigins={ORIGIN}"]
    options += ["--add-host", f"host.docker.internal:{gateway}"]
    # The stand-in cannot be pulled, and a real image pulled a minute ago is current.
    return [*options, "--skip-pull-image"]


def invoke(function: str, event: str, options: list[str]) -> tuple[dict[str, Any], float]:
    """The function's answer (the last line SAM prints) and the whole command's seconds."""
    started = time.monotonic()
    result = run_sam(sam("local", "invoke", function, "--event", event, *options))
    seconds = time.monotonic() - started
    answer = answer_in(result.stdout)
    if answer is None:
        raise SystemExit(f"{function} printed no answer:\n{result.stdout}\n{result.stderr}")
    return answer, seconds


def answer_in(stdout: str) -> dict[str, Any] | None:
    """The function's answer in what `sam local invoke` printed: it shares stdout with the
    function's own lines (its EMF metrics among them), sometimes on one line, so the last
    JSON object that is not a metrics record."""
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    for line in stdout.splitlines():
        position = line.find("{")
        while position != -1:
            try:
                value, end = decoder.raw_decode(line, position)
            except json.JSONDecodeError:
                break
            if isinstance(value, dict) and "_aws" not in value:
                found.append(value)
            position = line.find("{", end)
    return found[-1] if found else None


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def lambda_containers() -> set[str]:
    listed = docker(
        "ps", "-aq", "--filter", "label=sam.cli.container.type=lambda", capture_output=True
    )
    return set(listed.stdout.split())


def remove_left_over(before: set[str]) -> None:
    """Any function container that this run started and SAM did not remove."""
    left = sorted(lambda_containers() - before)
    if left:
        say(f"removing {len(left)} container(s) sam local left running: {' '.join(left)}")
        docker("rm", "--force", *left, capture_output=True)


@contextmanager
def start_api(options: list[str], log: Path) -> Iterator[httpx.Client]:
    before = lambda_containers()
    port = free_port()
    command = sam("local", "start-api", "--host", "127.0.0.1", "--port", str(port), *options)
    command += ["--warm-containers", "EAGER"]
    say(" ".join(command))
    with log.open("wb") as output:
        server = subprocess.Popen(  # noqa: S603
            command,
            cwd=ROOT,
            env=sam_environment(),
            stdout=output,
            stderr=output,
            start_new_session=True,
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_SECONDS
        # EAGER starts every function's container before the server listens.
        while True:
            if server.poll() is not None:
                raise SystemExit(f"sam local start-api exited:\n{log.read_text()}")
            try:
                httpx.get(f"{base_url}/nothing", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    message = f"sam local start-api did not start:\n{log.read_text()}"
                    raise SystemExit(message) from None
                time.sleep(0.5)
        with httpx.Client(base_url=base_url, timeout=30) as client:
            yield client
    finally:
        # SIGTERM: SAM stops and removes its warm containers (after SIGINT it has been seen
        # to leave some running).
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        remove_left_over(before)


def first_requests(api: httpx.Client) -> dict[str, float]:
    """The first request each function serves: its handler's import and first answer."""
    health, health_seconds = timed(lambda: api.get("/health"))
    assert health.status_code == 200, health.text
    email = f"first-{uuid.uuid4().hex[:8]}@example.com"
    signup, auth_seconds = timed(
        lambda: api.post(
            "/api/auth/signup", json={"email": email, "name": "First", "password": PASSWORD}
        )
    )
    assert signup.status_code == 201, signup.text
    auth = bearer(signup.json()["access_token"])
    listed, tasks_seconds = timed(lambda: api.get("/api/tasks", headers=auth))
    assert (listed.status_code, listed.json()["total"]) == (200, 0), listed.text
    return {
        "HealthFunction": round(health_seconds, 2),
        "AuthFunction": round(auth_seconds, 2),
        "TasksFunction": round(tasks_seconds, 2),
    }


def warm_p50(api: httpx.Client) -> dict[str, float]:
    auth = bearer(signup_over_http(api, "warm@example.com")["access_token"])
    figures = {}
    for name, call in (
        ("GET /health", lambda: api.get("/health")),
        ("GET /api/tasks", lambda: api.get("/api/tasks", headers=auth)),
    ):
        seconds = []
        for _ in range(WARM_REQUESTS):
            response, elapsed = timed(call)
            assert response.status_code == 200, response.text
            seconds.append(elapsed)
        figures[name] = round(statistics.median(seconds) * 1000, 1)
    return figures


def burst(api: httpx.Client, db: Database) -> dict[str, float]:
    """BURST creates from CLIENTS clients at once: every one 201, every row stored once."""
    signed_up = signup_over_http(api, "burst@example.com")
    auth = bearer(signed_up["access_token"])

    def create(number: int) -> tuple[int, float]:
        response, elapsed = timed(
            lambda: api.post("/api/tasks", json={"title": f"Burst {number}"}, headers=auth)
        )
        return response.status_code, elapsed

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        results = list(pool.map(create, range(BURST)))
    wall = time.monotonic() - started
    statuses = [status for status, _ in results]
    assert statuses == [201] * BURST, statuses
    titles = db.rows(
        "SELECT title FROM task WHERE user_id = :user ORDER BY title",
        user=uuid.UUID(signed_up["user"]["id"]),
    )
    assert sorted(row.title for row in titles) == sorted(f"Burst {n}" for n in range(BURST))
    latencies = sorted(seconds for _, seconds in results)
    return {
        "requests": BURST,
        "clients": CLIENTS,
        "status_201": statuses.count(201),
        "wall_seconds": round(wall, 2),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "max_ms": round(latencies[-1] * 1000, 1),
    }


def check_flow_rows(db: Database) -> None:
    """What the flow left in the database, read there rather than through the API."""
    user = db.rows('SELECT id FROM "user" WHERE email = :email', email="flow@example.com")
    assert len(user) == 1, user
    tasks = db.rows(
        "SELECT title, status, deleted_at IS NOT NULL AS deleted FROM task "
        "WHERE user_id = :user ORDER BY title",
        user=user[0].id,
    )
    assert [(t.title, t.status, t.deleted) for t in tasks] == [
        ("Buy milk", "Completed", True),
        ("Call mum", "Pending", False),
        ("File taxes", "Pending", False),
    ], tasks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=["arm64", "x86_64"], default=machine_architecture())
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("LAMBDA_ROOT", "/var/cache/taskapi-lambda")),
    )
    args = parser.parse_args()
    os.environ.setdefault("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    started = time.monotonic()
    figures: dict[str, Any] = {"architecture": args.arch}
    with docker_engine(), tempfile.TemporaryDirectory(prefix="check-sam-local-") as folder:
        figures["image"] = ensure_image(args.arch, args.cache)
        figures["build_seconds"] = round(build(args.arch), 1)
        db = create_database("postgresql", Path(folder))
        gateway = bridge_gateway()
        target = httpx.URL(db.url)
        proxy = TcpProxy(target.host, target.port or 5432, listen_host=gateway)
        try:
            url = httpx.URL(db.url).copy_with(host="host.docker.internal", port=proxy.port)
            env_file = Path(folder) / "local-env.json"
            env_file.write_text(
                json.dumps(
                    {
                        "Parameters": {
                            "STAGE": "local",
                            "DATABASE_SECRET_ARN": "",
                            "JWT_SECRET_ARN": "",
                            "DATABASE_URL": str(url),
                            "BCRYPT_ROUNDS": "4",
                            "LOG_LEVEL": "WARNING",
                        }
                    }
                )
            )
            options = local_options(args.arch, env_file, gateway)
            migrated, seconds = invoke("MigrateFunction", "events/migrate-upgrade.json", options)
            assert (migrated["action"], migrated["before"]) == ("upgrade", None), migrated
            head = db.scalar("SELECT version_num FROM alembic_version")
            assert migrated["after"] == head, (migrated, head)
            figures["invoke_migrate_seconds"] = round(seconds, 1)
            health, seconds = invoke("HealthFunction", "events/schedule-health.json", options)
            assert health["database"] == "ok", health
            assert health["migrations"]["up_to_date"] is True, health
            figures["invoke_scheduled_health_seconds"] = round(seconds, 1)
            with start_api(options, Path(folder) / "start-api.log") as api:
                figures["first_request_seconds"] = first_requests(api)
                the_whole_flow(api, SAM_LOCAL)
                check_flow_rows(db)
                figures["warm_p50_ms"] = warm_p50(api)
                figures["burst"] = burst(api, db)
        finally:
            proxy.close()
            drop_database(db)
    figures["total_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
