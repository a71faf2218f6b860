"""The local server's HTTP/1.1 layer: a lean protocol for uvicorn (`Config(http=...)`).

The server's own process only parses requests, routes them and relays events to the
functions' worker processes; on two cores that process must not become the bottleneck.
uvicorn's pure-Python h11 layer was half of its CPU time per request, so requests are
parsed here with a few bytes operations instead, for what the local API serves: HTTP/1.1
and 1.0, keep-alive, pipelining, `Content-Length` and chunked request bodies, `Expect:
100-continue`; no upgrades (API Gateway's HTTP APIs carry no WebSockets). uvicorn still
runs everything around it: sockets, signals, graceful shutdown, lifespan, reload and its
access log, whose line this protocol writes in uvicorn's form.
"""

import asyncio
import http
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, unquote

from uvicorn.config import Config
from uvicorn.server import ServerState

Message = dict[str, Any]
App = Callable[
    [dict[str, Any], Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]

# A request's line and headers (h11, uvicorn's default layer, allows 16 KiB).
MAX_HEAD_BYTES = 64 * 1024
# Read no further ahead than this while the app has not taken the body so far.
HIGH_WATER_BYTES = 64 * 1024
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f-\xff]")
_STATUS_LINES = {
    status: f"HTTP/1.1 {status} {phrase}\r\n".encode()
    for status, phrase in ((s.value, s.phrase) for s in http.HTTPStatus)
}


class BadRequestError(ValueError):
    """The bytes are not an HTTP/1.1 request this server takes: 400, and the connection ends."""


def parse_head(head: bytes) -> tuple[str, bytes, bytes, str, list[tuple[bytes, bytes]]]:
    """Method, raw path, query, HTTP version and headers (names lower-cased) of a request's
    head, without its final CRLF CRLF."""
    request_line, *lines = head.split(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        raise BadRequestError("Invalid HTTP request line.")
    method, target, version = parts
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise BadRequestError("Unsupported HTTP version.")
    if _BAD_TARGET.search(target):
        raise BadRequestError("Invalid request target.")
    if target.startswith((b"http://", b"https://")):  # the absolute form, as proxies send
        slash = target.find(b"/", target.index(b"//") + 2)
        target = target[slash:] if slash >= 0 else b"/"
    elif not target.startswith(b"/") and target != b"*":
        raise BadRequestError("Invalid request target.")
    raw_path, _, query = target.partition(b"?")
    headers = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):  # obsolete line folding too
            raise BadRequestError("Invalid HTTP header.")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise BadRequestError("Invalid HTTP header value.")
        headers.append((name.lower(), value))
    return method.decode("ascii"), raw_path, query, version[5:].decode("ascii"), headers


class _Body:
    """A request body as it arrives: `Content-Length` bytes, or chunked."""

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        lengths = {value for name, value in headers if name == b"content-length"}
        encodings = [value.lower() for name, value in headers if name == b"transfer-encoding"]
        self.chunked = bool(encodings)
        if self.chunked and (encodings != [b"chunked"] or lengths):
            # Both at once is how requests are smuggled past proxies.
            raise BadRequestError("Unsupported Transfer-Encoding.")
        if len(lengths) > 1 or (lengths and not next(iter(lengths)).isdigit()):
            raise BadRequestError("Invalid Content-Length.")
        self.remaining = int(next(iter(lengths))) if lengths else 0
        self.done = not self.chunked and self.remaining == 0
        self._trailers = False

    def take(self, buffer: bytearray) -> bytes:
        """The body bytes at the start of `buffer`, removed from it; `done` once all came."""
        if not self.chunked:
            data = bytes(buffer[: self.remaining])
            del buffer[: len(data)]
            self.remaining -= len(data)
            self.done = self.remaining == 0
            return data
        pieces = []
        while not self.done:
            if self._trailers:  # after the last chunk: trailer lines until an empty one
                end = buffer.find(b"\r\n")
                if end < 0:
                    break
                self.done = end == 0
                del buffer[: end + 2]
            elif self.remaining < 0:
                if len(buffer) < 2:
                    break
                if buffer[:2] != b"\r\n":
                    raise BadRequestError("Invalid chunked body.")
                del buffer[:2]
                self.remaining = 0
            elif self.remaining:
                piece = bytes(buffer[: self.remaining])
                del buffer[: len(piece)]
                self.remaining -= len(piece)
                pieces.append(piece)
                if self.remaining:
                    break
                self.remaining = -1  # the CRLF after the chunk
            else:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > 1024:
                        raise BadRequestError("Invalid chunk size.")
                    break
                size = bytes(buffer[:end]).partition(b";")[0].strip()
                del buffer[: end + 2]
                try:
                    self.remaining = int(size, 16)
                except ValueError:
                    raise BadRequestError("Invalid chunk size.") from None
                self._trailers = self.remaining == 0
        return b"".join(pieces)


