"""A TCP forwarder for the tests: the e2e node reaches the API server (which listens on 127.0.0.1
only) through one, and a test cuts one to take a server away from its clients mid-run."""

from __future__ import annotations

import contextlib
import socket
import threading


class Forwarder:
    """Accepts on (host, port) and copies bytes both ways to 127.0.0.1:target."""

    def __init__(self, host: str, target: int) -> None:
        self.target = target
        self.server = socket.create_server((host, 0))
        self.port = int(self.server.getsockname()[1])
        self.closed = False
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name="forwarder").start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                if self.closed:
                    client.close()
                    upstream.close()
                    return
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        """No new connections; those open go on."""
        self.closed = True
        self.server.close()

    def cut(self) -> None:
        """No new connections, and those open are closed: a server gone, as its clients see it."""
        with self.lock:
            self.close()
            for s in self.conns:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            self.conns.clear()
