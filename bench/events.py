"""API Gateway REST API (payload format 1.0) proxy events, for the Chalice baseline:
Chalice serves REST APIs only. The HTTP API events of every other subject come from
`localapi.events.http_event`."""

import time
import uuid
from collections.abc import Mapping
from typing import Any


def rest_event(
    method: str,
    path: str,
    *,
    query: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    body: str | None = None,
) -> dict[str, Any]:
    """A REST API Lambda proxy event for a route without path parameters (`resource` is
    the path itself), shaped as API Gateway builds it."""
    sent = {"host": "bench.execute-api.us-east-1.amazonaws.com", **(headers or {})}
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": sent,
        "multiValueHeaders": {name: [value] for name, value in sent.items()},
        "queryStringParameters": dict(query) if query else None,
        "multiValueQueryStringParameters": (
            {name: [value] for name, value in query.items()} if query else None
        ),
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": path,
            "httpMethod": method,
            "path": f"/prod{path}",
            "stage": "prod",
            "apiId": "bench",
            "accountId": "123456789012",
            "requestId": str(uuid.uuid4()),
            "requestTimeEpoch": int(time.time() * 1000),
            "protocol": "HTTP/1.1",
            "identity": {"sourceIp": "127.0.0.1", "userAgent": "bench"},
        },
        "body": body,
        "isBase64Encoded": False,
    }
