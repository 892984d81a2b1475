"""A loopback TCP proxy that tests can cut: to drop a client's connection in the middle of a reply."""

from __future__ import annotations

import socket
import threading
from contextlib import suppress

from servers import LOCALHOST


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target. ``cut_after(n)`` closes every connection once the
    server has sent n more bytes through it, as a dropped network would, without a goodbye.
    ``stall(True)`` throws away what the server sends and closes nothing, as a NAT or firewall
    that forgot the connection does: the client waits for answers that never come."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server((LOCALHOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self.host = LOCALHOST
        self._lock = threading.Lock()
        self._budget: int | None = None
        self._stalled = False
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_after(self, server_bytes: int | None) -> None:
        with self._lock:
            self._budget = server_bytes

    def stall(self, stalled: bool) -> None:
        with self._lock:
            self._stalled = stalled

    def close(self) -> None:
        self._closed = True
        with suppress(OSError):
            self._listener.close()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            _close(a, b)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_server: bool) -> None:
        try:
            while True:
                data = source.recv(4096)
                if not data:
                    break
                if from_server:
                    with self._lock:
                        if self._stalled:
                            continue
                        if self._budget is not None:
                            if len(data) >= self._budget:
                                data = data[: self._budget]
                                self._budget = 0
                            else:
                                self._budget -= len(data)
                        cut = self._budget == 0
                    if data:
                        sink.sendall(data)
                    if cut:
                        break
                else:
                    sink.sendall(data)
        except OSError:
            pass
        _close(source, sink)


def _close(*sockets: socket.socket) -> None:
    for s in sockets:
        with suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        with suppress(OSError):
            s.close()
