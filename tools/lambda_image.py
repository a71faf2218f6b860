"""The Lambda base image that `sam local` runs python3.13 functions on, for this machine's
architecture: `public.ecr.aws/lambda/python:3.13-x86_64` (or `-arm64`), the name SAM CLI
asks Docker for before it adds its own emulator (`/var/rapid/aws-lambda-rie`) and the
layer (`/opt`) on top.

1. Already in Docker: used as it is.
2. Otherwise pulled, within PULL_SECONDS: a machine that reaches the registry runs the
   real image.
3. Otherwise a stand-in under the same name: a Debian trixie root with CPython 3.13
   (tools/debian_root.py, cached in LAMBDA_ROOT, default /var/cache/taskapi-lambda/),
   PyPI's `awslambdaric` (pinned in tools/lambda-image-requirements.txt) in /var/runtime,
   and the base image's entrypoint contract: `/lambda-entrypoint.sh HANDLER` runs
   `/var/runtime/bootstrap` (under the emulator when AWS_LAMBDA_RUNTIME_API is unset),
   which runs the handler from LAMBDA_TASK_ROOT=/var/task with /opt/python and its
   site-packages on sys.path. Packed as a tar and `docker import`ed.

The stand-in is not Amazon Linux: its glibc and OpenSSL are Debian's, so it says nothing
about the deployed runtime's libraries (`make check-arm64` checks those). Prints which
image is used, and how long making it took.
"""

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from tools.debian_root import ensure_root

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "tools" / "lambda-image-requirements.txt"
PULL_SECONDS = 60
# Lambda's architecture name -> Debian's and the wheels' platform tags.
DEBIAN_ARCH = {"x86_64": "amd64", "arm64": "arm64"}
WHEEL_PLATFORM = {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}
STAND_IN_LABEL = "taskapi.stand-in"

ENTRYPOINT = """#!/bin/sh
# The base image's entrypoint: the handler is its one argument.
if [ $# -ne 1 ]; then
  echo "entrypoint requires the handler name to be the first argument" 1>&2
  exit 142
fi
export _HANDLER="$1"
if [ -z "${AWS_LAMBDA_RUNTIME_API}" ]; then
  exec /usr/local/bin/aws-lambda-rie /var/runtime/bootstrap
else
  exec /var/runtime/bootstrap
fi
"""

# SAM starts the emulator itself with no command; the emulator then runs this with the
# handler in AWS_LAMBDA_FUNCTION_HANDLER rather than _HANDLER.
BOOTSTRAP = """#!/bin/sh
export AWS_EXECUTION_ENV=AWS_Lambda_python3.13
# Lambda's own order: the function, the layers, then the runtime.
export PYTHONPATH="${LAMBDA_TASK_ROOT}:/opt/python/lib/python3.13/site-packages:/opt/python:\
${LAMBDA_RUNTIME_DIR}"
cd "${LAMBDA_TASK_ROOT}" || exit 1
exec /usr/bin/python3.13 -m awslambdaric "${_HANDLER:-$AWS_LAMBDA_FUNCTION_HANDLER}"
"""

ENVIRONMENT = {
    "LANG": "en_US.UTF-8",
    "TZ": ":/etc/localtime",
    "PATH": "/var/lang/bin:/usr/local/bin:/usr/bin:/bin:/opt/bin",
    "LAMBDA_TASK_ROOT": "/var/task",
    "LAMBDA_RUNTIME_DIR": "/var/runtime",
}


def image_name(architecture: str) -> str:
    return f"public.ecr.aws/lambda/python:3.13-{architecture}"


def machine_architecture() -> str:
    return "arm64" if platform.machine() in ("aarch64", "arm64") else "x86_64"


def docker(*arguments: str, **options: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *arguments], text=True, check=False, **options)  # type: ignore[call-overload, no-any-return]  # noqa: S603, S607


def image_present(name: str) -> bool:
    return docker("image", "inspect", name, capture_output=True).returncode == 0


def stand_in_version() -> str:
    """What the stand-in is made of: a change to the pins or the scripts makes it again."""
    made_of = REQUIREMENTS.read_text() + ENTRYPOINT + BOOTSTRAP + json.dumps(ENVIRONMENT)
    return hashlib.sha256(made_of.encode()).hexdigest()[:16]


def stand_in_label(name: str) -> str | None:
    """The version a stand-in under `name` was made from; None for the real image."""
    result = docker(
        "image", "inspect", "--format", "{{json .Config.Labels}}", name, capture_output=True
    )
    labels = json.loads(result.stdout or "null") or {}
    label: str | None = labels.get(STAND_IN_LABEL)
    return label


def try_pull(name: str) -> bool:
    try:
        result = docker("pull", "--quiet", name, capture_output=True, timeout=PULL_SECONDS)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def emulator(architecture: str) -> Path:
    """SAM CLI's own copy of the Runtime Interface Emulator, which it adds to every image."""
    sam = ROOT / ".venv-sam" / "bin" / "python"
    found = subprocess.run(  # noqa: S603
        [str(sam), "-c", "import samcli, os; print(os.path.dirname(samcli.__file__))"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
    )
    return Path(found.stdout.strip()) / "local" / "rapid" / f"aws-lambda-rie-{architecture}"


def add_runtime(root: Path, architecture: str) -> None:
    """awslambdaric and its dependencies in /var/runtime, the scripts, the emulator."""
    runtime = root / "var" / "runtime"
    shutil.rmtree(runtime, ignore_errors=True)
    subprocess.run(  # noqa: S603
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            "3.13",
            "--platform",
            WHEEL_PLATFORM[architecture],
            "--target",
            str(runtime),
            "-r",
            str(REQUIREMENTS),
        ],
        check=True,
    )
    (root / "var" / "task").mkdir(parents=True, exist_ok=True)
    (root / "opt").mkdir(exist_ok=True)
    for path, text in (
        (root / "lambda-entrypoint.sh", ENTRYPOINT),
        (runtime / "bootstrap", BOOTSTRAP),
    ):
        path.write_text(text)
        path.chmod(0o755)
    rie = root / "usr" / "local" / "bin" / "aws-lambda-rie"
    rie.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(emulator(architecture), rie)
    rie.chmod(0o755)


def build_stand_in(name: str, architecture: str, cache: Path) -> dict[str, float]:
    root = cache / f"trixie-{DEBIAN_ARCH[architecture]}"
    started = time.monotonic()
    root_seconds = ensure_root(root, DEBIAN_ARCH[architecture])
    add_runtime(root, architecture)
    changes = [f"ENV {key}={value}" for key, value in ENVIRONMENT.items()]
    changes += [
        "WORKDIR /var/task",
        'ENTRYPOINT ["/lambda-entrypoint.sh"]',
        f"LABEL {STAND_IN_LABEL}={stand_in_version()}",
    ]
    with tempfile.TemporaryDirectory(prefix="lambda-image-") as folder:
        archive = Path(folder) / "root.tar"
        with tarfile.open(archive, "w") as tar:
            for entry in sorted(root.iterdir()):
                if entry.name != ".taskapi-root-ready":
                    tar.add(entry, arcname=entry.name)
        command = ["import"]
        for change in changes:
            command += ["--change", change]
        imported = docker(*command, str(archive), name, capture_output=True)
        if imported.returncode != 0:
            raise SystemExit(f"docker import failed:\n{imported.stderr}")
    return {
        "root_seconds": round(root_seconds, 1),
        "image_seconds": round(time.monotonic() - started, 1),
    }


def ensure_image(architecture: str, cache: Path) -> dict[str, object]:
    name = image_name(architecture)
    started = time.monotonic()
    if image_present(name):
        label = stand_in_label(name)
        if label in (None, stand_in_version()):
            kind = "real" if label is None else "stand-in"
            print(f"lambda image: {name} is in Docker already ({kind})", flush=True)
            return {"image": name, "stand_in": label is not None, "image_seconds": 0.0}
        print(f"lambda image: the stand-in {name} is out of date; making it again", flush=True)
    print(f"lambda image: pulling {name} (at most {PULL_SECONDS} s)", flush=True)
    if try_pull(name):
        seconds = round(time.monotonic() - started, 1)
        print(f"lambda image: pulled the real {name} in {seconds} s", flush=True)
        return {"image": name, "stand_in": False, "image_seconds": seconds}
    print(
        f"lambda image: {name} cannot be pulled here; building a stand-in under that name "
        "from Debian trixie's CPython 3.13 and PyPI's awslambdaric",
        flush=True,
    )
    figures = build_stand_in(name, architecture, cache)
    print(f"lambda image: stand-in built in {figures['image_seconds']} s", flush=True)
    return {"image": name, "stand_in": True, **figures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=sorted(DEBIAN_ARCH), default=machine_architecture())
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("LAMBDA_ROOT", "/var/cache/taskapi-lambda")),
    )
    args = parser.parse_args()
    print(json.dumps(ensure_image(args.arch, args.cache)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
