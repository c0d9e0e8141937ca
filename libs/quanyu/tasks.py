"""Periodic work a service runs beside its server (expiring points, timing out orders)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

log = structlog.get_logger("quanyu.tasks")


class Periodic:
    """Runs `job` every `interval` seconds on a thread of its own until stopped."""

    def __init__(self, name: str, job: Callable[[], int], interval: float) -> None:
        self._name, self._job, self._interval = name, job, interval
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                done = self._job()
                if done:
                    log.info("periodic job done", job=self._name, changed=done)
            except Exception:
                log.exception("periodic job failed; it runs again next period", job=self._name)