class _Exchange:
    """One request and its response on a connection."""

    def __init__(self, protocol: "GatewayProtocol", scope: dict[str, Any], body: _Body) -> None:
        self.protocol = protocol
        self.scope = scope
        self.body = body
        self.received = bytearray()
        self.arrived = asyncio.Event()
        self.continue_expected = any(
            name == b"expect" and value.lower() == b"100-continue"
            for name, value in scope["headers"]
        )
        self.keep_alive = scope["http_version"] == "1.1" and not any(
            name == b"connection" and b"close" in value.lower() for name, value in scope["headers"]
        )
        self.started = self.complete = self.disconnected = False
        self.length: int | None = None

    async def run(self, app: App) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except BaseException as error:
            logger.error("Exception in ASGI application\n", exc_info=error)
            if not self.started:
                await self._send_500()
            else:
                self.protocol.transport.close()
        else:
            if not self.complete and not self.disconnected:
                logger.error("ASGI callable returned without completing its response.")
                if not self.started:
                    await self._send_500()
                else:
                    self.protocol.transport.close()
        finally:
            self.protocol.finished(self)

    async def _send_500(self) -> None:
        self.keep_alive = False
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"21")]
        await self.send({"type": "http.response.start", "status": 500, "headers": headers})
        await self.send({"type": "http.response.body", "body": b"Internal Server Error"})

    async def receive(self) -> Message:
        if self.continue_expected and not self.protocol.transport.is_closing():
            self.continue_expected = False
            self.protocol.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        while not self.received and not self.body.done and not self.disconnected:
            self.protocol.resume()
            self.arrived.clear()
            await self.arrived.wait()
        if self.disconnected or self.complete:
            return {"type": "http.disconnect"}
        data = bytes(self.received)
        self.received.clear()
        self.protocol.resume()
        return {"type": "http.request", "body": data, "more_body": not self.body.done}

    async def send(self, message: Message) -> None:
        if self.disconnected:
            return
        transport = self.protocol.transport
        if not self.started:
            if message["type"] != "http.response.start":
                raise RuntimeError(f"Expected 'http.response.start', got {message['type']!r}")
            self.started = True
            self.continue_expected = False
            status: int = message["status"]
            if self.protocol.access_log:
                access_logger.info(
                    '%s - "%s %s HTTP/%s" %d',
                    _client(self.scope["client"]),
                    self.scope["method"],
                    _path_with_query(self.scope),
                    self.scope["http_version"],
                    status,
                )
            lines = [_STATUS_LINES.get(status) or f"HTTP/1.1 {status} \r\n".encode()]
            for name, value in [
                *self.protocol.server_state.default_headers,
                *message.get("headers", ()),
            ]:
                if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
                    raise RuntimeError(f"Invalid HTTP header {name!r}: {value!r}")
                name = name.lower()
                if name == b"content-length":
                    self.length = int(value)
                elif name == b"connection" and b"close" in value.lower():
                    self.keep_alive = False
                    continue
                lines += [name, b": ", value, b"\r\n"]
            if self.length is None:
                # Every response of the local API has a length; an ASGI app may leave it out.
                self.keep_alive = False
            if not self.keep_alive or not self.body.done:
                # A body not read to its end cannot be told apart from the next request.
                self.keep_alive = False
                lines.append(b"connection: close\r\n")
            lines.append(b"\r\n")
            transport.write(b"".join(lines))
            return
        if message["type"] != "http.response.body" or self.complete:
            raise RuntimeError(f"Unexpected ASGI message {message['type']!r}")
        body: bytes = message.get("body", b"")
        if self.scope["method"] != "HEAD" and body:
            if self.length is not None:
                self.length -= len(body)
                if self.length < 0:
                    raise RuntimeError("Response content longer than Content-Length")
            transport.write(body)
        if not message.get("more_body", False):
            self.complete = True
            self.arrived.set()
            if not self.keep_alive:
                transport.close()


