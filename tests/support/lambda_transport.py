"""Helpers for the hardening tests: a `requests` transport that answers through the real
Lambda handlers (as API Gateway would call them), and the route table that picks one."""

import http
import io
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from urllib3 import HTTPHeaderDict, HTTPResponse

from localapi.events import LambdaContext, http_event
from localapi.server import http_response
from tests.support.functions import load_function

Handler = Any


def function_for(path: str) -> str:
    """The function that API Gateway routes the path to (see template.yaml)."""
    if path.startswith("/api/auth/"):
        return "auth"
    if path == "/api/tasks" or path.startswith("/api/tasks/"):
        return "tasks"
    return "health"


class LambdaAdapter(BaseAdapter):
    """Mounted on a `requests.Session`: every request becomes a payload 2.0 event for the
    real handler of its route, and the handler's result becomes the response."""

    def __init__(self) -> None:
        super().__init__()
        self.handlers: dict[str, Handler] = {}
        self.calls = 0

    def handler(self, path: str) -> Handler:
        domain = function_for(path)
        if domain not in self.handlers:
            self.handlers[domain] = load_function(domain).handler
        return self.handlers[domain]

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        url = urlsplit(request.url or "")
        body = request.body
        assert body is None or isinstance(body, str | bytes), "streamed bodies are not used"
        event = http_event(
            request.method or "GET",
            url.path or "/",
            query=url.query,
            headers=[
                (name, value if isinstance(value, str) else value.decode("latin-1"))
                for name, value in request.headers.items()
            ],
            body=body,
        )
        self.calls += 1
        status, fields, content = http_response(self.handler(url.path)(event, LambdaContext()))
        # The length API Gateway sets, as the local server does.
        headers = HTTPHeaderDict([*fields, ("content-length", str(len(content)))])
        response = requests.Response()
        response.status_code = status
        response.headers = CaseInsensitiveDict(headers)
        # What an HTTP client would have read off the wire (schemathesis looks there).
        response.raw = HTTPResponse(
            body=io.BytesIO(content),
            headers=headers,
            status=response.status_code,
            version=11,
            preload_content=False,
        )
        response._content = content
        response.encoding = "utf-8"
        response.reason = http.HTTPStatus(response.status_code).phrase
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


def lambda_session() -> tuple[requests.Session, LambdaAdapter]:
    """A session whose requests to http://lambda.local go to the handlers."""
    session = requests.Session()
    adapter = LambdaAdapter()
    session.mount("http://lambda.local", adapter)
    return session, adapter
