"""`quanyu up`: every service as a child process, restarted when they crash, stopped together."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

import structlog

from quanyu.config import Settings
from quanyu.probe import health_status
from quanyu_ops.deployment import Deployment
from quanyu_ops.ports import TakenPort, taken_ports

log = structlog.get_logger("quanyu.supervisor")

MAX_BACKOFF_SECONDS = 30.0
# A child that stayed up this long is healthy again: its next crash restarts it at once.
STABLE_AFTER_SECONDS = 60.0
# `quanyu up`'s exit status when a port it would listen on is taken (the platform already running).
EXIT_PORTS_TAKEN = 3


@dataclass
class Child:
    service: str
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: float = 0.0
    restart_at: float = 0.0
    restarts: int = field(default=0)
    environment: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "quanyu_ops.cli", "serve", self.service], env=self.environment or None
        )
        self.started = time.monotonic()
        log.info("service started", service=self.service, pid=self.process.pid)


def is_serving(target: str, timeout: float = 1.0, settings: Settings | None = None) -> bool:
    """Whether the server at `target` answers SERVING; over mutual TLS when `settings` turn it on."""
    return health_status(target, timeout=timeout, settings=settings) == "SERVING"


def terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, so the process shuts down gracefully; SIGKILL if it has not ended within `timeout`."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def ports_in_use(services: Sequence[str], settings: Settings) -> list[TakenPort]:
    """The gRPC and metrics ports of `services` that some process already listens on."""
    wanted = [
        (name, kind, port)
        for name in services
        for kind, port in (
            ("gRPC", settings.service(name).port),
            ("metrics", settings.service(name).metrics_port),
        )
    ]
    return taken_ports(settings.host, wanted)


def refuse_taken_ports(services: Sequence[str], settings: Settings) -> int | None:
    """EXIT_PORTS_TAKEN, having said which ports and by what, when any port of `services` is taken."""
    taken = ports_in_use(services, settings)
    if not taken:
        return None
    lines = [f"quanyu up: {port.describe()}" for port in taken]
    lines.append(
        "quanyu up: nothing started. Is the platform already running? Stop it first, or give this one "
        "other ports (QUANYU_<SERVICE>__PORT, QUANYU_<SERVICE>__METRICS_PORT)."
    )
    print("\n".join(lines), file=sys.stderr)
    return EXIT_PORTS_TAKEN


def supervise(services: Sequence[str], deployment: Deployment) -> int:
    settings = deployment.settings
    stopping = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        log.info("stopping all services", signal=signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    environment = deployment.child_environment()
    children = [Child(name, environment=environment) for name in services]
    for child in children:
        child.start()
    announced = False
    while not stopping.wait(0.5):
        now = time.monotonic()
        for child in children:
            assert child.process is not None
            code = child.process.poll()
            if code is None:
                if now - child.started > STABLE_AFTER_SECONDS:
                    child.backoff = 0.0
                continue
            if child.restart_at == 0.0:
                child.backoff = min(MAX_BACKOFF_SECONDS, child.backoff * 2 or 1.0)
                child.restart_at = now + child.backoff
                log.warning(
                    "service exited; restarting", service=child.service, code=code, after_s=child.backoff
                )
            elif now >= child.restart_at:
                child.restart_at = 0.0
                child.restarts += 1
                child.start()
        if not announced and all(is_serving(settings.target(c.service), settings=settings) for c in children):
            announced = True
            log.info(
                "all services SERVING",
                services=list(services),
                targets={c.service: settings.target(c.service) for c in children},
            )
    return _stop_all(children, settings.grace_seconds + 5)


def _stop_all(children: list[Child], wait_seconds: float) -> int:
    running = [c.process for c in children if c.process is not None and c.process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + wait_seconds
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("service did not stop in time; killing it", pid=process.pid)
            process.kill()
            process.wait()
    log.info("all services stopped")
    return 0
