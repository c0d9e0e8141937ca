"""Real Quanyu processes for cross-process tests: free ports, environments, readiness, and
polling with a deadline for what they do in the background."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from quanyu.config import SERVICE_NAMES
from quanyu.supervisor import terminate

QUANYU = [sys.executable, "-m", "quanyu.cli"]

T = TypeVar("T")


def poll(read: Callable[[], T], done: Callable[[T], bool], what: str, within: float = 60.0) -> T:
    """Read until `done` holds of the answer; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:.0f} s; last seen {value!r}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def platform_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a local deployment in `var_dir`, every service on a free port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANYU_")}
    env.update({"QUANYU_VAR_DIR": str(var_dir), "QUANYU_GRACE_SECONDS": "3"})
    for name in SERVICE_NAMES:
        env[f"QUANYU_{name.upper()}__PORT"] = str(free_port())
        env[f"QUANYU_{name.upper()}__METRICS_PORT"] = str(free_port())
    env.update(extra)
    return env


def target(env: Mapping[str, str], service: str) -> str:
    return f"127.0.0.1:{env[f'QUANYU_{service.upper()}__PORT']}"


def health_status(address: str, service: str = "") -> int | None:
    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1
            )
        except grpc.RpcError:
            return None
    return int(answer.status)


def wait_serving(address: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 30) -> float:
    """Seconds until the server at `address` answers SERVING; fails if the process dies first."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process exited with {process.returncode} before serving {address}")
        if health_status(address) == health_pb2.HealthCheckResponse.SERVING:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{address} not SERVING within {timeout} s")


def run_cli(args: list[str], env: Mapping[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*QUANYU, *args], env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )


@contextmanager
def started(args: list[str], env: Mapping[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A `quanyu` command in the background, its standard error in `log_path`; stopped after."""
    with log_path.open("wb") as log:
        process = subprocess.Popen([*QUANYU, *args], env=dict(env), stdout=log, stderr=log)
        try:
            yield process
        finally:
            terminate(process, timeout=20)


def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []
