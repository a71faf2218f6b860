"""Where `make check-build` puts the SAM build and the test layer, and how a test that
needs them skips without them (or fails, where CI says they must be there)."""

import os

import pytest

from tests.support.functions import ROOT

BUILD = ROOT / ".aws-sam" / "build"
TEST_LAYER = ROOT / "build" / "layer-x86_64"
FUNCTIONS = {
    "AuthFunction": ROOT / "functions" / "auth",
    "TasksFunction": ROOT / "functions" / "tasks",
    "HealthFunction": ROOT / "functions" / "health",
    "MaintenanceFunction": ROOT / "functions" / "maintenance",
    "MigrateFunction": ROOT / "migrations",
}
# ELF e_machine values.
AARCH64, X86_64 = 183, 62


def require_build() -> bool:
    return os.environ.get("REQUIRE_BUILD") == "1"


def missing(what: str) -> None:
    if require_build():
        pytest.fail(f"REQUIRE_BUILD=1 but {what}")
    pytest.skip(f"{what} (run `make check-build`)")
