"""The local server (`python -m localapi`) over real HTTP, against throwaway functions in a
template of their own: routing, events, responses, gateway errors, environment, layers,
concurrency and the `invoke` command."""

import base64
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from localapi.reload import CodeReload
from localapi.runtime import developer_settings
from localapi.server import InvalidResponseError, build_local_api, http_response
from localapi.template import Route, load_template
from localapi.workers import function_environment
from tests.support.local_server import local_server

ROOT = Path(__file__).resolve().parent.parent

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage:
    Type: String
    Default: dev
  Greeting:
    Type: String
    Default: hello
  Origins:
    Type: String
    Default: "http://app.example,http://localhost:5173"
Conditions:
  HasCors: !Not [!Equals [!Ref Origins, ""]]
Globals:
  Function:
    Timeout: 1
    Layers:
      - !Ref ToyLayer
    Environment:
      Variables:
        STAGE: !Ref Stage
        GREETING: !Sub "${Greeting} from ${AWS::Region}"
        FROM_SHELL: template
        FROM_DOTENV: template
        SECRET_ARN: !GetAtt Secret.Arn
Resources:
  ToyLayer:
    Type: AWS::Serverless::LayerVersion
    Properties:
      ContentUri: layer/
  Secret:
    Type: AWS::SecretsManager::Secret
  Api:
    Type: AWS::Serverless::HttpApi
    Properties:
      CorsConfiguration: !If
        - HasCors
        - AllowOrigins: !Split [",", !Ref Origins]
          AllowMethods: [GET, POST]
          AllowHeaders: [authorization, content-type]
          ExposeHeaders: [etag]
          MaxAge: 600
        - !Ref AWS::NoValue
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: echo/
      Handler: app.handler
      Environment:
        Variables:
          ONLY_ECHO: yes-echo
          SAME_NAME: echo's value
      Events:
        Echo:
          Type: HttpApi
          Properties: {Path: "/echo/{proxy+}", Method: ANY}
        Item:
          Type: HttpApi
          Properties: {Path: "/items/{id}", Method: GET}
        Special:
          Type: HttpApi
          Properties: {Path: /items/special, Method: GET}
  AsgiFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: asgi/
      Handler: app.handler
      Timeout: 10
      Environment:
        Variables:
          SAME_NAME: asgi's value
      Events:
        Asgi:
          Type: HttpApi
          Properties: {Path: "/asgi/{proxy+}", Method: ANY}
        Scheduled:
          Type: Schedule
          Properties: {Schedule: rate(5 minutes)}
"""

# Answers `?mode=` with each kind of result a handler can give API Gateway.
ECHO_APP = """
import base64
import importlib.util
import json
import os
import time

import toy_layer
from echo_helpers import identity

PNG = bytes(range(256))


def handler(event, context):
    mode = (event.get("queryStringParameters") or {}).get("mode")
    if mode == "slow":
        with open("slow-worker.pid", "w") as file:
            file.write(str(os.getpid()))
        time.sleep(3)
    if mode == "remember":
        toy_layer.STATE.append("echo was here")
        return {"state": toy_layer.STATE, "pid": os.getpid()}
    if mode == "raise":
        raise RuntimeError("the handler broke")
    if mode == "own-timeout":
        raise TimeoutError("the handler's own timeout")
    if mode == "bad":
        return {"statusCode": "teapot"}
    if mode == "plain":
        return {"hello": "world"}
    if mode == "text":
        return "just text"
    if mode == "binary":
        return {
            "statusCode": 200,
            "headers": {"content-type": "image/png"},
            "body": base64.b64encode(PNG).decode(),
            "isBase64Encoded": True,
        }
    body = {
        "event": event,
        "function": identity(),
        "layer": toy_layer.NAME,
        "timeout_ms": context.get_remaining_time_in_millis(),
        "function_name": context.function_name,
        "env": {name: os.environ.get(name) for name in (
            "STAGE", "GREETING", "FROM_SHELL", "FROM_DOTENV", "SECRET_ARN", "ONLY_ECHO",
            "DATABASE_POOL_SIZE", "SAME_NAME",
        )},
    }
    return {
        "statusCode": 201,
        "headers": {
            "content-type": "application/json",
            "x-echo": "yes",
            "access-control-allow-origin": "*",
        },
        "cookies": ["first=1; Path=/", "second=2; HttpOnly"],
        "body": json.dumps(body),
    }
