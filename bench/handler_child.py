"""Run by `bench/quota.py` and `bench/pooler.py` as `python -c CODE config.json result.json`
with the layer on `PYTHONPATH`: load the apps into one warm process and time each
`handler(event, context)` of the config's subjects, interleaved call by call. A subject
may carry its own environment (`env`), applied for its app's import and for each of its
calls: two engines of one app under different settings live in one process; and its own
`invocations` and `warmup`, fewer than the config's (a read that takes seconds), taking
part in the first rounds only.

Standard library and the layer only.
"""

import gc
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

config: dict[str, Any] = json.loads(open(sys.argv[1]).read())  # noqa: SIM115


class LambdaContext:
    function_name = "bench"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    aws_request_id = "00000000-0000-0000-0000-000000000001"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    log_group_name = "/aws/lambda/bench"
    log_stream_name = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def load(name: str, root: str) -> Any:
    """A fresh copy of the task root's `app.py` and of the layer's modules, as a new
    container would import them: each copy reads its own settings, builds its own engine."""
    # SQLModel too: its one metadata would refuse the layer's tables a second time.
    fresh = ("taskapi", "sqlmodel", "tasks_", "auth_", "health_")
    for loaded in [m for m in sys.modules if m.startswith(fresh)]:
        del sys.modules[loaded]
    if root not in sys.path:
        sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, "app.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


apps: dict[str, Any] = {}


def invocation(subject: dict[str, Any]) -> Callable[[], int]:
    """The subject's call, its app loaded (once per app and environment) and warmed up
    under its environment: the settings and the engine are built at the first request.
    The call returns the status it got."""
    environment = subject.get("env", {})
    key = json.dumps([subject["app"], environment], sort_keys=True)
    if key not in apps:
        os.environ.update(environment)
        apps[key] = load(f"bench_app_{len(apps)}", config["roots"][subject["app"]])
    handler, event = apps[key].handler, subject["event"]
    context = LambdaContext()

    def call() -> int:
        response = handler(event, context)
        if response["statusCode"] != subject["status"]:
            failed[subject["name"]] = {"status": response["statusCode"], "body": response["body"]}
        return int(response["statusCode"])

    for _ in range(subject.get("warmup", config["warmup"])):
        if call() != subject["status"]:
            break
    return call


# Subjects that answered another status than expected: reported once, then left out (a
# read that times out would otherwise take the run's time).
failed: dict[str, dict[str, Any]] = {}
subjects = {subject["name"]: invocation(subject) for subject in config["subjects"]}
rounds = {
    subject["name"]: subject.get("invocations", config["invocations"])
    for subject in config["subjects"]
}
samples: dict[str, list[float]] = {name: [] for name in subjects}
gc.collect()
for round_number in range(config["invocations"]):
    for name, call in subjects.items():
        if name in failed or round_number >= rounds[name]:
            continue
        started = time.perf_counter()
        call()
        samples[name].append((time.perf_counter() - started) * 1000)
with open(sys.argv[2], "w") as result:
    json.dump({"samples": samples, "failed": failed}, result)
