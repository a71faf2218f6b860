"""The commands a developer types, run as typed: `make run`, `make migrate`, `make invoke`,
`make help` and `python -m localapi`, each in a subprocess against a free port, from a
folder laid out as a fresh clone (links to this one's code and virtualenv, a `.env` and a
SQLite file of its own). Settings precedence, start-up output and failures as one line."""

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory

from localapi.server import free_port
from tests.support.database import Database, alembic_config
from tests.support.local_server import a_parallel_burst_of_50, the_whole_flow, wait_until_serving

ROOT = Path(__file__).resolve().parent.parent
# What a clone holds that the commands read; linked, so that the code is this checkout's.
CLONE = (
    "Makefile",
    "template.yaml",
    "alembic.ini",
    "requirements-dev.txt",
    "requirements-local.txt",
    "functions",
    "shared",
    "migrations",
    "localapi",
    "tools",
    "events",
    ".venv",
)
# Settings a developer's shell (or this test run) may hold, that would change the answers.
SETTINGS = (
    "STAGE",
    "DATABASE_URL",
    "DATABASE_SECRET_ARN",
    "JWT_SECRET_KEY",
    "JWT_SECRET_ARN",
    "CORS_ORIGINS",
    "BCRYPT_ROUNDS",
    "LOG_LEVEL",
    "PORT",
    "ARGS",
    "PYTHONPATH",
    "MAKEFLAGS",
    "MFLAGS",
    "MAKELEVEL",
)
PREFLIGHT = {"Access-Control-Request-Method": "POST"}
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    if not (ROOT / ".venv" / "bin" / ".installed").exists():
        pytest.skip("needs this checkout's .venv (make venv)")
    for name in CLONE:
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def skip_under_another_python() -> None:
    """`make` runs this checkout's .venv whatever interpreter runs pytest: under another
    one (`make test-py313`) a make command would only repeat what `make test` ran."""
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip("runs .venv's Python through make: make test runs it")


def environment(**settings: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in SETTINGS}
    return {**env, **settings}