"""

# A plain Mangum app (not the layer's factory): it needs the worker thread's event loop.
ASGI_APP = """
import os
import threading
import time

from fastapi import FastAPI
from mangum import Mangum

import toy_layer

app = FastAPI()
lock = threading.Lock()
state = {"running": 0, "most": 0}

# A cold start that lasts while the test holds this file (test_a_request_takes_...).
while os.path.exists("hold-asgi-imports"):
    time.sleep(0.05)


@app.get("/asgi/identity")
async def identity():
    return {"function": "asgi", "layer": toy_layer.NAME}


@app.get("/asgi/work/{number}")
def work(number: int):
    with lock:
        state["running"] += 1
        state["most"] = max(state["most"], state["running"])
    time.sleep(0.1)
    with lock:
        state["running"] -= 1
    return {"number": number, "pid": os.getpid(), "most": state["most"]}


@app.get("/asgi/env")
async def env():
    return {
        "SAME_NAME": os.environ.get("SAME_NAME"),
        "ONLY_ECHO": os.environ.get("ONLY_ECHO"),
        "state": toy_layer.STATE,
    }


handler = Mangum(app, lifespan="off")
"""


@pytest.fixture(scope="module")
def toy_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two functions (both `app.py`), a layer, and a `.env` beside the template."""
    root = tmp_path_factory.mktemp("toy")
    files = {
        "template.yaml": TEMPLATE,
        "layer/toy_layer.py": 'NAME = "toy layer"\nSTATE = []\n',
        "echo/app.py": ECHO_APP,
        "echo/echo_helpers.py": 'def identity():\n    return "echo"\n',
        "asgi/app.py": ASGI_APP,
        ".env": "FROM_DOTENV=dotenv\n",
        "event.json": json.dumps({"queryStringParameters": {"mode": "plain"}}),
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root / "template.yaml"


@pytest.fixture(scope="module")
def toy(toy_template: Path) -> Iterator[tuple[httpx.Client, Path]]:
    env: dict[str, str | None] = {"FROM_SHELL": "shell"}
    for name in (
        "STAGE",
        "FROM_DOTENV",
        "GREETING",
        "ONLY_ECHO",
        "SECRET_ARN",
        "DATABASE_POOL_SIZE",
        "SAME_NAME",
    ):
        env[name] = None
    with local_server(toy_template, env=env, options=("--workers", "2")) as running:
        yield running


@pytest.fixture
def client(toy: tuple[httpx.Client, Path]) -> httpx.Client:
    return toy[0]


# ---------------------------------------------------------------------------------------
# The template


def test_template_functions_layers_environment_and_routes(toy_template: Path) -> None:
    template = load_template(toy_template)
    echo = template.function("EchoFunction")
    assert echo.code_uri == toy_template.parent / "echo"
    assert echo.handler_file == toy_template.parent / "echo" / "app.py"
    assert echo.layers == (toy_template.parent / "layer",)
    assert echo.timeout == 1.0
    assert template.function("AsgiFunction").timeout == 10.0
    # Parameter defaults and pseudo parameters resolve; a resource's attribute cannot.
    assert echo.environment["STAGE"] == "dev"
    assert echo.environment["GREETING"].startswith("hello from ")
    assert "SECRET_ARN" not in echo.environment
    assert echo.environment["ONLY_ECHO"] == "yes-echo"
    assert template.cors is not None
    assert template.cors.allow_origins == ("http://app.example", "http://localhost:5173")
    assert template.cors.max_age == 600
    assert "ONLY_ECHO" not in template.function("AsgiFunction").environment
    # Most specific first; the schedule is not an HTTP route.
    assert [route.key for route in template.routes] == [
        "GET /items/special",
        "GET /items/{id}",
        "ANY /echo/{proxy+}",
        "ANY /asgi/{proxy+}",
    ]


def test_conditions_decide_what_the_template_configures(toy_template: Path, tmp_path: Path) -> None:
    without_cors = tmp_path / "template.yaml"
    text = toy_template.read_text()
    without_cors.write_text(text.replace('"http://app.example,http://localhost:5173"', '""'))
    assert load_template(without_cors).cors is None
    assert load_template(toy_template).cors is not None


def test_the_real_template_has_every_function_and_route() -> None:
    template = load_template(ROOT / "template.yaml")
    assert {"AuthFunction", "TasksFunction", "HealthFunction", "MigrateFunction"} <= set(
        template.functions
    )
    assert template.function("HealthFunction").layers == (ROOT / "shared",)
    keys = {route.key: route.function for route in template.routes}
    assert keys["ANY /api/tasks"] == "TasksFunction"
    assert keys["ANY /api/auth/{proxy+}"] == "AuthFunction"
    assert keys["GET /docs"] == "HealthFunction"
    assert {ROOT / "functions" / "tasks", ROOT / "shared", ROOT / "migrations"} <= set(
        template.source_dirs
    )


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/pets/dog/1", ("GET /pets/dog/1", {})),
        ("GET", "/pets/dog/2", ("GET /pets/dog/{id}", {"id": "2"})),
        ("GET", "/pets/cat/1", ("GET /pets/{proxy+}", {"proxy": "cat/1"})),
        ("POST", "/pets/dog/1", ("ANY /{proxy+}", {"proxy": "pets/dog/1"})),
        ("GET", "/pets", ("ANY /pets", {})),
        ("DELETE", "/", None),
    ],
)
def test_routes_pick_the_most_specific_match_as_api_gateway_does(
    method: str, path: str, expected: tuple[str, dict[str, str]] | None
) -> None:
    # The example of API Gateway's "Routing API requests" page, plus ANY on an exact path.
    routes = sorted(
        [
            Route.parse("ANY", "/{proxy+}", "f"),
            Route.parse("GET", "/pets/{proxy+}", "f"),
            Route.parse("GET", "/pets/dog/{id}", "f"),
            Route.parse("GET", "/pets/dog/1", "f"),
            Route.parse("ANY", "/pets", "f"),
        ],
        key=Route.specificity,
    )
    found = next(
        (
            (route.key, parameters)
            for route in routes
            if (parameters := route.match(method, path)) is not None
        ),
        None,
    )
    assert found == expected


