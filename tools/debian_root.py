"""A Debian trixie root holding CPython 3.13 (bookworm has only 3.11), made without a
chroot: `debootstrap --foreign` fetches the packages and `dpkg-deb -x` unpacks every one.
No maintainer script runs, which is all an interpreter needs. `make check-arm64` runs the
arm64 root's interpreter under qemu; `make check-sam-local` packs the native root into
its stand-in for the Lambda base image. Each root is kept and made again only when its
marker file is missing.
"""

import os
import shutil
import subprocess
import time
from pathlib import Path

SUITE = "trixie"
# Beyond `minbase`: the interpreter, with its stdlib (sqlite3, ssl, ctypes), nothing else.
PACKAGES = "python3.13"
READY = ".taskapi-root-ready"


def ensure_root(root: Path, arch: str) -> float:
    """The `arch` (Debian's name: amd64, arm64) root at `root`; returns the seconds spent
    making it (0 when it was there already)."""
    if (root / READY).exists():
        return 0.0
    for tool in ("debootstrap", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install debootstrap")
    started = time.monotonic()
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    command = ["debootstrap", f"--arch={arch}", "--foreign", "--variant=minbase"]
    command += [f"--include={PACKAGES}", SUITE, str(root)]
    # Debootstrap's own default mirror unless DEBIAN_MIRROR names another.
    if os.environ.get("DEBIAN_MIRROR"):
        command.append(os.environ["DEBIAN_MIRROR"])
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)  # noqa: S603
    # The first stage unpacks only what the second needs; the rest waits in the archive
    # cache, which is emptied once unpacked (nothing reads it again).
    for package in sorted((root / "var/cache/apt/archives").glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(package), str(root)], check=True)  # noqa: S603, S607
        package.unlink()
    (root / READY).touch()
    return time.monotonic() - started
