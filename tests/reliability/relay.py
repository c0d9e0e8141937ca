"""A TCP relay in front of a service, so a test can lose the service's answers on the way back.

In its usual state it passes bytes both ways untouched. Told to `hold()`, it keeps forwarding
requests but keeps the service's replies to itself; `cut()` then closes every connection and drops
what it held, as a crash or a network partition would between the service's work and its answer
reaching the caller. `release()` delivers what was held and goes back to passing.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

_CHUNK = 65536


@dataclass
class _Link:
    """One caller's connection and the relay's own connection to the service for it."""

    caller: socket.socket
    service: socket.socket
    held: list[bytes] = field(default_factory=list)
    greeted: bool = False  # the service's first bytes (its HTTP/2 settings) have gone through

    def close(self) -> None:
        for end in (self.caller, self.service):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()


class Relay:
    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._holding = False
        self._closed = False
        threading.Thread(target=self._accept, name=f"relay-{self.address}", daemon=True).start()

    def hold(self) -> None:
        with self._lock:
            self._holding = True

    def release(self) -> None:
        with self._lock:
            self._holding = False
            for link in self._links:
                for chunk in link.held:
                    with contextlib.suppress(OSError):
                        link.caller.sendall(chunk)
                link.held.clear()

    def cut(self) -> None:
        """Close every connection, dropping the replies held back; pass again from now on."""
        with self._lock:
            self._holding = False
            links, self._links = self._links, []
        for link in links:
            link.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut()

    def _accept(self) -> None:
        while not self._closed:
            try:
                caller, _ = self._listener.accept()
            except OSError:
                return
            try:
                service = socket.create_connection(self._upstream, timeout=5)
            except OSError:
                caller.close()  # the service is down: the caller sees the connection refused
                continue
            service.settimeout(None)
            for end in (caller, service):
                end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(caller, service)
            with self._lock:
                self._links.append(link)
            threading.Thread(target=self._requests, args=(link,), daemon=True).start()
            threading.Thread(target=self._replies, args=(link,), daemon=True).start()

    def _requests(self, link: _Link) -> None:
        self._pump(link, link.caller, link.service.sendall)

    def _replies(self, link: _Link) -> None:
        def forward(chunk: bytes) -> None:
            with self._lock:
                # A new connection is greeted whatever happens: a caller sends nothing before
                # the service's settings arrive, and the replies to hold come only after that.
                if self._holding and link.greeted:
                    link.held.append(chunk)
                    return
                link.greeted = True
            link.caller.sendall(chunk)

        self._pump(link, link.service, forward)

    def _pump(self, link: _Link, source: socket.socket, forward: Callable[[bytes], None]) -> None:
        try:
            while chunk := source.recv(_CHUNK):
                forward(chunk)
        except OSError:
            pass
        with self._lock:
            if link in self._links:
                self._links.remove(link)
        link.close()