# ---------------------------------------------------------------------------------------
# Handler results as API Gateway reads them


def test_results_become_http_responses() -> None:
    assert http_response({"statusCode": 204}) == (204, [], b"")
    status, headers, body = http_response(
        {
            "statusCode": 200,
            "headers": {"Content-Type": "text/plain", "Content-Length": "999"},
            "cookies": ["a=1", "b=2"],
            "body": "hi",
        }
    )
    assert (status, body) == (200, b"hi")
    assert headers == [("content-type", "text/plain"), ("set-cookie", "a=1"), ("set-cookie", "b=2")]
    assert http_response({"statusCode": 200, "body": "AAEC", "isBase64Encoded": True})[2] == (
        b"\x00\x01\x02"
    )
    # The 2.0 shortcut: JSON without a statusCode is a 200 carrying that JSON.
    assert http_response({"a": 1}) == (200, [("content-type", "application/json")], b'{"a": 1}')
    assert http_response([1, 2])[2] == b"[1, 2]"
    assert http_response("text")[2] == b"text"


@pytest.mark.parametrize(
    "result",
    [
        {"statusCode": "200"},
        {"statusCode": 99},
        {"statusCode": 200, "body": {"not": "a string"}},
        {"statusCode": 200, "body": "%%%", "isBase64Encoded": True},
        {"statusCode": 200, "body": object()},
    ],
)
def test_results_api_gateway_cannot_read_are_rejected(result: object) -> None:
    with pytest.raises(InvalidResponseError):
        http_response(result)


