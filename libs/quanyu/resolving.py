"""Calls spread over every ready replica of a service within seconds of it becoming ready.

A Kubernetes Service with one virtual IP hides its pods: a client holds one connection to it, and
a replica the autoscaler adds gets calls only as connections age out. The services are headless
instead (their names resolve to the addresses of the ready pods), and a client re-resolves the
name every few seconds. gRPC's own DNS resolver resolves again only when a connection fails, so
this channel does it: when the set of addresses changes it opens a channel balancing round-robin
over exactly that set, moves new calls to it, and closes the old one once its calls are done.

With the resolution period P (QUANYU_RESOLVE_SECONDS, 5 s) and the cluster DNS cache TTL (5 s in
CoreDNS' kubernetes plugin), a pod becoming ready gets its share of calls within P + TTL.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import structlog

log = structlog.get_logger("quanyu.resolving")

Resolve = Callable[[str], list[str]]
Connect = Callable[[str, Sequence[tuple[str, Any]]], grpc.Channel]


def dns_addresses(host: str) -> list[str]:
    """Every address `host` resolves to, in a stable order."""
    found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in found})


def is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def split_target(target: str) -> tuple[str, int] | None:
    """(host, port) of a plain `host:port` target naming a host by name; None for an address, a
    URI target (dns:///..., unix:...) or a name without a port, which gRPC resolves itself."""
    if "://" in target or target.startswith(("unix:", "ipv4:", "ipv6:", "dns:")):
        return None
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit() or is_address(host):
        return None
    return host, int(port)


def address_target(addresses: Sequence[str], port: int) -> str:
    """gRPC's target for a fixed list of addresses."""
    if all(":" not in a for a in addresses):
        return "ipv4:" + ",".join(f"{a}:{port}" for a in addresses)
    return "ipv6:" + ",".join(f"[{a}]:{port}" if ":" in a else f"[::ffff:{a}]:{port}" for a in addresses)


class _Method:
    """A multicallable bound to whichever channel is current when it is called."""

    def __init__(
        self, owner: ResolvingChannel, kind: str, method: str, args: tuple[Any, ...], kwargs: Any
    ) -> None:
        self._owner, self._kind, self._method, self._args, self._kwargs = owner, kind, method, args, kwargs

    def _current(self) -> Any:
        channel = self._owner.current()
        return getattr(channel, self._kind)(self._method, *self._args, **self._kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._current()(*args, **kwargs)

    def with_call(self, *args: Any, **kwargs: Any) -> Any:
        return self._current().with_call(*args, **kwargs)

    def future(self, *args: Any, **kwargs: Any) -> Any:
        return self._current().future(*args, **kwargs)


class ResolvingChannel(grpc.Channel):  # type: ignore[misc]
    """A channel to `host:port` that follows the addresses the name resolves to (see the module)."""

    def __init__(
        self,
        host: str,
        port: int,
        connect: Connect,
        options: Sequence[tuple[str, Any]],
        *,
        every: float,
        drain_seconds: float,
        resolve: Resolve = dns_addresses,
    ) -> None:
        self._host, self._port, self._connect, self._every = host, port, connect, every
        self._drain, self._resolve = drain_seconds, resolve
        # The name as the caller wrote it, for the :authority header and the certificate check.
        self._options = [
            *options,
            ("grpc.default_authority", f"{host}:{port}"),
            ("grpc.ssl_target_name_override", host),
        ]
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._addresses: tuple[str, ...] = ()
        # Until the name resolves (a headless Service without a ready pod has no address),
        # gRPC's own resolver tries it.
        self._channel = connect(f"dns:///{host}:{port}", options)
        self._refresh()
        self._thread = threading.Thread(target=self._follow, name=f"resolve-{host}", daemon=True)
        self._thread.start()

    @property
    def addresses(self) -> tuple[str, ...]:
        return self._addresses

    def current(self) -> grpc.Channel:
        with self._lock:
            return self._channel

    def _follow(self) -> None:
        while not self._stopping.wait(self._every):
            self._refresh()

    def _refresh(self) -> None:
        try:
            addresses = tuple(self._resolve(self._host))
        except OSError as error:
            # Keep calling the replicas we know: a DNS hiccup is not a reason to stop.
            log.warning("name did not resolve; keeping the replicas known", host=self._host, error=str(error))
            return
        if not addresses or addresses == self._addresses:
            return
        channel = self._connect(address_target(addresses, self._port), self._options)
        with self._lock:
            old, self._channel, self._addresses = self._channel, channel, addresses
        log.info("replicas changed", host=self._host, addresses=list(addresses))
        # Calls already started on the old channel finish there.
        closing = threading.Timer(self._drain, old.close)
        closing.daemon = True
        closing.start()

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Method(self, "unary_unary", method, args, kwargs)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Method(self, "unary_stream", method, args, kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Method(self, "stream_unary", method, args, kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Method(self, "stream_stream", method, args, kwargs)

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        self.current().subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Any) -> None:
        self.current().unsubscribe(callback)

    def close(self) -> None:
        self._stopping.set()
        self.current().close()

    def __enter__(self) -> ResolvingChannel:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
