"""What `make build` (sam build, shared/Makefile) produces: small artifacts, code only,
bytecode for Python 3.13 that stays valid on Lambda's read-only filesystem, and a layer
that really imports and serves requests under Python 3.13.

The artifacts come from `make check-build` (CI runs it before the tests, and sets
REQUIRE_BUILD=1 so that nothing here may skip); locally these tests skip until then.
The deployable layer holds arm64 wheels, which cannot load on this x86_64 machine, so the
import test runs the x86_64 build of the same layer (`make test-layer`) with the functions'
built code.
"""

import json
import os
import subprocess
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from bench.artifacts import find_python313
from localapi.events import http_event
from tests.support.build import AARCH64, FUNCTIONS, TEST_LAYER, X86_64, missing, require_build
from tests.support.database import Database
from tests.support.functions import ROOT

MAX_LAYER_ZIP = 20 * 1024 * 1024
# A function folder holds the project's own code and its bytecode (the auth function, the
# largest, is about 65 KiB zipped); a dependency bundled there instead of in the layer
# would be hundreds of KiB.
MAX_FUNCTION_ZIP = 128 * 1024
# PEP 552 flags of a hash-based pyc that is never checked against its source.
UNCHECKED_HASH = 0b01


@pytest.fixture(scope="module")
def test_layer() -> Path:
    if not (TEST_LAYER / "python").is_dir():
        missing(f"{TEST_LAYER} does not exist")
    return TEST_LAYER / "python"


@pytest.fixture(scope="module")
def python313() -> str:
    path = find_python313()
    if path is None:
        missing("no Python 3.13 interpreter was found")
    assert path is not None
    return path


def zipped_size(folder: Path) -> int:
    """The size of the folder zipped as `sam package` zips it."""
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder))
    return len(buffer.getvalue())


def files(folder: Path) -> list[Path]:
    return sorted(path.relative_to(folder) for path in folder.rglob("*") if path.is_file())


# ---------------------------------------------------------------------------------------
# Sizes and contents


def test_the_layer_zips_to_at_most_20_mib(built: Path, record_property: Any) -> None:
    size = zipped_size(built / "SharedLayer")
    record_property("layer_zip_bytes", size)
    print(f"SharedLayer: {size / 2**20:.2f} MiB zipped")
    assert size <= MAX_LAYER_ZIP, f"{size / 2**20:.2f} MiB"


@pytest.mark.parametrize("name", FUNCTIONS)
def test_each_function_zips_to_at_most_128_kib(
    built: Path, name: str, record_property: Any
) -> None:
    size = zipped_size(built / name)
    record_property(f"{name}_zip_bytes", size)
    print(f"{name}: {size / 1024:.1f} KiB zipped")
    assert size <= MAX_FUNCTION_ZIP, f"{size / 1024:.1f} KiB"


@pytest.mark.parametrize("name", FUNCTIONS)
def test_a_function_ships_its_code_and_bytecode_only(built: Path, name: str) -> None:
    artifact, source = built / name, FUNCTIONS[name]
    shipped = files(artifact)
    code = [path for path in shipped if path.parent.name != "__pycache__"]
    bytecode = [path for path in shipped if path.parent.name == "__pycache__"]
    for path in code:
        assert "tests" not in path.parts, path
        assert not path.name.startswith(("test_", ".")), path
        assert path.suffix != ".pyc", path
        # Nothing but the function's own files (fresh: the build is of this source).
        if (
            not (source / path).is_file()
            or (source / path).read_bytes() != (artifact / path).read_bytes()
        ):
            stale(f"{name}/{path} differs from {source / path}")
    # Every module has its Python 3.13 bytecode, and no other interpreter's.
    modules = {path.with_suffix("") for path in code if path.suffix == ".py"}
    compiled = {path.parent.parent / path.name.split(".")[0] for path in bytecode}
    assert modules == compiled
    assert all(path.name.endswith(".cpython-313.pyc") for path in bytecode), bytecode


def stale(message: str) -> None:
    if require_build():
        pytest.fail(message)
    pytest.skip(f"{message}: the build is older than the source (run `make build`)")


def test_the_layer_holds_the_taskapi_package_as_it_is_now(built: Path) -> None:
    layer = built / "SharedLayer" / "python"
    source = ROOT / "shared" / "taskapi"
    ours = {path.relative_to(source) for path in source.rglob("*.py")}
    shipped = {path.relative_to(layer / "taskapi") for path in (layer / "taskapi").rglob("*.py")}
    if ours != shipped or any(
        (source / p).read_bytes() != (layer / "taskapi" / p).read_bytes() for p in ours
    ):
        stale("the layer's taskapi differs from shared/taskapi")


