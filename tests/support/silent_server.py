"""A TCP server on 127.0.0.1 that accepts every connection and never answers: an AWS
endpoint behind a security group or proxy that swallows traffic, as a function in a VPC
without a VPC endpoint or NAT gateway sees it."""

import contextlib
import socket
import threading
from collections.abc import Iterator


class SilentServer:
    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            self._held.append(connection)  # kept open, never read, never answered

    def close(self) -> None:
        self._listener.close()
        for connection in self._held:
            with contextlib.suppress(OSError):
                connection.close()


@contextlib.contextmanager
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()
