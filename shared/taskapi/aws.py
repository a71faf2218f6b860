"""AWS clients: built once per container, with timeouts that fail inside a cold start.

botocore's defaults (60 s to connect, 60 s to read, retried) let one unreachable endpoint
hold a cold start for minutes: a function in a VPC with neither a VPC endpoint nor a NAT
gateway connects to nothing, or to a proxy that never answers, and is killed by its own
timeout with no useful log line. These bounds make the same failure take a few seconds
and end in an error that names the cause.
"""

import functools
from typing import Any

from taskapi import state

# Seconds. Secrets Manager answers in tens of milliseconds. One attempt and one retry:
# against an endpoint that accepts and stays silent, 2 x 1.5 s plus botocore's backoff
# (at most 1 s before the first retry) is at most 4 s, well inside the 10 s the API
# functions get, with room for the rest of the cold start.
CONNECT_TIMEOUT = 1.0
READ_TIMEOUT = 1.5
MAX_ATTEMPTS = 2


def describe_limits() -> str:
    """The bounds, as error messages state them."""
    return (
        f"{MAX_ATTEMPTS} attempts, each with {CONNECT_TIMEOUT:g} s to connect "
        f"and {READ_TIMEOUT:g} s to answer"
    )


@functools.cache
def aws_client(service: str) -> Any:
    """The container's client for `service` (region, credentials and endpoint as boto3
    finds them: `AWS_REGION`, the role's credentials, `AWS_ENDPOINT_URL_<SERVICE>`)."""
    # Imported here so that containers that call no AWS API never pay for boto3.
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
    )
    return boto3.client(service, config=config)


# Their pooled sockets cannot outlive a snapshot.
state.register(aws_client.cache_clear)
