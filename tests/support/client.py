"""The real Lambda handlers, called as API Gateway calls them, and their responses."""

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from localapi.events import LambdaContext, http_event
from localapi.server import http_response
from tests.support.functions import load_function

# The source address of the events `Client` sends unless told otherwise.
LOCAL_SOURCE = "127.0.0.1"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: str
    cookies: list[str]

    @classmethod
    def of(cls, result: Any) -> "Response":
        """A handler's result as API Gateway reads it (`localapi`'s reading, which the local
        server serves), with the `content-length` that API Gateway sets on the way out."""
        status, headers, content = http_response(result)
        return cls(
            status=status,
            headers={
                **{name: value for name, value in headers if name != "set-cookie"},
                "content-length": str(len(content)),
            },
            # Binary bodies (the docs pages' images) are only checked for their status.
            body=content.decode(errors="replace"),
            cookies=[value for name, value in headers if name == "set-cookie"],
        )

    def json(self) -> Any:
        return json.loads(self.body)


def invoke(handler: Callable[[dict[str, Any], Any], Any], event: dict[str, Any]) -> Response:
    """Call a Lambda handler as API Gateway does and decode its payload 2.0 response."""
    return Response.of(handler(event, LambdaContext()))


class Client:
    """Sends requests to one function's real handler as API Gateway HTTP API events."""

    def __init__(self, domain: str) -> None:
        self.handler = load_function(domain).handler

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, Any] | str | None = None,
        token: str | None = None,
        source_ip: str = LOCAL_SOURCE,
    ) -> Response:
        headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body)
            headers.setdefault("content-type", "application/json")
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        event = http_event(
            method, path, query=query, headers=headers, body=body, source_ip=source_ip
        )
        return invoke(self.handler, event)

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Response:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Response:
        return self.request("DELETE", path, **kwargs)


def with_example_email(text: str) -> str:
    """A served OpenAPI document with its example account's email as committed: the health
    function makes it fresh at each load (`ada-<6 hex>@example.com`)."""
    return re.sub(r'"ada-[0-9a-f]{6}@example\.com"', '"ada@example.com"', text)