def test_the_layer_leaves_out_what_lambda_never_reads(built: Path) -> None:
    layer = built / "SharedLayer" / "python"
    assert not (layer / "bin").exists()
    assert not [p for p in layer.rglob("tests") if p.is_dir()]
    assert not list(layer.rglob("*.pyi"))
    # Third-party code is bytecode alone; the project's own keeps its source.
    third_party_sources = [
        p for p in layer.rglob("*.py") if p.relative_to(layer).parts[0] != "taskapi"
    ]
    assert not third_party_sources[:5]
    caches = [p for p in layer.rglob("__pycache__") if p.relative_to(layer).parts[0] != "taskapi"]
    assert not caches[:5]
    # boto3 comes with the Lambda runtime; shipping it would only add weight.
    assert not (layer / "boto3").exists()
    assert not (layer / "botocore").exists()
    # Tokens are HMAC (HS256/384/512): PyJWT needs no cryptography library for them.
    for heavy in ("cryptography", "jose", "ecdsa", "rsa"):
        assert not (layer / heavy).exists(), heavy


def test_the_snapstart_hooks_library_costs_the_layer_a_few_kib(built: Path) -> None:
    # snapshot-restore-py (taskapi.snapstart): one module and its metadata, against the
    # 20 MiB budget.
    layer = built / "SharedLayer" / "python"
    assert (layer / "snapshot_restore_py.pyc").is_file()
    shipped = [
        path
        for top in layer.glob("snapshot_restore_py*")
        for path in (top.rglob("*") if top.is_dir() else [top])
        if path.is_file()
    ]
    assert sum(path.stat().st_size for path in shipped) <= 16 * 1024


def elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", path
    return int.from_bytes(header[18:20], "little")


def test_the_deployable_layer_is_built_for_arm64(built: Path) -> None:
    libraries = list((built / "SharedLayer" / "python").rglob("*.so"))
    assert libraries, "no compiled extension at all: the wheels did not install"
    machines = {path.name: elf_machine(path) for path in libraries}
    assert set(machines.values()) == {AARCH64}, machines


def test_the_test_layer_is_built_for_this_machine(test_layer: Path) -> None:
    machines = {path.name: elf_machine(path) for path in test_layer.rglob("*.so")}
    assert set(machines.values()) == {X86_64}, machines


def pyc_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.pyc"))


