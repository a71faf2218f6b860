"""The local server's HTTP/1.1 layer (`localapi.protocol`), over real sockets: uvicorn runs
it, in a thread, in front of an ASGI app that echoes what it was given."""

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from localapi.protocol import BadRequestError, GatewayProtocol, parse_head
from localapi.server import free_port


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    if scope["path"] != "/early":  # answers before reading the body
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
    payload = json.dumps(
        {
            "method": scope["method"],
            "path": scope["path"],
            "raw_path": scope["raw_path"].decode(),
            "query": scope["query_string"].decode(),
            "headers": [[name.decode(), value.decode()] for name, value in scope["headers"]],
            "body": body.decode("latin-1"),
            "version": scope["http_version"],
        }
    ).encode()
    if scope["path"] == "/broken":
        raise RuntimeError("the app broke")
    headers = [(b"content-type", b"application/json")]
    if scope["path"] != "/unsized":
        headers.append((b"content-length", str(len(payload)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


@pytest.fixture(scope="module")
def address() -> Iterator[tuple[str, int]]:
    port = free_port()
    config = uvicorn.Config(
        echo, host="127.0.0.1", port=port, http=GatewayProtocol, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    yield "127.0.0.1", port
    server.should_exit = True
    thread.join(10)


def exchange(address: tuple[str, int], data: bytes, *, responses: int = 1) -> bytes:
    """What the server sends back for `data`, read until `responses` complete or it closes."""
    with socket.create_connection(address, timeout=5) as connection:
        connection.sendall(data)
        return read(connection, responses)


def read(connection: socket.socket, responses: int = 1) -> bytes:
    """Whole responses: the head and the body may come in separate segments."""
    received = b""
    while received.count(b"HTTP/1.1 ") < responses or not _complete(received, responses):
        chunk = connection.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def _complete(data: bytes, responses: int) -> bool:
    """Whether `data` holds `responses` whole responses (each with a content-length)."""
    for _ in range(responses):
        head, separator, rest = data.partition(b"\r\n\r\n")
        if not separator:
            return False
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        if len(rest) < length:
            return False
        data = rest[length:]
    return True


def bodies(data: bytes) -> list[dict[str, Any]]:
    found = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        found.append(json.loads(rest[:length]))
        data = rest[length:]
    return found


def test_requests_reach_the_app_as_uvicorn_gives_them(address: tuple[str, int]) -> None:
    with httpx.Client(base_url=f"http://{address[0]}:{address[1]}") as client:
        response = client.post(
            "/a%20b/c", params={"q": "1 2"}, content=b"hello", headers={"X-Thing": "v"}
        )
        again = client.get("/second")  # the same connection, kept alive
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "date" in response.headers
    seen = response.json()
    assert (seen["method"], seen["path"], seen["raw_path"]) == ("POST", "/a b/c", "/a%20b/c")
    assert seen["query"] == "q=1+2"
    assert ["x-thing", "v"] in seen["headers"]
    assert (seen["body"], seen["version"]) == ("hello", "1.1")
    assert again.json()["path"] == "/second"


def test_chunked_bodies_are_reassembled(address: tuple[str, int]) -> None:
    request = (
        b"POST /chunked HTTP/1.1\r\nhost: x\r\nTransfer-Encoding: chunked\r\nX-Thing:  v \t\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\ntrailer: t\r\n\r\n"
    )
    seen = bodies(exchange(address, request))[0]
    assert seen["body"] == "hello world"
    assert ["x-thing", "v"] in seen["headers"]  # names lower-cased, values stripped


def test_pipelined_requests_are_answered_in_order(address: tuple[str, int]) -> None:
    requests = b"".join(
        f"GET /{number} HTTP/1.1\r\nhost: x\r\n\r\n".encode() for number in range(3)
    )
    answers = bodies(exchange(address, requests, responses=3))
    assert [answer["path"] for answer in answers] == ["/0", "/1", "/2"]


def test_a_body_sent_in_pieces_arrives_whole(address: tuple[str, int]) -> None:
    with socket.create_connection(address, timeout=5) as connection:
        connection.sendall(b"POST /slow HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nhello")
        time.sleep(0.1)
        connection.sendall(b"world")
        answer = read(connection)
    assert bodies(answer)[0]["body"] == "helloworld"


def test_expect_100_continue_is_answered_before_the_body(address: tuple[str, int]) -> None:
    with socket.create_connection(address, timeout=5) as connection:
        connection.sendall(
            b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n"
        )
        assert connection.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        connection.sendall(b"ok")
        assert bodies(read(connection))[0]["body"] == "ok"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /x HTTP/1.0\r\n\r\n",  # HTTP/1.0 closes by default
        b"GET /x HTTP/1.1\r\nconnection: close\r\n\r\n",
        b"GET /unsized HTTP/1.1\r\n\r\n",  # no length: the end of the body is the close
        b"POST /early HTTP/1.1\r\ncontent-length: 100\r\n\r\nxx",  # a body left unread
    ],
)
def test_the_connection_closes_when_it_cannot_go_on(
    address: tuple[str, int], request_bytes: bytes
) -> None:
    with socket.create_connection(address, timeout=5) as connection:
        connection.sendall(request_bytes)
        received = b""
        while chunk := connection.recv(65536):  # returns b"" once the server closed
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")


def test_an_app_that_raises_gives_500_and_the_server_goes_on(address: tuple[str, int]) -> None:
    answer = exchange(address, b"GET /broken HTTP/1.1\r\nhost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert answer.endswith(b"Internal Server Error")
    assert bodies(exchange(address, b"GET /fine HTTP/1.1\r\n\r\n"))[0]["path"] == "/fine"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /x\r\n\r\n",
        b"GET /x HTTP/2.0\r\n\r\n",
        b"G(T /x HTTP/1.1\r\n\r\n",
        b"GET x HTTP/1.1\r\n\r\n",
        b"GET /x HTTP/1.1\r\nno colon\r\n\r\n",
        b"GET /x HTTP/1.1\r\nbad name: v\r\n\r\n",
        b"GET /x HTTP/1.1\r\na: 1\r\n folded\r\n\r\n",
        b"GET /x HTTP/1.1\r\na: b\x00c\r\n\r\n",
        b"POST /x HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        b"POST /x HTTP/1.1\r\ncontent-length: -1\r\n\r\n",
        b"POST /x HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
        b"POST /x HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n",
        b"POST /x HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"GET /x HTTP/1.1\r\nbig: " + b"x" * (70 * 1024),
    ],
)
def test_malformed_requests_get_400_and_a_closed_connection(
    address: tuple[str, int], request_bytes: bytes
) -> None:
    answer = exchange(address, request_bytes)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"connection: close\r\n" in answer


def test_the_head_parser_takes_the_absolute_form_and_the_asterisk() -> None:
    assert parse_head(b"GET http://example.com/p?q=1 HTTP/1.1")[1:3] == (b"/p", b"q=1")
    assert parse_head(b"GET http://example.com HTTP/1.1")[1] == b"/"
    assert parse_head(b"OPTIONS * HTTP/1.1")[1] == b"*"
    with pytest.raises(BadRequestError):
        parse_head(b"GET /\xff HTTP/1.1")