def make(clone: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    skip_under_another_python()
    return subprocess.run(  # noqa: S603 (make, on our own Makefile)
        ["make", "--no-print-directory", *args],  # noqa: S607
        cwd=clone,
        env=environment(**settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@dataclass
class Running:
    client: httpx.Client
    log: Path

    def output(self) -> str:
        return self.log.read_text()


@contextmanager
def make_run(clone: Path, *args: str, **settings: str) -> Iterator[Running]:
    """`make run PORT=<free>` until the block ends; its whole process group is stopped."""
    skip_under_another_python()
    port = free_port()
    log = clone / f"make-run-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: S603
            ["make", "--no-print-directory", "run", f"PORT={port}", *args],  # noqa: S607
            cwd=clone,
            env=environment(**settings),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_serving(process, f"{base_url}/health", log, name="make run", pause=0.2)
        with httpx.Client(base_url=base_url, timeout=15) as client:
            yield Running(client, log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def failing(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The lines a failed command printed, less make's own "Error N" line."""
    assert result.returncode != 0, result.stdout + result.stderr
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if not re.match(r"make: \*\*\* .* Error \d+$", line)]


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def allowed_origin(client: httpx.Client, origin: str) -> str | None:
    response = client.options("/api/tasks", headers={**PREFLIGHT, "Origin": origin})
    allowed: str | None = response.headers.get("access-control-allow-origin")
    return allowed


def bcrypt_cost(clone: Path, client: httpx.Client, email: str) -> int:
    """Sign up, and read the cost the password was hashed at from the SQLite file."""
    body = {"email": email, "name": "Cost", "password": "correct horse battery"}
    assert client.post("/api/auth/signup", json=body).status_code == 201
    # closing(): sqlite3's own context manager commits but leaves the file open.
    with closing(sqlite3.connect(clone / "taskapi.db")) as connection:
        (hashed,) = connection.execute(
            'SELECT hashed_password FROM "user" WHERE email = ?', (email,)
        ).fetchone()
    return int(hashed.split("$")[2])


# ---------------------------------------------------------------------------------------
# Start-up output


def test_make_run_says_once_that_it_migrated_and_nothing_twice(clone: Path) -> None:
    with make_run(clone) as running:
        assert running.client.get("/health").status_code == 200
        output = running.output()
    lines = [line for line in output.splitlines() if not line.startswith("{")]
    migrated = [line for line in lines if line.startswith("Database ")]
    assert migrated == [
        f"Database sqlite:///./taskapi.db: migrated from an empty database to revision"
        f" {head_revision()}"
    ]
    assert sum("Not set locally" in line for line in lines) == 1
    assert "alembic" not in output
    assert "Traceback" not in output
    uvicorn_lines = [line for line in lines if not line.startswith("  ")]
    assert len(uvicorn_lines) == len(set(uvicorn_lines)), output
    # The next start finds nothing to do, and says that.
    again = make(clone, "migrate")
    assert again.returncode == 0, again.stderr
    assert again.stdout == (
        f"Database sqlite:///./taskapi.db: already at revision {head_revision()},"
        f" nothing to migrate\n"
    )


def test_make_run_serves_the_whole_flow_and_a_parallel_burst(clone: Path) -> None:
    # What tests/test_localapi_e2e.py sends `python -m localapi`, through `make run` as a
    # developer types it: its migration, its workers (one more than the cores), its SQLite file.
    settings = {"CORS_ORIGINS": "http://localhost:5173", "BCRYPT_ROUNDS": "4"}
    with make_run(clone, **settings) as running:
        the_whole_flow(running.client)
        a_parallel_burst_of_50(running.client)
        output = running.output()
    assert "Traceback" not in output
    assert " 500 " not in output


# ---------------------------------------------------------------------------------------
# Settings precedence: shell, then .env, then the template's environment and parameters


def test_the_shell_beats_env_and_env_beats_the_template(clone: Path) -> None:
    (clone / ".env").write_text("CORS_ORIGINS=http://localhost:5173\nBCRYPT_ROUNDS=5\n")
    with make_run(clone, CORS_ORIGINS="http://localhost:3000") as running:
        client = running.client
        # CORS_ORIGINS: the shell's value, over .env's and the template's "*".
        assert allowed_origin(client, "http://localhost:3000") == "http://localhost:3000"
        assert allowed_origin(client, "http://localhost:5173") is None
        # BCRYPT_ROUNDS: .env's 5, over the template's BcryptRounds default (12).
        assert bcrypt_cost(clone, client, "env@example.com") == 5


def test_the_env_file_beats_the_templates_cors_origins(clone: Path) -> None:
    (clone / ".env").write_text("CORS_ORIGINS=http://localhost:5173\n")
    with make_run(clone) as running:
        assert allowed_origin(running.client, "http://localhost:5173") == "http://localhost:5173"
        assert allowed_origin(running.client, "http://localhost:3000") is None


def test_the_templates_defaults_apply_when_nothing_else_is_set(clone: Path) -> None:
    """Also: ARGS reaches the server (`--log-level warning` stops the per-request lines)."""
    with make_run(clone, "ARGS=--log-level warning") as running:
        client = running.client
        # The template's CorsOrigins default, "*", and BcryptRounds default, 12.
        assert allowed_origin(client, "http://anywhere.example") == "*"
        assert bcrypt_cost(clone, client, "template@example.com") == 12
        output = running.output()
    assert '"OPTIONS /api/tasks HTTP/1.1"' not in output
    assert "Application startup complete" not in output
    # The functions' JSON request lines are quiet too: one option for the whole server.
    assert '"message": "request"' not in output, output


def test_each_request_is_one_line_in_make_runs_log(clone: Path) -> None:
    path = f"/api/tasks/{uuid.uuid4()}"
    with make_run(clone) as running:
        assert running.client.get(path).status_code == 401
        output = running.output()
    lines = [line for line in output.splitlines() if path in line]
    assert len(lines) == 1, output
    logged = json.loads(lines[0])
    assert (logged["message"], logged["method"], logged["status"]) == ("request", "GET", 401)


def test_a_save_that_breaks_a_function_answers_502_at_once_and_the_rest_serves(
    clone: Path,
) -> None:
    # Copies of the functions and of the template that names them (code is found from
    # the template's real path), not links to this checkout's: the test saves into them.
    for name in ("functions", "template.yaml"):
        (clone / name).unlink()
    shutil.copytree(ROOT / "functions", clone / "functions", ignore=IGNORED)
    shutil.copy(ROOT / "template.yaml", clone / "template.yaml")
    app = clone / "functions" / "tasks" / "app.py"
    code = app.read_text()
    with make_run(clone) as running:
        client = running.client
        assert client.get("/api/tasks").status_code == 401
        app.write_text(code + "\nimport nonexistent_module_xyz\n")
        said = "[localapi] TasksFunction cannot start: "
        wait_for(lambda: said in running.output(), running.output)
        started = time.monotonic()
        broken = client.get("/api/tasks")
        # Within a second ...
        assert time.monotonic() - started < 1
        assert (broken.status_code, broken.json()) == (502, {"message": "Internal Server Error"})
        # ... because the request did not try to import the function again.
        assert running.output().count(said) == 1
        assert client.get("/health").status_code == 200
        assert client.post("/api/auth/login", json={}).status_code == 422
        app.write_text(code)
        wait_for(lambda: client.get("/api/tasks").status_code == 401, running.output)
        output = running.output()
    # Once per restart: a save may be seen as two (the file truncated, then written).
    lines = [line for line in output.splitlines() if said in line]
    assert lines, output
    for line in lines:
        assert "No module named 'nonexistent_module_xyz'" in line
        assert line.endswith("its routes answer 502 until a save fixes it"), line


def wait_for(condition: Callable[[], bool], output: Callable[[], str]) -> None:
    """Until `condition` holds (a reload and its functions' imports: 60 s at most)."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, output()
        time.sleep(0.2)


@pytest.mark.parametrize("where", ["shell", ".env"])
def test_empty_cors_origins_turns_cors_off_as_on_aws(clone: Path, where: str) -> None:
    settings = {"CORS_ORIGINS": ""} if where == "shell" else {}
    if where == ".env":
        (clone / ".env").write_text("CORS_ORIGINS=\n")
    with make_run(clone, **settings) as running:
        client = running.client
        preflight = client.options(
            "/api/tasks", headers={**PREFLIGHT, "Origin": "http://localhost:5173"}
        )
        # No CorsConfiguration: API Gateway passes the OPTIONS request to the function.
        assert "access-control-allow-origin" not in preflight.headers
        response = client.get("/health", headers={"Origin": "http://localhost:5173"})
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers


# ---------------------------------------------------------------------------------------
# Failures: one line, a non-zero exit, no traceback


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://app:pw@127.0.0.1/tasks", "driver 'mysql' is not shipped"),
        ("not a url", "cannot be parsed"),
    ],
)
def test_an_unusable_database_url_stops_make_run_in_one_line(
    clone: Path, url: str, says: str
) -> None:
    lines = failing(make(clone, "run", f"PORT={free_port()}", DATABASE_URL=url))
    assert len(lines) == 1, lines
    assert lines[0].startswith("Configuration error: ")
    assert says in lines[0]
    assert "postgresql://user:password@host:5432/dbname" in lines[0]


def test_a_stage_without_a_database_stops_make_migrate_in_one_line(clone: Path) -> None:
    [line] = failing(make(clone, "migrate", STAGE="prod"))
    assert line.startswith("Configuration error: Stage 'prod' needs DATABASE_SECRET_ARN")


def test_an_unreachable_database_is_one_line_and_debug_shows_the_traceback(
    clone: Path,
) -> None:
    port = free_port()
    url = f"postgres://app:hunter2@127.0.0.1:{port}/tasks"
    [line] = failing(make(clone, "run", f"PORT={free_port()}", DATABASE_URL=url))
    assert line.startswith(
        f"Cannot connect to the database at postgresql+psycopg2://app:***@127.0.0.1:{port}/tasks"
    )
    assert "Connection refused" in line
    assert "hunter2" not in line
    debugged = failing(make(clone, "migrate", "ARGS=--debug", DATABASE_URL=url))
    assert any(line.startswith("Traceback") for line in debugged)
    assert "Task API at" not in "\n".join(debugged)


def test_a_function_that_cannot_start_stops_make_run_in_one_line(clone: Path) -> None:
    # Migrating needs only the database; the auth function needs a JWT key too.
    settings = {"STAGE": "prod", "DATABASE_URL": "sqlite:///./prod.db"}
    lines = failing(make(clone, "run", f"PORT={free_port()}", **settings))
    errors = [line for line in lines if "ERROR" in line]
    assert errors == [
        "ERROR:     [localapi] AuthFunction cannot start: ConfigurationError: Stage 'prod'"
        " needs JWT_SECRET_ARN or JWT_SECRET_KEY (--debug shows the traceback)"
    ]
    assert not any("Traceback" in line for line in lines)


def test_python_m_localapi_reports_a_function_that_cannot_start(clone: Path) -> None:
    for debug in ((), ("--debug",)):
        result = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "localapi", "--port", str(free_port()), *debug],
            cwd=clone,
            env=environment(STAGE="prod", PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'shared'}"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1
        # Checked before the banner: nothing says the API is served.
        assert "Task API at" not in result.stdout
        assert "cannot start: ConfigurationError: Stage 'prod' needs" in result.stderr
        assert ("Traceback" in result.stderr) == bool(debug)


@pytest.mark.parametrize("command", ["make run", "python -m localapi"])
def test_a_busy_port_is_one_line_before_the_banner(clone: Path, command: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        if command == "make run":
            result = make(clone, "run", f"PORT={port}")
        else:
            result = subprocess.run(  # noqa: S603
                [sys.executable, "-m", "localapi", "--port", str(port)],
                cwd=clone,
                env=environment(PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'shared'}"),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
    lines = [line for line in failing(result) if not line.startswith("Database ")]
    assert lines == [
        f"ERROR:     [localapi] Port {port} on 127.0.0.1 is already in use (another server?):"
        f" stop it, or serve on another port (--port, or PORT=... make run)"
    ]


# ---------------------------------------------------------------------------------------
# Any PostgreSQL URL


@pytest.mark.parametrize("empty_database", ["postgresql"], indirect=True)
def test_make_run_serves_the_api_from_a_plain_postgresql_url(
    clone: Path, empty_database: Database
) -> None:
    # `postgres://` (Heroku-style) stopped `make migrate` with NoSuchModuleError.
    heroku_style = empty_database.url.replace("postgresql+psycopg2://", "postgres://", 1)
    migrated = make(clone, "migrate", DATABASE_URL=heroku_style)
    assert migrated.returncode == 0, migrated.stderr
    assert f"migrated from an empty database to revision {head_revision()}" in migrated.stdout
    # `postgresql://` answered 500 on every database route (psycopg 3 is not shipped).
    url = empty_database.url.replace("postgresql+psycopg2://", "postgresql://", 1)
    with make_run(clone, DATABASE_URL=url, BCRYPT_ROUNDS="4") as running:
        body = {"email": "pg@example.com", "name": "PG", "password": "correct horse battery"}
        signup = running.client.post("/api/auth/signup", json=body)
        assert signup.status_code == 201, signup.text
        token = signup.json()["access_token"]
        created = running.client.post(
            "/api/tasks",
            json={"title": "On PostgreSQL"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert created.status_code == 201
        assert "already at revision" in running.output()
    assert empty_database.scalar('SELECT count(*) FROM "user"') == 1


# ---------------------------------------------------------------------------------------
# make help and make invoke


def test_make_help_lists_every_target_with_its_description(clone: Path) -> None:
    targets = re.findall(r"^([a-z0-9-]+):", (ROOT / "Makefile").read_text(), flags=re.M)
    result = make(clone, "help")
    assert result.returncode == 0
    listed = dict(line.split("\t", 1) for line in result.stdout.splitlines())
    assert "test-py313" in listed
    assert sorted(listed) == sorted(set(targets))
    assert all(description.strip() for description in listed.values())
    # Plain `make` is `make help`.
    assert make(clone).stdout == result.stdout


def test_make_invoke_says_what_to_type(clone: Path) -> None:
    [line] = failing(make(clone, "invoke"))
    assert "make invoke FUNCTION=HealthFunction EVENT=events/schedule-health.json" in line
    [line] = failing(make(clone, "invoke", "FUNCTION=HealthFunction", "EVENT=events/nope.json"))
    assert "No event file events/nope.json" in line
    assert "'-' to read the event from stdin" in line
    [line] = failing(make(clone, "invoke", "FUNCTION=NoSuchFunction"))
    assert "No function 'NoSuchFunction'" in line
    assert "HealthFunction" in line


# ---------------------------------------------------------------------------------------
# What README.md tells a newcomer to type, run as written


def readme_block(heading: str) -> str:
    """The first ```sh block after `heading` in README.md."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(f"\n## {heading}\n") :]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def test_the_readmes_first_requests_run_as_written_against_make_run(clone: Path) -> None:
    script = readme_block("First requests")
    assert "API=http://127.0.0.1:3000\n" in script
    with make_run(clone) as running:
        # The one change: the port this test's server listens on.
        script = script.replace("http://127.0.0.1:3000", str(running.client.base_url))
        result = subprocess.run(  # noqa: S603
            ["bash", "-euo", "pipefail", "-c", script],  # noqa: S607
            cwd=clone,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    listed, completed = (json.loads(line) for line in result.stdout.splitlines())
    [task] = listed["items"]
    assert (task["title"], task["priority"], listed["total"]) == ("Buy milk", "High", 1)
    assert task["due_at"] == "2030-01-01T09:00:00Z"
    assert (completed["id"], completed["status"]) == (task["id"], "Completed")
    assert completed["completed_at"] is not None


def test_every_make_invoke_in_the_readme_answers_2xx_as_written(clone: Path) -> None:
    commands = re.findall(r"^make invoke .*$", readme_block("Working locally"), flags=re.M)
    assert len(commands) >= 4
    for command in commands:
        result = make(clone, *command.split()[1:])
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        answer = json.loads(result.stdout)
        assert "errorType" not in answer, (command, answer)
        if "statusCode" in answer:
            assert 200 <= answer["statusCode"] < 300, (command, answer)


def test_make_invoke_takes_a_token(clone: Path) -> None:
    signup = make(clone, "invoke", "FUNCTION=AuthFunction", "EVENT=events/auth-signup.json")
    assert signup.returncode == 0, signup.stderr
    token = json.loads(json.loads(signup.stdout)["body"])["access_token"]
    me = make(
        clone, "invoke", "FUNCTION=AuthFunction", "EVENT=events/auth-me.json", f"TOKEN={token}"
    )
    assert me.returncode == 0, me.stderr
    user = json.loads(json.loads(me.stdout)["body"])
    assert (
        user["email"]
        == json.loads(json.loads((ROOT / "events" / "auth-signup.json").read_text())["body"])[
            "email"
        ]
    )
