"""API Gateway HTTP API (payload format 2.0) events and a Lambda-like context.

Used by the local server and by the tests, so that both call `handler(event, context)`
with what API Gateway would send.
"""

import base64
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus, urlencode

# Content types that API Gateway passes through as text; anything else arrives base64-encoded.
_TEXT_TYPES = ("text/", "application/json", "application/x-www-form-urlencoded", "application/xml")


@dataclass
class LambdaContext:
    """The attributes of the Lambda runtime's context object that handlers use."""

    function_name: str = "local"
    timeout_seconds: float = 30.0
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def is_text(content_type: str | None) -> bool:
    return content_type is None or content_type.startswith(_TEXT_TYPES)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def http_event(
    method: str,
    path: str,
    *,
    query: str | Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    body: bytes | str | None = None,
    route_key: str | None = None,
    path_parameters: Mapping[str, str] | None = None,
    source_ip: str = "127.0.0.1",
    stage: str = "$default",
) -> dict[str, Any]:
    """An HTTP API payload 2.0 event, shaped as API Gateway builds it.

    Header names are lower-cased and repeated headers joined with commas; cookies move to
    their own list; a body that is not text is base64-encoded.
    """
    pairs = list(headers.items() if isinstance(headers, Mapping) else headers or [])
    joined: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in pairs:
        name = name.lower()
        if name == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
            continue
        joined[name] = f"{joined[name]},{value}" if name in joined else value

    raw_query = query if isinstance(query, str) else urlencode(query or {}, doseq=True)
    query_parameters: dict[str, str] = {}
    for part in filter(None, raw_query.split("&")):
        key, _, value = part.partition("=")
        key, value = unquote_plus(key), unquote_plus(value)
        # API Gateway joins repeated query parameters with commas, as it does headers.
        query_parameters[key] = (
            f"{query_parameters[key]},{value}" if key in query_parameters else value
        )

    raw_body: bytes | None = body.encode() if isinstance(body, str) else body
    is_base64 = bool(raw_body) and not (
        is_text(joined.get("content-type")) and _is_utf8(raw_body or b"")
    )
    if raw_body and "content-length" not in joined:
        joined["content-length"] = str(len(raw_body))
    joined.setdefault("host", "127.0.0.1")
    joined.setdefault("user-agent", "taskapi-local")

    now = datetime.now(UTC)
    request_id = str(uuid.uuid4())
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key or "$default",
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": joined,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": joined["host"],
            "domainPrefix": joined["host"].split(".")[0],
            "http": {
                "method": method.upper(),
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": joined["user-agent"],
            },
            "requestId": request_id,
            "routeKey": route_key or "$default",
            "stage": stage,
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": is_base64,
    }
    if cookies:
        event["cookies"] = cookies
    if query_parameters:
        event["queryStringParameters"] = query_parameters
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    if raw_body:
        event["body"] = base64.b64encode(raw_body).decode() if is_base64 else raw_body.decode()
    return event
