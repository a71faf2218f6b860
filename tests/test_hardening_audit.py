"""`make audit` reads pip-audit's JSON report: findings fail unless the ignore file lists them
with a reason, a partial audit fails, and an audit that could not reach the vulnerability
service says so loudly instead of passing quietly."""

import json
from pathlib import Path
from typing import Any

import pytest

from tools.audit import DEFAULT_IGNORE_FILE, IgnoreFileError, judge, main, read_ignore_file

UNREACHABLE = "Dependency not found on PyPI and could not be audited: {name} ({version})"


def dependency(name: str, version: str = "1.0", *vulns: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "version": version, "vulns": list(vulns)}


def skipped(name: str, version: str = "1.0") -> dict[str, Any]:
    return {"name": name, "skip_reason": UNREACHABLE.format(name=name, version=version)}


ECDSA_ADVISORY = {
    "id": "PYSEC-2026-1325",
    "aliases": ["GHSA-wj6h-64fc-37mp", "CVE-2024-23342"],
    "fix_versions": [],
    "description": "Minerva timing attack",
}


def test_the_projects_ignore_file_gives_every_entry_a_reason() -> None:
    entries = read_ignore_file(DEFAULT_IGNORE_FILE.read_text())
    # The ecdsa advisory left with python-jose (the layer uses PyJWT, without cryptography).
    assert "GHSA-WJ6H-64FC-37MP" not in entries
    assert all(reason for reason in entries.values())


def test_a_clean_report_passes() -> None:
    verdict = judge({"dependencies": [dependency("fastapi"), dependency("ecdsa")]}, {})
    assert verdict.status == 0
    assert verdict.lines[-1] == "OK: 2 packages audited, 0 known vulnerabilities"


def test_an_unlisted_finding_fails() -> None:
    finding = {"id": "GHSA-xxxx-yyyy-zzzz", "aliases": ["CVE-2099-1"], "fix_versions": ["2.0"]}
    verdict = judge({"dependencies": [dependency("fastapi", "1.0", finding)]}, {})
    assert verdict.status == 1
    assert "FAIL: fastapi 1.0: GHSA-xxxx-yyyy-zzzz (CVE-2099-1); fixed in: 2.0" in verdict.lines[0]


def test_a_finding_listed_under_any_of_its_ids_is_ignored_with_its_reason() -> None:
    ignored = read_ignore_file("cve-2024-23342  # never imported\n")
    verdict = judge({"dependencies": [dependency("ecdsa", "0.19.2", ECDSA_ADVISORY)]}, ignored)
    assert verdict.status == 0
    assert verdict.lines[0].startswith("ignored: ecdsa 0.19.2: PYSEC-2026-1325")
    assert verdict.lines[0].endswith("-- never imported")


def test_a_partial_audit_fails() -> None:
    verdict = judge({"dependencies": [dependency("fastapi"), skipped("ecdsa")]}, {})
    assert verdict.status == 1
    assert "1 of 2 packages were not audited" in verdict.lines[0]


def test_an_unreachable_service_fails_unless_allowed_and_is_always_a_loud_notice() -> None:
    report = {"dependencies": [skipped("fastapi"), skipped("ecdsa")]}
    for allowed, status in ((False, 3), (True, 0)):
        verdict = judge(report, {}, allow_unchecked=allowed)
        assert verdict.status == status
        text = "\n".join(verdict.lines)
        assert "DEPENDENCY AUDIT DID NOT RUN" in text
        assert "NOTHING WAS CHECKED" in text
        assert "AUDIT_ALLOW_UNCHECKED=1" in text
        assert "OK" not in text


def test_main_reads_the_allowance_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"dependencies": [skipped("fastapi")]}))
    monkeypatch.delenv("AUDIT_ALLOW_UNCHECKED", raising=False)
    assert main(["--report", str(report)]) == 3
    monkeypatch.setenv("AUDIT_ALLOW_UNCHECKED", "1")
    assert main(["--report", str(report)]) == 0
    assert "this run passes anyway" in capsys.readouterr().out


@pytest.mark.parametrize("line", ["GHSA-1", "GHSA-1 #", "GHSA 1  # reason"])
def test_an_ignore_entry_needs_one_id_and_a_reason(line: str) -> None:
    with pytest.raises(IgnoreFileError):
        read_ignore_file(line)


def test_main_judges_a_saved_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report.json"
    report.write_text('{"dependencies": [{"name": "a", "version": "1", "vulns": []}]}')
    assert main(["--report", str(report)]) == 0
    assert "OK: 1 packages audited" in capsys.readouterr().out
    bad_ignore = tmp_path / "ignore.txt"
    bad_ignore.write_text("GHSA-1\n")
    assert main(["--report", str(report), "--ignore-file", str(bad_ignore)]) == 2
