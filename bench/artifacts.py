"""The artifacts the benchmarks run: built as `sam build` builds them, laid out as Lambda
lays them out (the layer's `python/` folder as `/opt/python`, each function as the task root).

The deployable layer is arm64 and cannot be imported here, so the cold starts use the same
build for x86_64 (`shared/Makefile`'s `PLATFORM=x86_64`: same packages, same bytecode);
the arm64 layer is built too, for its size. "Sources" variants ship no bytecode at all:
the same packages installed without compiling, as a layer built without the Makefile's
`compileall` steps would be.

In smoke mode nothing is built: the subjects run from the repository's sources with the
virtualenv's interpreter, which is enough to check that the benchmark code works.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "bench"

# Name -> the folder `sam build` copies (the function's CodeUri), and the Makefile target.
FUNCTIONS = {
    "auth": (ROOT / "functions" / "auth", "build-AuthFunction"),
    "tasks": (ROOT / "functions" / "tasks", "build-TasksFunction"),
    "health": (ROOT / "functions" / "health", "build-HealthFunction"),
    "migrate": (ROOT / "migrations", "build-MigrateFunction"),
    # Baselines, built by the same Makefile target as a function.
    "minimal": (ROOT / "bench" / "apps" / "minimal", "build-TasksFunction"),
    "bare": (ROOT / "bench" / "apps" / "bare", "build-TasksFunction"),
    # The peer baselines, on their own layer as well (BASELINES below).
    "lean": (ROOT / "bench" / "apps" / "lean", "build-TasksFunction"),
    "powertools": (ROOT / "bench" / "apps" / "powertools", "build-TasksFunction"),
    "chalice": (ROOT / "bench" / "apps" / "chalice", "build-TasksFunction"),
}
# Subjects whose code also needs the baselines' layer: Powertools, Chalice's runtime and
# `bench_core` (the Core data access the three share), from bench/requirements.txt.
BASELINES = frozenset({"lean", "powertools", "chalice"})
BASELINE_REQUIREMENTS = ROOT / "bench" / "requirements.txt"
BASELINE_CORE = ROOT / "bench" / "baseline_layer" / "bench_core.py"
WHEEL_PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64")
MIB = 1024 * 1024


@dataclass
class Artifacts:
    """Where each subject's code lives, and how big the deployable zips are."""

    python: str
    layer: Path
    layer_sources: Path
    task_roots: dict[str, Path]
    source_roots: dict[str, Path]
    built: bool
    # The baselines' own layer, on PYTHONPATH after the project's for BASELINES only.
    baselines_layer: Path
    zip_bytes: dict[str, int] = field(default_factory=dict)


def find_python313() -> str | None:
    """The Lambda runtime's interpreter, as shared/Makefile finds it to build the layer
    (a pyenv shim may exist and still refuse; PYTHON313 overrides the search)."""
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    try:
        found = subprocess.run(
            ["make", "--no-print-directory", "-s", "-C", str(ROOT / "shared"), "print-python313"],
            capture_output=True,
            text=True,
            check=True,
            env=environment,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return found or None


def _make(target: str, artifacts_dir: Path, cwd: Path, python: str, platform: str = "") -> None:
    if artifacts_dir.exists():
        shutil.rmtree(artifacts_dir)
    artifacts_dir.mkdir(parents=True)
    command = ["make", "--no-print-directory", "-f", str(ROOT / "shared" / "Makefile"), target]
    command += [f"ARTIFACTS_DIR={artifacts_dir}", f"PYTHON313={python}"]
    if platform:
        command.append(f"PLATFORM={platform}")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    _quiet(command, cwd=cwd, env=env)


def _quiet(command: list[str], **options: Any) -> None:
    """Run a build step; its output (pip's chatter) is shown only if it fails."""
    completed = subprocess.run(command, capture_output=True, text=True, check=False, **options)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stdout}\n{completed.stderr}")


