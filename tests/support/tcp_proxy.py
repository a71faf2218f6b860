"""A TCP forwarder on 127.0.0.1 that tests put between the app and PostgreSQL, and break.

`cut("reset")` closes every open connection with a TCP reset and resets new ones as soon
as they arrive (a crashed or restarting server). `cut("blackhole")` closes every open
connection and accepts new ones without ever answering (a host that hangs, or a load
balancer in front of a dead server). `restore()` forwards again, on the same port.
"""

import contextlib
import selectors
import socket
import struct
import threading
from typing import Literal

Mode = Literal["forward", "reset", "blackhole"]
_CHUNK = 65536


def _reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN, as a crashed peer's kernel would."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Forwards 127.0.0.1:<port> (or `listen_host`'s) to the target until told to fail."""

    def __init__(
        self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1"
    ) -> None:
        self.target = (target_host, target_port)
        self.mode: Mode = "forward"
        self.accepted = 0
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._held: list[socket.socket] = []  # blackholed connections, never answered
        self._trap: tuple[bytes, bool, Literal["reset", "blackhole"]] | None = None
        self.sprung = threading.Event()
        self._listener = socket.create_server((listen_host, 0))
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    # -----------------------------------------------------------------------------------
    # Controls

    def cut(self, mode: Literal["reset", "blackhole"]) -> None:
        """Drop every open connection and fail new ones in the given way."""
        with self._lock:
            self.mode = mode
            pairs, self._pairs = self._pairs, set()
        for client, server in pairs:
            _reset(client)
            _reset(server)

    def cut_on(
        self,
        pattern: bytes,
        *,
        to_client: bool = False,
        mode: Literal["reset", "blackhole"] = "reset",
    ) -> None:
        """Cut (as `cut(mode)`) as soon as a chunk containing `pattern` passes: a request
        caught mid-flight. Client-to-server chunks are dropped with the cut (the server never
        sees them); server-to-client ones too (the server did the work, the client never
        hears of it). `sprung` is set when it happens."""
        with self._lock:
            self._trap = (pattern, to_client, mode)
            self.sprung.clear()

    def restore(self) -> None:
        """Forward new connections again (held blackholed ones are closed)."""
        with self._lock:
            self.mode = "forward"
            held, self._held = self._held, []
        for sock in held:
            _reset(sock)

    def close(self) -> None:
        self._closed.set()
        self.cut("reset")
        self.restore()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._thread.join(timeout=5)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    # -----------------------------------------------------------------------------------
    # Forwarding

    def _accept_loop(self) -> None:
        self._listener.settimeout(0.2)
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            with self._lock:
                mode = self.mode
                if mode == "blackhole":
                    self._held.append(client)
                    continue
            if mode == "reset":
                _reset(client)
                continue
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(client)
            return
        server.settimeout(None)
        pair = (client, server)
        with self._lock:
            if self.mode != "forward":
                _reset(client)
                _reset(server)
                return
            self._pairs.add(pair)
        self._pump(pair)

    def _pump(self, pair: tuple[socket.socket, socket.socket]) -> None:
        client, server = pair
        peers = {client: server, server: client}
        selector = selectors.DefaultSelector()
        try:
            for sock in peers:
                selector.register(sock, selectors.EVENT_READ)
            while True:
                with self._lock:
                    if pair not in self._pairs:
                        return
                for key, _ in selector.select(timeout=0.2):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = source.recv(_CHUNK)
                    if not data:
                        return
                    if self._springs(data, to_client=source is server):
                        return
                    peers[source].sendall(data)
        except (OSError, ValueError):
            return  # one side went away, or `cut` closed the sockets under us
        finally:
            selector.close()
            with self._lock:
                dropped = pair in self._pairs
                self._pairs.discard(pair)
            if dropped:
                for sock in pair:
                    with contextlib.suppress(OSError):
                        sock.close()

    def _springs(self, data: bytes, *, to_client: bool) -> bool:
        with self._lock:
            trap = self._trap
            if trap is None or trap[1] != to_client or trap[0] not in data:
                return False
            self._trap = None
        # Set before cutting: the cut wakes the client, which may look at once.
        self.sprung.set()
        self.cut(trap[2])
        return True
