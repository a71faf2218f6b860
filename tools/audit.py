"""`make audit`: pip-audit over the layer's pinned requirements, read honestly.

    python tools/audit.py [--requirements shared/requirements.txt]
                          [--ignore-file security/pip-audit-ignore.txt] [--report FILE]

Exit status:
  0  every package was audited and every finding is listed in the ignore file with a reason;
     or nothing could be audited (no network to the vulnerability service) and
     AUDIT_ALLOW_UNCHECKED=1 says that is acceptable here: a loud notice says so.
  1  a finding that the ignore file does not list, or an audit that covered only some of
     the packages (on a network where the service answers, every pinned package is found).
  2  pip-audit failed to run, or the ignore file is malformed.
  3  the vulnerability service could not audit a single package, and nothing allowed that.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REQUIREMENTS = ROOT / "shared" / "requirements.txt"
DEFAULT_IGNORE_FILE = ROOT / "security" / "pip-audit-ignore.txt"
# How pip-audit says that the vulnerability service had no record of a package.
NOT_AUDITED = "could not be audited"
# Set where the vulnerability service is knowingly out of reach, so that an audit that
# checked nothing does not fail the run (it still prints that nothing was checked).
ALLOW_UNCHECKED = "AUDIT_ALLOW_UNCHECKED"


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    id: str
    aliases: tuple[str, ...]
    fix_versions: tuple[str, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)

    def __str__(self) -> str:
        fixes = ", ".join(self.fix_versions) or "no fixed version"
        aliases = f" ({', '.join(self.aliases)})" if self.aliases else ""
        return f"{self.package} {self.version}: {self.id}{aliases}; fixed in: {fixes}"


@dataclass(frozen=True)
class Verdict:
    status: int
    lines: list[str]


class IgnoreFileError(ValueError):
    """An ignore entry without a reason, or a line that is not an entry."""


def read_ignore_file(text: str) -> dict[str, str]:
    """`ID  # reason` per line; blank lines and whole-line comments are skipped."""
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        vulnerability_id, _, reason = stripped.partition("#")
        vulnerability_id, reason = vulnerability_id.strip(), reason.strip()
        if not reason or " " in vulnerability_id:
            raise IgnoreFileError(f"line {number}: expected 'ID  # reason', got {stripped!r}")
        entries[vulnerability_id.upper()] = reason
    return entries


def findings_of(report: dict[str, Any]) -> list[Finding]:
    return [
        Finding(
            package=dependency["name"],
            version=dependency.get("version", "?"),
            id=vulnerability["id"],
            aliases=tuple(vulnerability.get("aliases") or ()),
            fix_versions=tuple(vulnerability.get("fix_versions") or ()),
        )
        for dependency in report.get("dependencies", [])
        for vulnerability in dependency.get("vulns") or ()
    ]


def judge(
    report: dict[str, Any], ignored: dict[str, str], *, allow_unchecked: bool = False
) -> Verdict:
    """The exit status and what to print, from pip-audit's JSON report."""
    dependencies = report.get("dependencies", [])
    skipped = [d for d in dependencies if "skip_reason" in d]
    unreachable = [d for d in skipped if NOT_AUDITED in d["skip_reason"]]
    if dependencies and len(unreachable) == len(dependencies):
        banner = "!" * 78
        allowance = (
            f"!! {ALLOW_UNCHECKED}=1 is set: this run passes anyway."
            if allow_unchecked
            else f"!! This run fails; {ALLOW_UNCHECKED}=1 lets it pass where that is expected."
        )
        return Verdict(
            0 if allow_unchecked else 3,
            [
                banner,
                "!! DEPENDENCY AUDIT DID NOT RUN: the vulnerability service could not audit",
                f"!! any of the {len(dependencies)} packages (every one was reported",
                '!! "Dependency not found on PyPI and could not be audited").',
                "!! NOTHING WAS CHECKED. Run `make audit` on a network that reaches the service;",
                "!! there, any finding not in security/pip-audit-ignore.txt fails.",
                allowance,
                banner,
            ],
        )
    lines: list[str] = []
    status = 0
    if skipped:
        status = 1
        lines.append(f"FAIL: {len(skipped)} of {len(dependencies)} packages were not audited:")
        lines += [f"  {d['name']}: {d['skip_reason']}" for d in skipped]
    findings = findings_of(report)
    for finding in findings:
        listed = [i for i in finding.ids if i.upper() in ignored]
        if listed:
            lines.append(f"ignored: {finding} -- {ignored[listed[0].upper()]}")
        else:
            status = 1
            lines.append(f"FAIL: {finding} (not in the ignore file)")
    audited = len(dependencies) - len(skipped)
    summary = f"{audited} packages audited, {len(findings)} known vulnerabilities"
    lines.append(("FAIL: " if status else "OK: ") + summary)
    return Verdict(status, lines)


def run_pip_audit(requirements: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "audit.json"
        command = [
            sys.executable,
            "-m",
            "pip_audit",
            "--requirement",
            str(requirements),
            "--format",
            "json",
            "--output",
            str(output),
            "--progress-spinner",
            "off",
        ]
        # pip-audit exits 1 when it finds something; the report decides, not the status. Its
        # own summary is kept out of sight: it says "No known vulnerabilities found" even
        # when it could audit nothing.
        completed = subprocess.run(command, check=False, capture_output=True, text=True)  # noqa: S603
        if not output.exists():
            raise RuntimeError(
                f"no report (exit status {completed.returncode}): {completed.stderr.strip()}"
            )
        report: dict[str, Any] = json.loads(output.read_text())
        return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requirements", type=Path, default=DEFAULT_REQUIREMENTS)
    parser.add_argument("--ignore-file", type=Path, default=DEFAULT_IGNORE_FILE)
    parser.add_argument("--report", type=Path, help="judge this pip-audit JSON, don't run it")
    args = parser.parse_args(argv)
    try:
        ignored = read_ignore_file(args.ignore_file.read_text())
    except (OSError, IgnoreFileError) as error:
        print(f"audit: bad ignore file {args.ignore_file}: {error}", file=sys.stderr)
        return 2
    try:
        report = (
            json.loads(args.report.read_text()) if args.report else run_pip_audit(args.requirements)
        )
    except (OSError, RuntimeError, ValueError) as error:
        print(f"audit: pip-audit failed: {error}", file=sys.stderr)
        return 2
    verdict = judge(report, ignored, allow_unchecked=os.environ.get(ALLOW_UNCHECKED) == "1")
    print("\n".join(verdict.lines))
    return verdict.status


if __name__ == "__main__":
    sys.exit(main())
