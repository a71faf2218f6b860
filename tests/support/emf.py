"""The CloudWatch embedded-metric-format (EMF) lines among what a function printed."""

import json
from typing import Any


def emf_lines(output: str) -> list[dict[str, Any]]:
    """Each EMF record in `output` (one JSON object a line; log lines are skipped)."""
    return [json.loads(line) for line in output.splitlines() if line.startswith('{"_aws"')]
