"""The real Lambda handlers, called as API Gateway calls them, and their responses."""

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from localapi.events import LambdaContext, http_event
from tests.support.functions import load_function


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: str
    cookies: list[str]

    def json(self) -> Any:
        return json.loads(self.body)


def invoke(
    handler: Callable[[dict[str, Any], Any], dict[str, Any]], event: dict[str, Any]
) -> Response:
    """Call a Lambda handler as API Gateway does and decode its payload 2.0 response."""
    result = handler(event, LambdaContext())
    body = result.get("body") or ""
    if result.get("isBase64Encoded"):
        import base64

        # Binary bodies (the docs pages' images) are only checked for their status.
        body = base64.b64decode(body).decode(errors="replace")
    return Response(
        status=result["statusCode"],
        headers={k.lower(): v for k, v in (result.get("headers") or {}).items()},
        body=body,
        cookies=result.get("cookies") or [],
    )


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
    ) -> Response:
        headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body)
            headers.setdefault("content-type", "application/json")
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        return invoke(
            self.handler, http_event(method, path, query=query, headers=headers, body=body)
        )

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
