"""A pytest plugin (tests/conftest.py loads it): after the run, how many requests the
OpenAPI fuzz generated in its passed tests, each of which checked every answer. Read from
the test reports, so it counts every xdist worker's share."""

import pytest

# The name under which tests/test_fuzz_openapi.py records each case's requests.
PROPERTY = "fuzz_requests"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    total = sum(
        value
        for report in terminalreporter.stats.get("passed", [])
        for name, value in getattr(report, "user_properties", ())
        if name == PROPERTY
    )
    if total:
        terminalreporter.write_line(
            f"fuzz: {total} generated requests in passed tests, each answered as documented"
        )
