"""Real Quanyu processes for cross-process tests: free ports, environments, readiness, and
polling with a deadline for what they do in the background."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from quanyu.config import SERVICE_NAMES
from quanyu_ops.supervisor import terminate

QUANYU = [sys.executable, "-m", "quanyu_ops.cli"]

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


def outgoing_ports() -> range:
    """The ports the kernel gives outgoing connections (Linux's default when it does not say)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


_OUTGOING = outgoing_ports()
# Listening ports come from outside the kernel's range for outgoing connections: a port taken from
# inside it could be handed to some client's connection between the pick and the server's bind.
# (A machine that gives outgoing connections every port leaves only the check below.)
_LISTENING = [port for port in range(10_000, 65_536) if port not in _OUTGOING] or list(range(10_000, 65_536))
_handed_out: set[int] = set()
_picking = threading.Lock()
# Not the global generator, which tests may seed (Hypothesis does): two processes would then
# start their walks at the same port.
_start = random.SystemRandom()


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on, for a server about to start.

    Never the same one twice in this process, so two servers of one test never pick alike; the
    walk starts at a random place, so two test or bench processes rarely walk the same ports.
    """
    with _picking:
        start = _start.randrange(len(_LISTENING))
        for step in range(len(_LISTENING)):
            port = _LISTENING[(start + step) % len(_LISTENING)]
            if port in _handed_out:
                continue
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise OSError("no free port left on 127.0.0.1")


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
            raise AssertionError(
                f"process exited with {process.returncode} before serving {address}; "
                f"its log ends:\n{_log_tail(process)}"
            )
        if health_status(address) == health_pb2.HealthCheckResponse.SERVING:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{address} not SERVING within {timeout} s")


def run_cli(args: list[str], env: Mapping[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*QUANYU, *args], env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )


# Where each process of started() writes, so a failure to start can show why.
_logs: weakref.WeakKeyDictionary[subprocess.Popen[bytes], Path] = weakref.WeakKeyDictionary()


def _log_tail(process: subprocess.Popen[bytes], limit: int = 4000) -> str:
    log = _logs.get(process)
    if log is None:
        return "(not logged)"
    return log.read_bytes()[-limit:].decode(errors="replace")


@contextmanager
def started(args: list[str], env: Mapping[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A `quanyu` command in the background, its standard error in `log_path`; stopped after."""
    with log_path.open("wb") as log:
        process = subprocess.Popen([*QUANYU, *args], env=dict(env), stdout=log, stderr=log)
        _logs[process] = log_path
        try:
            yield process
        finally:
            terminate(process, timeout=20)


def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []
