"""`make check-arm64`: the deployable arm64 artifacts (.aws-sam/build, from `make build`)
run under emulation, and every shipped ELF asks for no newer glibc than Lambda's.

1. Every ELF file in the layer and the functions is an AArch64 shared object whose
   required `GLIBC_*` symbol versions are at most 2.34 (the python3.13 runtime's
   Amazon Linux 2023 glibc): a wheel built for a newer glibc imports here and fails there.
2. An arm64 Debian root with Python 3.13 (trixie's python3.13; bookworm has only 3.11),
   made by `debootstrap --foreign` and unpacked with `dpkg-deb`, no chroot: the emulator
   (`qemu-aarch64-static -L ROOT`) runs its interpreter directly, so neither binfmt_misc nor
   a second debootstrap stage is needed. Kept in ARM64_ROOT (default
   /var/cache/taskapi-arm64/trixie) and built from scratch when missing.
3. `tools/arm64_smoke.py` in that interpreter: migrations, /health, /health/db, a sign-up,
   a login, a task created and listed, on SQLite, through the built handlers; then every
   native extension of the layer imported.

Prints its figures (time, requests, modules) as JSON.
"""

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.debian_root import ensure_root

ROOT = Path(__file__).resolve().parent.parent
LAMBDA_GLIBC = (2, 34)
EM_AARCH64 = 183
SHT_GNU_VERNEED = 0x6FFFFFFE
QEMU = "qemu-aarch64-static"


def elf_needs(path: Path) -> tuple[int, set[str]]:
    """The ELF machine and the symbol versions (`GLIBC_2.17`, ...) the file requires."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not a 64-bit little-endian ELF file")
    (machine,) = struct.unpack_from("<H", data, 18)
    (shoff,) = struct.unpack_from("<Q", data, 40)
    shentsize, shnum = struct.unpack_from("<HH", data, 58)
    sections = [
        struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)
    ]
    versions: set[str] = set()
    for _name, kind, _flags, _addr, offset, _size, link, info, _align, _entsize in sections:
        if kind != SHT_GNU_VERNEED:
            continue
        strings = sections[link][4]
        entry = offset
        for _ in range(info):  # Verneed entries
            _version, count, _file, aux, following = struct.unpack_from("<HHIII", data, entry)
            item = entry + aux
            for _ in range(count):  # Vernaux entries
                _hash, _flags2, _other, name, next_aux = struct.unpack_from("<IHHII", data, item)
                end = data.index(b"\0", strings + name)
                versions.add(data[strings + name : end].decode())
                item += next_aux
            entry += following
    return machine, versions


def glibc_version(name: str) -> tuple[int, ...] | None:
    if not name.startswith("GLIBC_") or not name[6:7].isdigit():
        return None  # GLIBC_PRIVATE, or another library's version (OPENSSL_3.0.0, ...)
    return tuple(int(part) for part in name[6:].split("."))


def check_elves(build: Path) -> dict[str, object]:
    elves = [
        p for p in sorted(build.rglob("*")) if p.is_file() and p.read_bytes()[:4] == b"\x7fELF"
    ]
    if not elves:
        raise SystemExit(f"no ELF files under {build}: run `make build` first")
    problems: list[str] = []
    newest: tuple[int, ...] = (0, 0)
    for path in elves:
        machine, versions = elf_needs(path)
        if machine != EM_AARCH64:
            problems.append(f"{path.relative_to(build)}: machine {machine}, not AArch64")
        for name in versions:
            version = glibc_version(name)
            if version is None:
                continue
            newest = max(newest, version[:2])
            if version > LAMBDA_GLIBC:
                problems.append(f"{path.relative_to(build)}: needs {name} (Lambda has 2.34)")
    if problems:
        raise SystemExit("\n".join(problems))
    return {"elf_files": len(elves), "newest_glibc_required": ".".join(map(str, newest))}


def run_smoke(root: Path, build: Path) -> dict[str, object]:
    python = root / "usr/bin/python3.13"
    with tempfile.TemporaryDirectory(prefix="taskapi-arm64-") as workdir:
        environment = {
            "PATH": "/usr/bin:/bin",
            "ARM64_SMOKE_DIR": workdir,
            # The artifacts are read-only on Lambda: never write bytecode into them.
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        command = [QEMU, "-L", str(root), str(python), "-I", "-B"]
        command += [str(ROOT / "tools/arm64_smoke.py"), str(build), str(ROOT / "events")]
        result = subprocess.run(  # noqa: S603
            command, env=environment, capture_output=True, text=True, check=False
        )
    if result.returncode != 0:
        raise SystemExit(f"the arm64 smoke run failed:\n{result.stdout}\n{result.stderr}")
    figures: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", type=Path, default=ROOT / ".aws-sam" / "build")
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(os.environ.get("ARM64_ROOT", "/var/cache/taskapi-arm64/trixie")),
    )
    args = parser.parse_args()
    started = time.monotonic()
    figures: dict[str, object] = check_elves(args.build)
    if shutil.which(QEMU) is None:
        raise SystemExit(f"{QEMU} is missing: apt-get install qemu-user-static")
    figures["root_seconds"] = round(ensure_root(args.root, "arm64"), 1)
    run_started = time.monotonic()
    figures.update(run_smoke(args.root, args.build))
    figures["emulated_run_seconds"] = round(time.monotonic() - run_started, 1)
    figures["total_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
