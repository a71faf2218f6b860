"""`make check-arm64`'s static half (tools/check_arm64.py): every shipped ELF is AArch64
and needs at most glibc 2.34. The emulated half runs in `make check-arm64` itself."""

import shutil
from pathlib import Path

import pytest

from tests.support.build import AARCH64
from tools.check_arm64 import LAMBDA_GLIBC, check_elves, elf_needs, glibc_version


def test_glibc_versions_are_read_as_numbers() -> None:
    assert glibc_version("GLIBC_2.17") == (2, 17)
    assert glibc_version("GLIBC_2.2.5") == (2, 2, 5)
    assert glibc_version("GLIBC_PRIVATE") is None
    assert glibc_version("OPENSSL_3.0.0") is None
    assert (2, 35) > LAMBDA_GLIBC >= (2, 34)


def test_the_built_artifacts_need_no_newer_glibc_than_lambdas(built: Path) -> None:
    figures = check_elves(built)
    count = figures["elf_files"]
    assert isinstance(count, int)
    assert count >= 10  # pydantic_core, psycopg2 and its libs, bcrypt, ...
    newest = tuple(int(part) for part in str(figures["newest_glibc_required"]).split("."))
    assert newest <= LAMBDA_GLIBC
    pydantic = next(built.rglob("_pydantic_core*.so"))
    machine, versions = elf_needs(pydantic)
    assert machine == AARCH64
    assert any(name.startswith("GLIBC_2.") for name in versions)


def test_a_newer_glibc_or_another_machine_is_refused(tmp_path: Path) -> None:
    """This machine's own libc needs GLIBC_2.35 or later from its loader, and is x86_64."""
    libc = next(
        (p for p in Path("/usr/lib").rglob("libc.so.6") if "x86_64" in str(p)),
        None,
    )
    if libc is None:
        pytest.skip("no x86_64 glibc here")
    shutil.copy(libc, tmp_path / "libc.so.6")
    with pytest.raises(SystemExit) as refused:
        check_elves(tmp_path)
    assert "not AArch64" in str(refused.value)
