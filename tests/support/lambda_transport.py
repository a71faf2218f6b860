"""A `requests` transport for the hardening tests that answers through the real Lambda
handlers, as API Gateway calls them, routed by template.yaml as the local server routes."""

import http
import io
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from urllib3 import HTTPHeaderDict, HTTPResponse

from localapi.events import LambdaContext, http_event
from localapi.server import gateway_error, http_response
from tests.support.functions import function_for, load_function


class LambdaAdapter(BaseAdapter):
    """Mounted on a `requests.Session`: every request becomes a payload 2.0 event for the
    real handler of its route, and the handler's result becomes the response."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        url = urlsplit(request.url or "")
        method, path, body = request.method or "GET", url.path or "/", request.body
        assert body is None or isinstance(body, str | bytes), "streamed bodies are not used"
        event = http_event(
            method,
            path,
            query=url.query,
            headers=[
                (name, value if isinstance(value, str) else value.decode("latin-1"))
                for name, value in request.headers.items()
            ],
            body=body,
        )
        self.calls += 1
        # A method that no route takes, on a path that a GET route serves (the health
        # function's), is API Gateway's own 404 on AWS. Here the function answers it, with
        # the 405 and `Allow` that schemathesis's `unsupported_method` expects.
        domain = function_for(method, path) or function_for("GET", path)
        if domain is None:
            status, fields, content = gateway_error(404, "Not Found")
        else:
            result = load_function(domain).handler(event, LambdaContext())
            status, fields, content = http_response(result)
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
