"""The whole platform as real processes for the order-flow tests, and the calls they make."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from quanyu.auth import Role, TokenCodec, caller
from quanyu.config import SERVICE_NAMES
from quanyu.fulfilment.v1 import fulfilment_pb2_grpc
from quanyu.identity.v1 import identity_pb2_grpc
from quanyu.membership.v1 import membership_pb2_grpc
from quanyu.orders.v1 import orders_pb2_grpc
from tests.processes import platform_env, started, target, wait_serving

Metadata = tuple[tuple[str, str], ...]


@dataclass
class Platform:
    """Four services on free ports, one var dir, stubs and tokens to call them."""

    var: Path
    env: dict[str, str]
    logs: Path
    stack: ExitStack
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    codec: TokenCodec | None = None

    def start(self, service: str) -> None:
        process = self.stack.enter_context(
            started(["serve", service], self.env, self.logs / f"{service}.log")
        )
        wait_serving(target(self.env, service), process)
        self.processes[service] = process

    def stop(self, service: str) -> None:
        process = self.processes.pop(service)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)

    def terminate_all(self) -> None:
        """SIGTERM every running service at once, so they shut down side by side."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    def freeze(self, service: str) -> None:
        self.processes[service].send_signal(signal.SIGSTOP)

    def thaw(self, service: str) -> None:
        self.processes[service].send_signal(signal.SIGCONT)

    def token(self, role: Role, *, store_id: str = "", channel: str = "", subject: str = "") -> Metadata:
        if self.codec is None:
            self.codec = TokenCodec.local(self.var / "token-keys")
        principal = caller(role, store_id=store_id, channel=channel, subject=subject)
        return (("authorization", f"Bearer {self.codec.issue(principal, 3600).token}"),)

    def channel(self, service: str) -> grpc.Channel:
        return self.stack.enter_context(grpc.insecure_channel(target(self.env, service)))

    @property
    def orders(self) -> orders_pb2_grpc.OrderServiceStub:
        return orders_pb2_grpc.OrderServiceStub(self.channel("orders"))

    @property
    def fulfilment(self) -> fulfilment_pb2_grpc.FulfilmentServiceStub:
        return fulfilment_pb2_grpc.FulfilmentServiceStub(self.channel("fulfilment"))

    @property
    def membership(self) -> membership_pb2_grpc.MembershipServiceStub:
        return membership_pb2_grpc.MembershipServiceStub(self.channel("membership"))

    @property
    def identity(self) -> identity_pb2_grpc.IdentityServiceStub:
        return identity_pb2_grpc.IdentityServiceStub(self.channel("identity"))


@contextmanager
def platform(tmp_path: Path, services: Sequence[str] = SERVICE_NAMES, **env: str) -> Iterator[Platform]:
    """`services` started (each service has a free port, whether started or not: a test may serve
    one itself there)."""
    var = tmp_path / "var"
    logs = tmp_path / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        # Every service on free ports, its metrics endpoint included (see platform_env).
        running = Platform(var, platform_env(var, **env), logs, stack)
        for service in services:
            running.start(service)
        stack.callback(running.terminate_all)  # runs first on the way out
        yield running
