"""CloudWatch metrics in Embedded Metric Format (EMF): one JSON object on stdout, which
CloudWatch Logs turns into metrics, with no API call and no dependency.

Written here rather than through Powertools' `Metrics`: the format is one small object, and
Powertools would add its whole package to the layer for it.
"""

import json
import sys
import time
from collections.abc import Mapping
from typing import Any, Literal

Unit = Literal["Count", "Milliseconds", "Seconds", "Percent", "None"]

# Every function's metrics, under the one `Stage` dimension that template.yaml's alarms watch.
METRICS_NAMESPACE = "TaskApi"


def emf_record(
    *,
    namespace: str,
    dimensions: Mapping[str, str],
    metrics: Mapping[str, tuple[float, Unit]],
    timestamp_ms: int | None = None,
) -> dict[str, Any]:
    """The EMF object: the `_aws` directive, then the dimension and metric values by name."""
    definitions = [{"Name": name, "Unit": unit} for name, (_, unit) in metrics.items()]
    return {
        "_aws": {
            "Timestamp": timestamp_ms if timestamp_ms is not None else int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [list(dimensions)],
                    "Metrics": definitions,
                }
            ],
        },
        **dimensions,
        **{name: value for name, (value, _) in metrics.items()},
    }


def put_metrics(
    *, namespace: str, dimensions: Mapping[str, str], metrics: Mapping[str, tuple[float, Unit]]
) -> None:
    """Write one EMF line to stdout (the Lambda log)."""
    record = emf_record(namespace=namespace, dimensions=dimensions, metrics=metrics)
    sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
    sys.stdout.flush()