def _install_sources(python: str, target: Path) -> None:
    """The layer's packages as sources alone: no bytecode shipped."""
    if target.exists():
        shutil.rmtree(target)
    platforms = [arg for name in WHEEL_PLATFORMS for arg in ("--platform", name)]
    _quiet(
        [
            *(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
            *("--no-compile", *platforms, "--implementation", "cp", "--python-version", "3.13"),
            *("--only-binary=:all:", "--target", str(target)),
            *("-r", str(ROOT / "shared" / "requirements.txt")),
        ]
    )
    _copy_sources(ROOT / "shared" / "taskapi", target / "taskapi")


def _install_baselines(target: Path, *, python: str | None) -> None:
    """The baselines' layer: their pinned packages (pure Python wheels) and `bench_core`,
    compiled by the subjects' interpreter as the project's layer is (`python`; None in
    smoke mode, where nothing is compiled). Installed again only when the requirements
    change, by this virtualenv's pip: the test virtualenv itself is never touched."""
    stamp = target / ".requirements"
    wanted = BASELINE_REQUIREMENTS.read_text()
    if not (stamp.exists() and stamp.read_text() == wanted):
        if target.exists():
            shutil.rmtree(target)
        _quiet(
            [
                *(sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
                *("--no-deps", "--no-compile", "--target", str(target)),
                *("-r", str(BASELINE_REQUIREMENTS)),
            ]
        )
        # What `chalice package` ships of Chalice: its runtime, not its CLI.
        for path in (target / "chalice").iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            elif path.name not in ("__init__.py", "app.py"):
                path.unlink()
        shutil.rmtree(target / "bin", ignore_errors=True)
        stamp.write_text(wanted)
    shutil.copy2(BASELINE_CORE, target / BASELINE_CORE.name)
    if python is not None:
        compile_options = ("-q", "-j", "0", "--invalidation-mode", "unchecked-hash")
        _quiet([python, "-m", "compileall", *compile_options, str(target)])


def _copy_sources(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def zipped_size(folder: Path, *, prefix: str = "", skip_caches: bool = False) -> int:
    """Bytes of the folder zipped as `sam package` zips it (deflate)."""
    archive = BUILD / "zips" / f"{prefix or 'x'}-{folder.name}.zip"
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not (skip_caches and "__pycache__" in path.parts):
                zipped.write(path, Path(prefix) / path.relative_to(folder))
    size = archive.stat().st_size
    archive.unlink()
    return size


class Log:
    """Progress lines on stderr, so that stdout keeps only the table."""

    def __call__(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build(*, smoke: bool, log: Log) -> Artifacts:
    """The subjects' code: built for Lambda, or (smoke) the sources in place."""
    if smoke:
        return _sources_in_place()
    python = find_python313()
    if python is None:
        log("no Python 3.13 found: cold starts and warm latency fall back to the sources")
        return _sources_in_place()
    log("building the x86_64 layer (shared/Makefile PLATFORM=x86_64)")
    _make("build-SharedLayer", BUILD / "layer-x86_64", ROOT / "shared", python, "x86_64")
    log("building the arm64 layer (the deployable one, for its size)")
    _make("build-SharedLayer", BUILD / "layer-arm64", ROOT / "shared", python, "arm64")
    log("installing the baselines' layer (bench/requirements.txt)")
    _install_baselines(BUILD / "baselines" / "python", python=python)
    log("installing the layer's packages without bytecode")
    _install_sources(python, BUILD / "layer-sources" / "python")
    task_roots, source_roots = {}, {}
    for name, (folder, target) in FUNCTIONS.items():
        task_roots[name] = BUILD / "functions" / name
        _make(target, task_roots[name], folder, python)
        source_roots[name] = BUILD / "functions-sources" / name
        _copy_sources(folder, source_roots[name])
    artifacts = Artifacts(
        python=python,
        layer=BUILD / "layer-x86_64" / "python",
        layer_sources=BUILD / "layer-sources" / "python",
        task_roots=task_roots,
        source_roots=source_roots,
        built=True,
        baselines_layer=BUILD / "baselines" / "python",
    )
    artifacts.zip_bytes["layer (arm64, deployed)"] = zipped_size(
        BUILD / "layer-arm64" / "python", prefix="python"
    )
    artifacts.zip_bytes["layer (x86_64)"] = zipped_size(artifacts.layer, prefix="python")
    for name in ("auth", "tasks", "health", "migrate"):
        artifacts.zip_bytes[name] = zipped_size(task_roots[name])
    return artifacts


def last_build() -> Artifacts:
    """What the last `make bench` built (build/bench), or the sources in place without one:
    for the tools that examine one subject (bench/profile_list.py, bench/import_times.py)."""
    python = find_python313()
    if python is None or not (BUILD / "layer-x86_64" / "python").exists():
        return _sources_in_place()
    return Artifacts(
        python=python,
        layer=BUILD / "layer-x86_64" / "python",
        layer_sources=BUILD / "layer-sources" / "python",
        task_roots={name: BUILD / "functions" / name for name in FUNCTIONS},
        source_roots={name: BUILD / "functions-sources" / name for name in FUNCTIONS},
        built=True,
        baselines_layer=BUILD / "baselines" / "python",
    )


def _sources_in_place() -> Artifacts:
    roots = {name: folder for name, (folder, _) in FUNCTIONS.items()}
    _install_baselines(BUILD / "baselines" / "python", python=None)
    artifacts = Artifacts(
        python=sys.executable,
        layer=ROOT / "shared",
        layer_sources=ROOT / "shared",
        task_roots=roots,
        source_roots=roots,
        built=False,
        baselines_layer=BUILD / "baselines" / "python",
    )
    artifacts.zip_bytes["layer (sources only)"] = zipped_size(
        ROOT / "shared" / "taskapi", skip_caches=True
    )
    for name in ("auth", "tasks", "health", "migrate"):
        artifacts.zip_bytes[name] = zipped_size(roots[name], skip_caches=True)
    return artifacts


def run_child(
    artifacts: Artifacts, script: str, config: dict[str, Any], *, env: dict[str, str], what: str
) -> Any:
    """Run `script` in a fresh Python 3.13 laid out as Lambda lays a function out (the layer
    as /opt/python, no bytecode written), hand it `config` and return the JSON it writes.

    Its stdout (the request log lines) goes where Lambda sends it: a pipe nobody waits for.
    """
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": os.pathsep.join((str(artifacts.layer), str(artifacts.baselines_layer))),
        **env,
    }
    with tempfile.TemporaryDirectory() as folder:
        config_path, result_path = Path(folder) / "config.json", Path(folder) / "result.json"
        config_path.write_text(json.dumps(config))
        completed = subprocess.run(
            [artifacts.python, "-c", script, str(config_path), str(result_path)],
            cwd=folder,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"{what} failed:\n{completed.stderr[-3000:]}")
        return json.loads(result_path.read_text())
