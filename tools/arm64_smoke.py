"""Run inside the emulated aarch64 Python 3.13 by `tools/check_arm64.py`: the built layer and
functions, imported from .aws-sam/build, serve real API Gateway events on SQLite.

    python3.13 -I -B tools/arm64_smoke.py BUILD_DIR EVENTS_DIR

Prints one JSON object: what was served, which native extensions were loaded, how many
modules were imported. Exits non-zero on the first wrong answer. It uses nothing but the
standard library and what the artifacts ship, so it proves what Lambda would run.
"""

import importlib
import importlib.util
import json
import os
import platform
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

FUNCTIONS = ("HealthFunction", "AuthFunction", "TasksFunction")


class Context:
    """The Lambda context attributes the handlers read."""

    function_name = "arm64-smoke"
    memory_limit_in_mb = 512

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"wrong answer: {what}")


def event(events: Path, name: str, **replace: str) -> dict[str, Any]:
    text = (events / name).read_text()
    for placeholder, value in replace.items():
        text = text.replace(f"<{placeholder}>", value)
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def call(handler: Any, request: dict[str, Any], expected: int) -> dict[str, Any]:
    result: dict[str, Any] = handler(request, Context())
    status = result["statusCode"]
    if status != expected:
        raise SystemExit(f"{request['rawPath']}: {status} (expected {expected}): {result}")
    body: dict[str, Any] = json.loads(result.get("body") or "null") or {}
    return body


def main(build: Path, events: Path) -> dict[str, Any]:
    started = time.monotonic()
    layer = build / "SharedLayer" / "python"
    # Lambda's order: the function's folder first, then the layer (/opt/python).
    sys.path[:0] = [str(build / name) for name in (*FUNCTIONS, "MigrateFunction")] + [str(layer)]
    workdir = Path(os.environ["ARM64_SMOKE_DIR"])
    os.chdir(workdir)  # no developer's .env
    os.environ.update(
        STAGE="test",
        DATABASE_URL=f"sqlite:///{workdir / 'smoke.db'}",
        JWT_SECRET_KEY="arm64-smoke-key-that-is-long-enough-for-hs256",  # noqa: S106
        BCRYPT_ROUNDS="4",
        LOG_LEVEL="WARNING",
        CORS_ORIGINS="",
    )
    served: list[str] = []

    migrate = load(build / "MigrateFunction" / "handler.py", "migrate_handler")
    upgraded = migrate.handler({"action": "upgrade"}, Context())
    served.append(f"MigrateFunction upgrade -> {upgraded['after']}")

    apps = {name: load(build / name / "app.py", f"{name}_app") for name in FUNCTIONS}
    health, auth, tasks = (apps[name].handler for name in FUNCTIONS)

    expect(call(health, event(events, "health-get.json"), 200)["status"] == "ok", "/health")
    served.append("GET /health 200")
    db = call(health, event(events, "health-db.json"), 200)
    expect(db["database"] == "ok", f"/health/db: {db}")
    expect(db["migrations"]["up_to_date"] is True, f"/health/db: {db}")
    served.append("GET /health/db 200")
    signed_up = call(auth, event(events, "auth-signup.json"), 201)
    served.append("POST /api/auth/signup 201")
    token = signed_up["access_token"]
    created = call(tasks, event(events, "tasks-create.json", ACCESS_TOKEN=token), 201)
    served.append("POST /api/tasks 201")
    # The authenticated list (status=Pending): the new task, as the user created it.
    listed = call(tasks, event(events, "tasks-list.json", ACCESS_TOKEN=token), 200)
    if [(t["id"], t["priority"]) for t in listed["items"]] != [(created["id"], "High")]:
        raise SystemExit(f"the list does not hold the new task: {listed}")
    served.append("GET /api/tasks 200")
    call(auth, event(events, "auth-login.json"), 200)
    served.append("POST /api/auth/login 200")

    # Every native extension the layer ships, loaded: SQLite above never touches psycopg2.
    native = sorted(
        ".".join(path.relative_to(layer).with_suffix("").with_suffix("").parts)
        for path in layer.rglob("*.so")
        if not any(part.endswith(".libs") for part in path.relative_to(layer).parts)
    )
    for name in native:
        importlib.import_module(name)
    loaded = sorted(
        name
        for name, module in sys.modules.items()
        if str(getattr(module, "__file__", "") or "").endswith(".so")
    )
    import psycopg2

    return {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "libc": "-".join(platform.libc_ver()),
        "served": served,
        "native_extensions": loaded,
        "libpq": psycopg2.extensions.libpq_version(),
        "modules_imported": len(sys.modules),
        "seconds": round(time.monotonic() - started, 1),
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]))))