def test_a_result_over_lambdas_6_mb_response_limit_is_rejected() -> None:
    # 6 MiB counts the result as JSON: the body's escapes and the other fields too.
    limit = 6 * 1024 * 1024
    fits = {"statusCode": 200, "body": "a" * (limit - 100)}
    assert http_response(fits)[0] == 200
    # The 3.13 runtime writes UTF-8 without ASCII escapes: four bytes an emoji, not twelve.
    emoji = {"statusCode": 200, "body": "\N{GRINNING FACE}" * (limit // 4 - 100)}
    assert http_response(emoji)[0] == 200
    for oversized in (
        {"statusCode": 200, "body": "a" * limit},
        # Under the limit as text, over it as JSON: every quote is escaped.
        {"statusCode": 200, "body": '"' * (limit // 2 + 1)},
        {"items": ["a" * limit]},
        {"statusCode": 200, "body": "\N{GRINNING FACE}" * (limit // 4 + 1)},
    ):
        with pytest.raises(InvalidResponseError, match="6291456-byte response limit"):
            http_response(oversized)


# ---------------------------------------------------------------------------------------
# Over HTTP


def test_requests_arrive_as_payload_2_events(client: httpx.Client) -> None:
    response = client.post(
        "/echo/some%20thing/deeper?b=2&a=1&a=3",
        content='{"x": 1}',
        headers={"Content-Type": "application/json", "X-Custom": "v", "Cookie": "s=1; t=2"},
    )
    assert response.status_code == 201
    body = response.json()
    event = body["event"]
    assert event["version"] == "2.0"
    assert event["routeKey"] == "ANY /echo/{proxy+}"
    assert event["rawPath"] == "/echo/some%20thing/deeper"
    assert event["rawQueryString"] == "b=2&a=1&a=3"
    assert event["queryStringParameters"] == {"a": "1,3", "b": "2"}
    assert event["pathParameters"] == {"proxy": "some thing/deeper"}
    assert event["cookies"] == ["s=1", "t=2"]
    assert event["body"] == '{"x": 1}'
    assert event["isBase64Encoded"] is False
    assert event["headers"]["x-custom"] == "v"
    assert event["headers"]["content-type"] == "application/json"
    assert event["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert "cookie" not in event["headers"]
    context = event["requestContext"]
    assert context["http"]["method"] == "POST"
    assert context["http"]["sourceIp"] == "127.0.0.1"
    assert context["requestId"] == response.headers["apigw-requestid"]
    assert context["timeEpoch"] == pytest.approx(time.time() * 1000, abs=60_000)
    # The Lambda context carries the function's name and Timeout (1 s).
    assert body["function_name"] == "EchoFunction"
    assert 0 < body["timeout_ms"] <= 1000


def test_responses_keep_headers_and_every_cookie(client: httpx.Client) -> None:
    response = client.get("/echo/cookies")
    assert response.headers["x-echo"] == "yes"
    assert response.headers.get_list("set-cookie") == ["first=1; Path=/", "second=2; HttpOnly"]


def test_the_gateway_answers_preflights_with_the_apis_cors_configuration(
    client: httpx.Client,
) -> None:
    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    # Even on a GET-only route: API Gateway answers preflights before routing.
    response = client.options("/items/42", headers=preflight)
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "http://app.example"
    assert response.headers["access-control-allow-methods"] == "GET,POST"
    assert response.headers["access-control-allow-headers"] == "authorization,content-type"
    assert response.headers["access-control-max-age"] == "600"
    stranger = client.options("/items/42", headers={**preflight, "Origin": "http://evil.example"})
    assert stranger.status_code == 204
    assert "access-control-allow-origin" not in stranger.headers


def test_the_gateway_replaces_the_functions_cors_headers(client: httpx.Client) -> None:
    # The function says `*`; API Gateway ignores that and applies its own configuration.
    allowed = client.get("/echo/x", headers={"Origin": "http://localhost:5173"})
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert allowed.headers["access-control-expose-headers"] == "etag"
    stranger = client.get("/echo/x", headers={"Origin": "http://evil.example"})
    assert stranger.status_code == 201
    assert "access-control-allow-origin" not in stranger.headers
    assert "access-control-allow-origin" not in client.get("/echo/x").headers


def test_binary_bodies_travel_base64_both_ways(client: httpx.Client) -> None:
    upload = bytes(range(256)) * 4
    response = client.put(
        "/echo/upload", content=upload, headers={"Content-Type": "application/octet-stream"}
    )
    event = response.json()["event"]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == upload
    image = client.get("/echo/image", params={"mode": "binary"})
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.content == bytes(range(256))


def test_the_2_0_shortcut_for_results_without_status(client: httpx.Client) -> None:
    plain = client.get("/echo/x", params={"mode": "plain"})
    assert (plain.status_code, plain.json()) == (200, {"hello": "world"})
    assert plain.headers["content-type"] == "application/json"
    assert client.get("/echo/x", params={"mode": "text"}).text == "just text"


def test_path_parameters_and_the_most_specific_route(client: httpx.Client) -> None:
    item = client.get("/items/42").json()["event"]
    assert (item["routeKey"], item["pathParameters"]) == ("GET /items/{id}", {"id": "42"})
    special = client.get("/items/special").json()["event"]
    assert special["routeKey"] == "GET /items/special"
    assert "pathParameters" not in special


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nowhere"), ("POST", "/items/42"), ("GET", "/echo"), ("GET", "/items/1/2")],
)
def test_unmatched_routes_get_api_gateway_404(client: httpx.Client, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 404
    assert response.json() == {"message": "Not Found"}


def test_a_handler_that_raises_gives_502_and_a_logged_traceback(
    toy: tuple[httpx.Client, Path],
) -> None:
    client, log = toy
    response = client.get("/echo/x", params={"mode": "raise"})
    assert response.status_code == 502
    assert response.json() == {"message": "Internal Server Error"}
    text = log.read_text()
    assert "Traceback" in text
    assert "RuntimeError: the handler broke" in text
    assert response.headers["apigw-requestid"] in text


def test_a_handler_raising_timeouterror_gives_502_not_504(client: httpx.Client) -> None:
    response = client.get("/echo/x", params={"mode": "own-timeout"})
    assert (response.status_code, response.json()) == (502, {"message": "Internal Server Error"})


def test_a_result_that_is_no_response_gives_502(client: httpx.Client) -> None:
    response = client.get("/echo/x", params={"mode": "bad"})
    assert (response.status_code, response.json()) == (502, {"message": "Internal Server Error"})


def test_a_handler_past_its_timeout_gives_504_and_the_server_goes_on(
    toy: tuple[httpx.Client, Path],
) -> None:
    client, log = toy
    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(client.get, "/echo/x", params={"mode": "slow"})
        time.sleep(0.3)
        # Another function answers while the slow one is still unanswered: the slow
        # handler does not hold the others up.
        assert client.get("/asgi/identity").status_code == 200
        assert not slow.done()
        response = slow.result()
    # Answered at the function's Timeout (1 s): a handler left to end (3 s) answers 200.
    assert response.status_code == 504
    assert response.json() == {"message": "Service Unavailable"}
    assert "EchoFunction timed out after 1 seconds" in log.read_text()
    # Its worker was killed, not left running, and the function still answers.
    slow_pid = int((log.parent / "slow-worker.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(slow_pid, 0)
    assert client.get("/echo/after").status_code == 201


def test_bodies_over_10_mb_get_413_and_results_over_6_mb_502(client: httpx.Client) -> None:
    response = client.post("/echo/big", content=b"x" * (10 * 1024 * 1024 + 1))
    assert response.status_code == 413
    assert response.json() == {"message": "Request Entity Too Large"}
    just_fits = client.post(
        "/echo/big", content=b"x" * (10 * 1024 * 1024), headers={"content-type": "text/plain"}
    )
    # It reaches the function, whose echo of it is over Lambda's 6 MB response limit:
    # API Gateway's 502, as on AWS.
    assert just_fits.status_code == 502
    assert just_fits.json() == {"message": "Internal Server Error"}
    fits_both_ways = client.post(
        "/echo/big", content=b"x" * (4 * 1024 * 1024), headers={"content-type": "text/plain"}
    )
    assert fits_both_ways.status_code == 201


def test_environment_layers_and_same_named_modules(client: httpx.Client) -> None:
    echo = client.get("/echo/env").json()
    # The developer's shell and .env win over the template, and reach the function as
    # variables; STAGE is local, whatever the template deploys; the pool holds one
    # connection (a worker serves one request at a time); what needs AWS stays unset.
    assert echo["env"] == {
        "STAGE": "local",
        "GREETING": echo["env"]["GREETING"],
        "FROM_SHELL": "shell",
        "FROM_DOTENV": "dotenv",
        "SECRET_ARN": None,
        "ONLY_ECHO": "yes-echo",
        "DATABASE_POOL_SIZE": "1",
        "SAME_NAME": "echo's value",
    }
    assert echo["env"]["GREETING"].startswith("hello from ")
    assert (echo["function"], echo["layer"]) == ("echo", "toy layer")
    # Both functions are `app.py`: each answers with its own.
    assert client.get("/asgi/identity").json() == {"function": "asgi", "layer": "toy layer"}


@pytest.mark.parametrize("layer", ["shell", ".env", "template"])
def test_every_setting_the_template_sets_takes_the_shell_then_env_then_the_template(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layer: str
) -> None:
    """Each variable of the real template's environment, at each layer of precedence, as
    each function's workers see it."""
    template = load_template(ROOT / "template.yaml")
    names = sorted({name for f in template.functions.values() for name in f.environment})
    assert {"CORS_ORIGINS", "BCRYPT_ROUNDS", "LOG_LEVEL", "STAGE"} <= set(names)
    for name in names:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    if layer != "template":
        (tmp_path / ".env").write_text("".join(f"{name}=from-dotenv\n" for name in names))
    if layer == "shell":
        for name in names:
            monkeypatch.setenv(name, "from-shell")
    settings = developer_settings()
    for function in load_template(ROOT / "template.yaml", settings).functions.values():
        environment = function_environment(function, settings, pool_size=3)
        for name in function.environment:
            if layer != "template":
                expected = "from-shell" if layer == "shell" else "from-dotenv"
            else:
                # Neither set: the local defaults, then the function's own value.
                local = {"STAGE": "local", "DATABASE_POOL_SIZE": "3"}
                expected = local.get(name) or template.functions[function.name].environment[name]
            assert environment[name] == expected, (function.name, name)


def test_a_variable_set_to_a_parameter_gives_the_parameter_the_developers_value() -> None:
    """CORS_ORIGINS is `!Ref CorsOrigins`: the HttpApi's CORS configuration follows it."""
    path = ROOT / "template.yaml"
    default = load_template(path).cors
    assert default is not None
    assert default.allow_origins == ("*",)
    chosen = load_template(path, {"CORS_ORIGINS": "http://a.example,http://b.example"}).cors
    assert chosen is not None
    assert chosen.allow_origins == ("http://a.example", "http://b.example")
    assert chosen.allow_methods == default.allow_methods
    # Empty: the template's HasCors condition is false, as in a deploy with CorsOrigins "":
    # a configuration that allows no origin (API Gateway still answers preflights itself).
    closed = load_template(path, {"CORS_ORIGINS": ""}).cors
    assert closed is not None
    assert (closed.allow_origins, closed.allows("http://a.example")) == ((), False)
    # The variable itself, and the other functions' values of that parameter, agree.
    template = load_template(path, {"BCRYPT_ROUNDS": "5"})
    assert {f.environment["BCRYPT_ROUNDS"] for f in template.functions.values()} == {"5"}


def test_a_parallel_burst_is_served_concurrently_without_errors(client: httpx.Client) -> None:
    def call(number: int) -> tuple[int, object]:
        if number % 2:
            response = client.get(f"/asgi/work/{number}")
            return response.status_code, {"number": response.json()["number"]}
        response = client.get(f"/echo/burst/{number}")
        return response.status_code, response.json()["event"]["pathParameters"]

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(call, range(50)))
    for number, (status, body) in enumerate(results):
        if number % 2:
            assert (status, body) == (200, {"number": number})
        else:
            assert (status, body) == (201, {"proxy": f"burst/{number}"})


def test_each_worker_serves_one_request_at_a_time_and_workers_scale_out(
    client: httpx.Client,
) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        bodies = list(pool.map(lambda n: client.get(f"/asgi/work/{n}").json(), range(16)))
    # Two processes (--workers 2) served the burst, and none ever ran two requests at once.
    assert len({body["pid"] for body in bodies}) == 2
    assert {body["most"] for body in bodies} == {1}


def test_a_request_takes_the_first_worker_free_not_a_cold_start_of_its_own(
    toy_template: Path,
) -> None:
    """With its one warm worker busy, requests are served as it frees up while the second
    worker's import still runs; that worker serves once imported."""
    hold = toy_template.parent / "hold-asgi-imports"

    def burst(api: httpx.Client) -> list[dict[str, Any]]:
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(lambda n: api.get(f"/asgi/work/{n}").json(), range(8)))

    with local_server(toy_template, options=("--workers", "2")) as (api, _):
        hold.touch()
        try:
            held = burst(api)
        finally:
            hold.unlink()
        assert len({body["pid"] for body in held}) == 1
        pids: set[int] = set()
        for _ in range(50):
            pids |= {body["pid"] for body in burst(api)}
            if len(pids) == 2:
                break
        assert len(pids) == 2
        assert held[0]["pid"] in pids


def test_each_function_sees_its_own_environment_in_a_process_of_its_own(
    client: httpx.Client,
) -> None:
    echo = client.get("/echo/env").json()
    asgi = client.get("/asgi/env").json()
    # One variable, two values: each function has its template Environment alone.
    assert echo["env"]["SAME_NAME"] == "echo's value"
    assert asgi["SAME_NAME"] == "asgi's value"
    assert asgi["ONLY_ECHO"] is None
    # Module state one function leaves in the shared layer's module stays its own.
    remembered = client.get("/echo/x", params={"mode": "remember"}).json()
    assert "echo was here" in remembered["state"]
    assert client.get("/asgi/env").json()["state"] == []
    assert remembered["pid"] != echo_pid_of(client, "/asgi/work/0")


def test_a_worker_that_dies_while_idle_is_replaced(client: httpx.Client) -> None:
    pid = echo_pid_of(client, "/asgi/work/1")
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)  # the server sees its pipe close
    # As Lambda replaces a crashed environment: the next request gets a fresh worker.
    response = client.get("/asgi/work/2")
    assert response.status_code == 200
    assert response.json()["pid"] != pid


def raw_exchange(client: httpx.Client, data: bytes) -> bytes:
    """Send bytes as they are to the running server; what it answers until it closes."""
    url = client.base_url
    with socket.create_connection((url.host, url.port or 80), timeout=15) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_the_server_answers_pipelined_and_malformed_requests(client: httpx.Client) -> None:
    # Two pipelined requests on one connection, the second closing it: both answered.
    request = b"GET /asgi/work/%d HTTP/1.1\r\nHost: local\r\n"
    answer = raw_exchange(
        client, request % 1 + b"\r\n" + request % 2 + b"Connection: close\r\n\r\n"
    )
    assert answer.count(b"HTTP/1.1 200 OK") == 2, answer
    # A request line no parser can read is the server's 400, never a handler's.
    assert raw_exchange(client, b"GET /asgi/work/1 HTTP/9\r\n\r\n").startswith(b"HTTP/1.1 400")


def echo_pid_of(client: httpx.Client, path: str) -> int:
    pid: int = client.get(path).json()["pid"]
    return pid


def test_reload_picks_up_changed_code(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(
        textwrap.dedent("""\
            Resources:
              Fn:
                Type: AWS::Serverless::Function
                Properties:
                  CodeUri: fn/
                  Handler: app.handler
                  Events:
                    Get: {Type: HttpApi, Properties: {Path: /version, Method: GET}}
            """)
    )
    code = tmp_path / "fn" / "app.py"
    code.parent.mkdir()
    code.write_text("def handler(event, context):\n    return {'version': 1}\n")
    # Both saves fall in one second and the file keeps its size: Python's cached bytecode
    # records the source's whole seconds and size alone, so only a reloader that drops it
    # serves the new code. The times are set rather than waited for, so that this always holds.
    saved = int(time.time()) - 10
    os.utime(code, (saved + 0.1, saved + 0.1))
    # The server writes bytecode, as on a developer's machine.
    server = local_server(template, options=("--reload",), env={"PYTHONDONTWRITEBYTECODE": None})
    with server as (client, _):
        assert client.get("/version").json() == {"version": 1}
        assert importlib.util.cache_from_source(str(code)) in {
            str(path) for path in (code.parent / "__pycache__").iterdir()
        }
        code.write_text("def handler(event, context):\n    return {'version': 2}\n")
        os.utime(code, (saved + 0.6, saved + 0.6))
        assert wait_for_version(client, 2), "the server did not reload"


def wait_for_version(client: httpx.Client, version: int) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if client.get("/version").json() == {"version": version}:
                return True
        except httpx.TransportError:
            pass  # between the old process and the new
        time.sleep(0.2)
    return False


def idle(sockets: list[socket.socket] | None) -> None:
    """The server process's stand-in in the reloader's tests."""
    time.sleep(60)


@contextmanager
def code_reload(folder: Path) -> Iterator[CodeReload]:
    """A started CodeReload watching `folder`, its process idle; its signal handlers undone."""
    config = uvicorn.Config("app:app", reload=True, reload_dirs=[str(folder)], reload_delay=0.01)
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    reloader = CodeReload(config, target=idle, sockets=[])
    reloader.startup()
    try:
        yield reloader
    finally:
        reloader.shutdown()
        for number, handler in handlers.items():
            signal.signal(number, handler)


def test_reload_counts_a_save_made_while_the_server_starts(tmp_path: Path) -> None:
    code, other = tmp_path / "app.py", tmp_path / "other.py"
    code.write_text("x = 1\n")
    other.write_text("y = 1\n")
    with code_reload(tmp_path) as reloader:
        # Saved before the first scan: uvicorn's StatReload would take it as the baseline.
        later = code.stat().st_mtime + 1
        os.utime(code, (later, later))
        assert reloader.should_restart() == [code.resolve()]
        assert reloader.should_restart() is None


def test_reload_restarts_when_a_module_is_added_or_removed(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("x = 1\n")
    with code_reload(tmp_path) as reloader:
        added = tmp_path / "helpers.py"
        added.write_text("y = 1\n")
        assert reloader.should_restart() == [added.resolve()]
        added.unlink()
        assert reloader.should_restart() == [added.resolve()]
        assert reloader.should_restart() is None


# ---------------------------------------------------------------------------------------
# `python -m localapi invoke`


def run_invoke(template: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (our own interpreter and module)
        [sys.executable, "-m", "localapi", "--template", str(template), "invoke", *args],
        cwd=template.parent,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_invoke_prints_the_handlers_result(toy_template: Path) -> None:
    result = run_invoke(toy_template, "EchoFunction", "event.json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"hello": "world"}


def test_invoke_reports_errors_as_lambda_does(toy_template: Path) -> None:
    event = toy_template.parent / "raise.json"
    event.write_text(json.dumps({"queryStringParameters": {"mode": "raise"}}))
    result = run_invoke(toy_template, "EchoFunction", str(event))
    assert result.returncode == 1
    error = json.loads(result.stdout)
    assert (error["errorType"], error["errorMessage"]) == ("RuntimeError", "the handler broke")

    unknown = run_invoke(toy_template, "NoSuchFunction")
    assert unknown.returncode == 2
    assert "No function 'NoSuchFunction'" in unknown.stderr


def test_without_workers_each_function_may_start_one_more_than_the_cores() -> None:
    # Every request also crosses the server's own process: one worker per core would
    # leave a core idle under a steady load (localapi.server.default_workers).
    api = build_local_api(ROOT / "template.yaml")
    try:
        sizes = {pool.size for pool in api.runtime.pools.values()}
    finally:
        api.runtime.close()
    assert sizes == {(os.cpu_count() or 1) + 1}
