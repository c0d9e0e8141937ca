"""Stores as the catalogue and the use cases read them, and the revision that tells replicas
what changed."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection

from quanyu.db import from_row
from services.fulfilment.domain.hours import OpeningHours, parse_hours
from services.fulfilment.domain.stores import Store, StoreStatus
from services.fulfilment.storage.tables import store_revision, stores


def store_from_row(row: Any) -> Store:
    return from_row(
        Store,
        row,
        status=StoreStatus(row.status),
        opening_hours=_hours_from_json(row.opening_hours),
        timezone=sys.intern(row.timezone),
    )


def _hours_to_json(hours: Iterable[OpeningHours]) -> str:
    return json.dumps([[h.weekday, h.open.strftime("%H:%M"), h.close.strftime("%H:%M")] for h in hours])


@functools.lru_cache(maxsize=4096)
def _hours_from_json(text: str) -> tuple[OpeningHours, ...]:
    # Stores share a few hundred weekly patterns. Reading stores back (the catalogue refresh
    # after every import call reads the whole batch) parsed the same ones over and over, a
    # fifth of the time a bulk import took; parsed hours are immutable, so they can be shared.
    return tuple(parse_hours([(int(w), str(o), str(c)) for w, o, c in json.loads(text)]))


class StoreRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def next_revision(self) -> int:
        """Take the next store revision; the row lock orders writers by commit."""
        bumped = self._db.execute(
            update(store_revision)
            .where(store_revision.c.id == 1)
            .values(revision=store_revision.c.revision + 1)
        )
        if bumped.rowcount == 0:
            self._db.execute(insert(store_revision).values(id=1, revision=1))
        return int(
            self._db.execute(select(store_revision.c.revision).where(store_revision.c.id == 1)).scalar_one()
        )

    def upsert(self, batch: Sequence[Store], now: datetime) -> None:
        if not batch:
            return
        revision = self.next_revision()
        ids = [s.store_id for s in batch]
        existing = set(
            self._db.execute(select(stores.c.store_id).where(stores.c.store_id.in_(ids))).scalars()
        )
        rows = [self._row(s, revision, now) for s in batch]
        new_rows = [r for r in rows if r["store_id"] not in existing]
        if new_rows:
            self._db.execute(insert(stores), [{**r, "create_time": now, "open_orders": 0} for r in new_rows])
        replaced = [
            {"key": r["store_id"], **{k: v for k, v in r.items() if k != "store_id"}}
            for r in rows
            if r["store_id"] in existing
        ]
        if replaced:
            # One executemany for the batch: a statement per store made re-importing 100,000
            # stores take tens of seconds. The SET clause is every column given but the key.
            self._db.execute(update(stores).where(stores.c.store_id == bindparam("key")), replaced)

    @staticmethod
    def _row(store: Store, revision: int, now: datetime) -> dict[str, Any]:
        return {
            "store_id": store.store_id,
            "name": store.name,
            "latitude": store.latitude,
            "longitude": store.longitude,
            "status": store.status.value,
            "delivery_radius_m": store.delivery_radius_m,
            "delivery_zone_geojson": store.delivery_zone_geojson,
            "opening_hours": _hours_to_json(store.opening_hours),
            "timezone": store.timezone,
            "max_active_orders": store.max_active_orders,
            "priority": store.priority,
            "revision": revision,
            "update_time": now,
        }

    def get(self, store_id: str) -> Store | None:
        row = self._db.execute(select(stores).where(stores.c.store_id == store_id)).one_or_none()
        return store_from_row(row) if row else None

    def exists(self, store_id: str) -> bool:
        return (
            self._db.execute(select(stores.c.store_id).where(stores.c.store_id == store_id)).first()
            is not None
        )

    def page(self, after: str, limit: int) -> list[Store]:
        rows = self._db.execute(
            select(stores).where(stores.c.store_id > after).order_by(stores.c.store_id).limit(limit)
        ).all()
        return [store_from_row(r) for r in rows]

    def changed_since(self, revision: int) -> tuple[list[Store], int]:
        """Stores written after `revision`, and the newest revision seen."""
        rows = self._db.execute(select(stores).where(stores.c.revision > revision)).all()
        newest = max((r.revision for r in rows), default=revision)
        return [store_from_row(r) for r in rows], newest

    def all(self) -> tuple[list[Store], int]:
        rows = self._db.execute(select(stores)).all()
        return [store_from_row(r) for r in rows], max((r.revision for r in rows), default=0)