def test_all_bytecode_is_python_3_13_and_never_checked_against_sources(
    built: Path, python313: str
) -> None:
    """Lambda's filesystem is read-only: a pyc that fails its check is recompiled, in
    memory, on every cold start. Unchecked hash-based pycs never fail it."""
    magic = bytes.fromhex(
        subprocess.run(  # noqa: S603 (the interpreter found above)
            [python313, "-c", "import importlib.util; print(importlib.util.MAGIC_NUMBER.hex())"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    every = [
        *pyc_files(built / "SharedLayer"),
        *(p for name in FUNCTIONS for p in pyc_files(built / name)),
    ]
    assert len(every) > 100
    wrong = []
    for path in every:
        header = path.read_bytes()[:8]
        flags = int.from_bytes(header[4:8], "little")
        if header[:4] != magic or flags != UNCHECKED_HASH:
            wrong.append(path)
    assert not wrong[:5]


# ---------------------------------------------------------------------------------------
# The built artifacts, run as Lambda runs them


RUNNER = """
import json, sys

task_root, layer, handler_name, events_file, results_file = sys.argv[1:6]
# As the Lambda runtime does: the task root first, then /opt/python.
sys.path[:0] = [task_root, layer]
module_name, _, function_name = handler_name.rpartition(".")
handler = getattr(__import__(module_name), function_name)


class Context:
    function_name = "built"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:built"
    log_group_name = "/aws/lambda/built"
    log_stream_name = "built"

    def get_remaining_time_in_millis(self):
        return 10_000


with open(events_file) as file:
    events = json.load(file)
results = [handler(event, Context()) for event in events]
outside = sorted(
    name
    for name, module in sys.modules.items()
    if getattr(module, "__file__", None)
    and not module.__file__.startswith((task_root, layer, sys.base_prefix))
)
with open(results_file, "w") as file:
    json.dump({"results": results, "outside": outside}, file)
"""


def run_built(
    python313: str,
    layer: Path,
    function: Path,
    handler: str,
    events: list[dict[str, Any]],
    tmp_path: Path,
    env: dict[str, str],
) -> list[dict[str, Any]]:
    """Call the built function's handler under Python 3.13, isolated from this project's
    source and virtualenv (`-I -S`: no PYTHONPATH, no site-packages) and writing no
    bytecode: what it imports comes from the artifacts."""
    events_file, results_file = tmp_path / "events.json", tmp_path / "results.json"
    events_file.write_text(json.dumps(events))
    arguments = [str(function), str(layer), handler, str(events_file), str(results_file)]
    completed = subprocess.run(  # noqa: S603 (the interpreter found above, our own script)
        [python313, "-I", "-S", "-c", RUNNER, *arguments],
        env={"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1", **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    output: dict[str, Any] = json.loads(results_file.read_text())
    assert output["outside"] == [], "imported from outside the artifacts"
    results: list[dict[str, Any]] = output["results"]
    return results


def json_event(method: str, path: str, route: str, **kwargs: Any) -> dict[str, Any]:
    body = kwargs.pop("json_body", None)
    token = kwargs.pop("token", None)
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    return http_event(
        method,
        path,
        headers=headers,
        body=None if body is None else json.dumps(body),
        route_key=route,
        **kwargs,
    )


@pytest.mark.parametrize("empty_database", ["sqlite", "postgresql"], indirect=True)
def test_the_built_functions_serve_requests_under_python_3_13(
    built: Path, test_layer: Path, python313: str, tmp_path: Path, empty_database: Database
) -> None:
    """Migrate a new database, sign up, create and list a task, check health: each
    function in a fresh interpreter, as a cold start on Lambda."""
    env = {
        "STAGE": "test",
        "DATABASE_URL": empty_database.url,
        "JWT_SECRET_KEY": "built-artifacts-test-key-long-enough-for-hs256",
        "BCRYPT_ROUNDS": "4",
        "LOG_LEVEL": "WARNING",
    }

    def run(name: str, handler: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        return run_built(python313, test_layer, built / name, handler, events, folder, env)

    (migrated,) = run("MigrateFunction", "handler.handler", [{"action": "upgrade"}])
    assert migrated["before"] is None
    assert migrated["after"]

    (signup,) = run(
        "AuthFunction",
        "app.handler",
        [
            json_event(
                "POST",
                "/api/auth/signup",
                "ANY /api/auth/{proxy+}",
                path_parameters={"proxy": "signup"},
                json_body={"email": "built@example.com", "name": "Built", "password": "a" * 12},
            )
        ],
    )
    assert signup["statusCode"] == 201, signup
    token = json.loads(signup["body"])["access_token"]

    created, listed = run(
        "TasksFunction",
        "app.handler",
        [
            json_event(
                "POST", "/api/tasks", "ANY /api/tasks", json_body={"title": "Built"}, token=token
            ),
            json_event("GET", "/api/tasks", "ANY /api/tasks", token=token),
        ],
    )
    assert created["statusCode"] == 201, created
    assert listed["statusCode"] == 200, listed
    assert [task["title"] for task in json.loads(listed["body"])["items"]] == ["Built"]

    health, database, swagger_ui, redoc = run(
        "HealthFunction",
        "app.handler",
        [
            http_event("GET", "/health", route_key="GET /health"),
            http_event(
                "GET",
                "/health/db",
                route_key="GET /health/{proxy+}",
                path_parameters={"proxy": "db"},
            ),
            # The docs pages' own files come from the layer (no CDN).
            http_event(
                "GET",
                "/docs/swagger-ui-bundle.js",
                route_key="GET /docs/{proxy+}",
                path_parameters={"proxy": "swagger-ui-bundle.js"},
            ),
            http_event(
                "GET",
                "/redoc/redoc.standalone.js",
                route_key="GET /redoc/{proxy+}",
                path_parameters={"proxy": "redoc.standalone.js"},
            ),
        ],
    )
    assert health["statusCode"] == 200, health
    assert json.loads(health["body"])["status"] == "ok"
    assert database["statusCode"] == 200, database
    assert json.loads(database["body"])["migrations"]["up_to_date"] is True
    assert swagger_ui["statusCode"] == 200, swagger_ui["body"][:300]
    assert "SwaggerUIBundle" in swagger_ui["body"]
    assert redoc["statusCode"] == 200, redoc["body"][:300]

    (maintenance,) = run(
        "MaintenanceFunction",
        "app.handler",
        [json.loads((ROOT / "events" / "schedule-maintenance.json").read_text())],
    )
    assert (maintenance["failed"], maintenance["complete"]) == ([], True), maintenance


def test_the_layer_build_says_so_when_python_3_13_is_missing(tmp_path: Path) -> None:
    make = ["make", "-s", "-C", str(ROOT / "shared"), "build-SharedLayer"]
    completed = subprocess.run(  # noqa: S603 (make, on our own Makefile)
        [*make, f"ARTIFACTS_DIR={tmp_path}", "PYTHON313="],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode != 0
    assert "no Python 3.13 found" in completed.stderr
    assert not (tmp_path / "python").exists()
