"""What marketing keeps from other services' events: which events it has acted on, each member's
profile and merges, their points' expiries, and completed orders."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection

from services.marketing.domain import Channel, Expiry, MemberFacts, Stage
from services.marketing.ports import CompletedOrder, Profile
from services.marketing.storage.sql import insert_new
from services.marketing.storage.tables import (
    completed_orders,
    member_profiles,
    point_expiries,
    processed_events,
)


class FactRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def claim_event(self, event_id: str, kind: str, now: datetime) -> bool:
        return insert_new(
            self._db, processed_events, {"event_id": event_id, "kind": kind, "process_time": now}
        )

    def put_profile(self, profile: Profile, now: datetime) -> None:
        f = profile.facts
        values: dict[str, Any] = {
            "customer_id": profile.customer_id,
            "tier": f.tier,
            "stage": f.stage.value,
            "tags": " ".join(sorted(f.tags)),
            "home_store_id": f.home_store_id,
            "guide_id": f.guide_id,
            "display_name": f.display_name,
            "points_balance": f.points_balance,
            "time_zone": f.time_zone,
            "birthday": f.birthday,
            "accounts": json.dumps({str(k.value): v for k, v in sorted(profile.accounts.items())}),
            "survivor_id": profile.survivor_id,
            "last_order_time": profile.last_order_time,
            "first_purchase_time": profile.first_purchase_time,
            "update_time": now,
        }
        if not insert_new(
            self._db, member_profiles, {"member_id": f.member_id, "create_time": now, **values}
        ):
            self._db.execute(
                update(member_profiles).where(member_profiles.c.member_id == f.member_id).values(**values)
            )

    def profile(self, member_id: str) -> Profile | None:
        row = self._db.execute(
            select(member_profiles).where(member_profiles.c.member_id == member_id)
        ).first()
        return _profile(row) if row else None

    def profiles_after(self, cursor: str, limit: int) -> list[Profile]:
        c = member_profiles.c
        rows = self._db.execute(
            select(member_profiles)
            .where(c.member_id > cursor, c.survivor_id == "")
            .order_by(c.member_id)
            .limit(limit)
        )
        return [_profile(row) for row in rows]

    def time_zones(self) -> set[str]:
        c = member_profiles.c
        rows = self._db.execute(select(c.time_zone).where(c.time_zone != "").distinct())
        return set(rows.scalars())

    def expiries_of(self, member_ids: Sequence[str]) -> dict[str, list[Expiry]]:
        found: dict[str, list[Expiry]] = {}
        wanted = list(member_ids)
        c = point_expiries.c
        # Bound parameters per IN list kept well under SQLite's limit.
        for start in range(0, len(wanted), 5000):
            rows = self._db.execute(
                select(c.member_id, c.points, c.expire_time)
                .where(c.member_id.in_(wanted[start : start + 5000]))
                .order_by(c.member_id, c.expire_time)
            )
            for row in rows:
                found.setdefault(row.member_id, []).append(Expiry(row.points, row.expire_time))
        return found

    def merge(self, member_id: str, survivor_id: str, now: datetime) -> None:
        # A merge may arrive before anything else about the member: keep it on a bare profile.
        bare = MemberFacts(member_id=member_id)
        if self.profile(member_id) is None:
            self.put_profile(Profile(facts=bare, customer_id="", survivor_id=survivor_id), now)
            return
        self._db.execute(
            update(member_profiles)
            .where(member_profiles.c.member_id == member_id)
            .values(survivor_id=survivor_id, update_time=now)
        )

    def survivor_of(self, member_id: str) -> str | None:
        survivor = self._db.execute(
            select(member_profiles.c.survivor_id).where(member_profiles.c.member_id == member_id)
        ).scalar_one_or_none()
        return survivor or None

    def record_order(self, order: CompletedOrder) -> bool:
        inserted = insert_new(
            self._db,
            completed_orders,
            {
                "order_id": order.order_id,
                "member_id": order.member_id,
                "customer_id": order.customer_id,
                "store_id": order.store_id,
                "total_cents": order.total_cents,
                "complete_time": order.complete_time,
                "cancelled": False,
            },
        )
        if not inserted:
            return False
        c = member_profiles.c
        # Conditional, so orders arriving out of order still leave the latest time in place.
        self._db.execute(
            update(member_profiles)
            .where(c.member_id == order.member_id)
            .where((c.last_order_time.is_(None)) | (c.last_order_time < order.complete_time))
            .values(last_order_time=order.complete_time)
        )
        first = self._db.execute(
            update(member_profiles)
            .where(c.member_id == order.member_id, c.first_purchase_time.is_(None))
            .values(first_purchase_time=order.complete_time)
        )
        return first.rowcount == 1

    def cancel_order(self, order_id: str) -> None:
        self._db.execute(
            update(completed_orders).where(completed_orders.c.order_id == order_id).values(cancelled=True)
        )

    def set_expiries(self, member_id: str, expiries: Iterable[Expiry]) -> None:
        self._db.execute(delete(point_expiries).where(point_expiries.c.member_id == member_id))
        rows = [{"member_id": member_id, "expire_time": e.expire_time, "points": e.points} for e in expiries]
        if rows:
            self._db.execute(point_expiries.insert(), rows)

    def expiries(self, member_id: str) -> list[Expiry]:
        rows = self._db.execute(
            select(point_expiries.c.points, point_expiries.c.expire_time)
            .where(point_expiries.c.member_id == member_id)
            .order_by(point_expiries.c.expire_time)
        )
        return [Expiry(row.points, row.expire_time) for row in rows]


def _profile(row: Any) -> Profile:
    facts = MemberFacts(
        member_id=row.member_id,
        tier=row.tier,
        tags=frozenset(row.tags.split()),
        stage=Stage(row.stage),
        home_store_id=row.home_store_id,
        guide_id=row.guide_id,
        display_name=row.display_name,
        points_balance=row.points_balance,
        time_zone=row.time_zone,
        birthday=row.birthday,
    )
    return Profile(
        facts=facts,
        customer_id=row.customer_id,
        accounts={Channel(k): v for k, v in json.loads(row.accounts).items()},
        survivor_id=row.survivor_id,
        last_order_time=row.last_order_time,
        first_purchase_time=row.first_purchase_time,
    )
