"""A TCP relay on 127.0.0.1 that a fault drill can cut, or slow, like a flaky network link.

A SuperNode pointed at :attr:`Relay.address` instead of the SuperLink reaches it through this
relay. :meth:`Relay.cut` resets every open connection and stops listening, so new connections
are refused (the link is down: the SuperNode's HTTP calls fail and Flower's retry loop keeps
trying); :meth:`Relay.restore` listens again on the same port. ``delay`` holds every chunk
that long in each direction (a slow link). TLS passes through untouched: the relay only moves
bytes. A relay created with ``up=False`` refuses connections until restored (a SuperNode that
starts before its SuperLink is listening then retries instead of meeting a closed TLS stream).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time

from fedkd.cli.launch import free_ports

_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close with a reset, not a FIN


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    with contextlib.suppress(OSError):
        sock.close()


class Relay:
    """Forward connections from a free port on 127.0.0.1 to ``target`` (``host:port``)."""

    def __init__(self, target: str, *, delay: float = 0.0, up: bool = True) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.delay = delay
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._server: socket.socket | None = None
        self.port = free_ports(1)[0]
        if up:
            self.restore()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._server is not None

    def restore(self) -> None:
        """The link is (back) up: listen on the relay's port again."""
        with self._lock:
            if self._server is not None:
                return
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", self.port))
            server.listen(64)
            self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def cut(self) -> None:
        """The link goes down: open connections are reset, new ones refused."""
        with self._lock:
            server, self._server = self._server, None
            victims, self._open = self._open, []
        if server is not None:
            # shutdown() first: close() alone leaves the port listening while the accept
            # thread is blocked in accept() on it (the kernel keeps the file open until that
            # call returns), so a new connection was accepted and reset instead of refused.
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                server.close()
        for sock in victims:
            _reset(sock)

    def close(self) -> None:
        self.cut()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # the listener was closed (cut)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)  # as if the far end refused: a plain error, retried
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._server is not server:  # cut meanwhile
                    _reset(client)
                    _reset(upstream)
                    return
                self._open += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        selector = selectors.DefaultSelector()
        for sock in peers:
            selector.register(sock, selectors.EVENT_READ)
        try:
            while True:
                for key, _ in selector.select(timeout=0.5):
                    source = key.fileobj
                    assert isinstance(source, socket.socket)
                    data = source.recv(65536)
                    if not data:
                        return
                    if self.delay:
                        time.sleep(self.delay)
                    peers[source].sendall(data)
                if client.fileno() < 0 or upstream.fileno() < 0:
                    return  # reset by cut
        except (OSError, ValueError):
            return
        finally:
            selector.close()
            for sock in peers:
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                self._open = [s for s in self._open if s not in peers]
