"""The catalogue snapshot of this replica: loaded from the stores table at start, then kept fresh
by a thread that reads what other replicas changed.

Another replica's store changes arrive through the store revision within one refresh period;
this replica's own writes are applied at once (the use cases call `refresh` after writing).
"""

from __future__ import annotations

import threading

import structlog

from quanyu.db import Database
from services.fulfilment.domain.catalogue import CatalogueSnapshot, StoreCatalogue
from services.fulfilment.storage.stores import StoreRepository

log = structlog.get_logger("quanyu.fulfilment")


class CachedCatalogue:
    """A cache of the stores table as the spatial index assignment searches; a task of the
    server (start, stop) that refreshes itself every `refresh_seconds`."""

    def __init__(self, database: Database, *, refresh_seconds: float = 0.5) -> None:
        self._db = database
        self._builder = StoreCatalogue()
        self._refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        with database.snapshot() as connection:
            everything, self._revision = StoreRepository(connection).all()
        self.snapshot: CatalogueSnapshot = self._builder.build(everything)

    def refresh(self) -> None:
        with self._lock:
            with self._db.snapshot() as connection:
                changed, newest = StoreRepository(connection).changed_since(self._revision)
            if changed:
                self.snapshot = self._builder.update(self.snapshot, changed)
                self._revision = newest

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="catalogue-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._refresh_seconds):
            try:
                self.refresh()
            except Exception:
                log.exception("catalogue refresh failed; retrying")