def _client(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else ""


def _path_with_query(scope: dict[str, Any]) -> str:
    path = quote(scope["path"])
    return f"{path}?{scope['query_string'].decode('ascii')}" if scope["query_string"] else path


logger = logging.getLogger("uvicorn.error")
access_logger = logging.getLogger("uvicorn.access")


class GatewayProtocol(asyncio.Protocol):
    """An HTTP/1.1 connection, one request at a time, for uvicorn's server."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.app: App = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.root_path = config.root_path
        self.timeout_keep_alive = config.timeout_keep_alive
        # Checked once: at `--log-level warning` and above, no line per request.
        self.access_log = access_logger.hasHandlers() and access_logger.isEnabledFor(logging.INFO)
        self.server_state = server_state
        self.app_state = app_state
        self.buffer = bytearray()
        self.exchange: _Exchange | None = None
        self.paused = False
        self.idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 (asyncio's TCP transport)
        self.transport = transport
        self.server_state.connections.add(self)  # type: ignore[arg-type]
        socket = transport.get_extra_info("socket")
        self.server = _address(socket.getsockname()) if socket else None
        self.client = _address(socket.getpeername()) if socket else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        self._stop_idle_timer()
        if self.exchange is not None:
            self.exchange.disconnected = True
            self.exchange.arrived.set()

    def data_received(self, data: bytes) -> None:
        self._stop_idle_timer()
        self.buffer += data
        try:
            self._advance()
        except BadRequestError as error:
            self._reject(str(error))

    def _advance(self) -> None:
        exchange = self.exchange
        if exchange is not None:
            if not exchange.body.done:
                exchange.received += exchange.body.take(self.buffer)
                exchange.arrived.set()
            if len(self.buffer) + len(exchange.received) > HIGH_WATER_BYTES:
                self._pause()
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise BadRequestError("Request headers too large.")
            return
        head = bytes(self.buffer[:end])
        del self.buffer[: end + 4]
        if not head:
            raise BadRequestError("Invalid HTTP request line.")
        method, raw_path, query, version, headers = parse_head(head)
        try:
            path = raw_path.decode("ascii")
        except UnicodeDecodeError:
            raise BadRequestError("Invalid request target.") from None
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": version,
            "server": self.server,
            "client": self.client,
            "scheme": "http",
            "method": method,
            "root_path": self.root_path,
            "path": self.root_path + (unquote(path) if "%" in path else path),
            "raw_path": self.root_path.encode("ascii") + raw_path,
            "query_string": query,
            "headers": headers,
            "state": self.app_state.copy(),
        }
        self.exchange = _Exchange(self, scope, _Body(headers))
        self.exchange.received += self.exchange.body.take(self.buffer)
        task = self.loop.create_task(self.exchange.run(self.app))
        self.server_state.tasks.add(task)
        task.add_done_callback(self.server_state.tasks.discard)

    def finished(self, exchange: _Exchange) -> None:
        """The app is done with `exchange`: the next request, if the connection goes on."""
        self.server_state.total_requests += 1
        self.exchange = None
        if self.transport.is_closing():
            return
        if not exchange.keep_alive:
            self.transport.close()
            return
        self.resume()
        if self.buffer:  # a pipelined request
            try:
                self._advance()
            except BadRequestError as error:
                self._reject(str(error))
        if self.exchange is None and not self.transport.is_closing():
            self.idle_timer = self.loop.call_later(self.timeout_keep_alive, self.transport.close)

    def _reject(self, message: str) -> None:
        logger.warning("Invalid HTTP request received: %s", message)
        body = message.encode()
        self.transport.write(
            b"".join(
                [
                    _STATUS_LINES[400],
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body),
                    body,
                ]
            )
        )
        self.transport.close()

    def _pause(self) -> None:
        if not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self.transport.resume_reading()

    def _stop_idle_timer(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close when idle, or after the response in flight."""
        if self.exchange is None:
            self.transport.close()
        else:
            self.exchange.keep_alive = False


def _address(address: Any) -> tuple[str, int] | None:
    return (str(address[0]), int(address[1])) if isinstance(address, tuple) else None
