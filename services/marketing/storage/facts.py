"""What marketing keeps from other services' events: which events it has acted on, each member's
profile and merges, their points' expiries, and completed orders."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlalchemy.engine import Connection

from services.marketing.domain import Channel, Expiry, MemberFacts, Stage
from services.marketing.ports import CompletedOrder, Profile
from services.marketing.storage.sql import insert_new, insert_new_rows
from services.marketing.storage.tables import (
    completed_orders,
    customer_accounts,
    member_profiles,
    point_expiries,
    processed_events,
)


class FactRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection
        # Each member's row as this transaction last read or wrote it (None: known to have none),
        # and each customer's linked accounts: a call's events read a member's profile several
        # times (to apply each event, then for every campaign it triggers), and the repository
        # is the only writer of both tables, so what it wrote is what a read would find. The
        # repository lives as long as its transaction, under the member's turn.
        self._rows: dict[str, Profile | None] = {}
        self._accounts: dict[str, dict[Channel, tuple[str, str]]] = {}

    def claim_events(self, kinds: Mapping[str, str], now: datetime) -> set[str]:
        claimed: set[str] = set()
        rows = [{"event_id": i, "kind": k, "process_time": now} for i, k in sorted(kinds.items())]
        # Three parameters a row: well within either database's limit a statement.
        for start in range(0, len(rows), 1000):
            claimed.update(insert_new_rows(self._db, processed_events, rows[start : start + 1000]))
        return claimed

    def take_turns(self, members: Iterable[str], customers: Iterable[str], coupons: Iterable[str]) -> None:
        # SQLite lets one writer in at a time, which already gives every key its turn.
        if self._db.dialect.name != "postgresql":
            return
        keys = sorted(
            {_turn_key("member", m) for m in members if m}
            | {_turn_key("customer", c) for c in customers if c}
            | {_turn_key("coupon", c) for c in coupons if c}
        )
        if not keys:
            return
        # Advisory locks, as a member's first event has no row yet to lock; taken in key order,
        # the one order every call takes them in, so two calls sharing keys queue on the first.
        self._db.execute(
            text(
                "SELECT pg_advisory_xact_lock(k)"
                " FROM (SELECT unnest(CAST(:keys AS bigint[])) AS k ORDER BY k) AS turns"
            ),
            {"keys": keys},
        ).all()

    def put_profile(self, profile: Profile, now: datetime) -> None:
        f = profile.facts
        # An event that leaves the profile as it is (an order, most often) writes nothing.
        if self._rows.get(f.member_id) == profile:
            return
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
        # A member whose row this transaction has seen is updated without trying an insert first.
        if self._rows.get(f.member_id) is not None or not insert_new(
            self._db, member_profiles, {"member_id": f.member_id, "create_time": now, **values}
        ):
            self._db.execute(
                update(member_profiles).where(member_profiles.c.member_id == f.member_id).values(**values)
            )
        self._rows[f.member_id] = profile

    def profile(self, member_id: str) -> Profile | None:
        found = self._stored(member_id)
        if found is None:
            return None
        return _with_accounts(found, self._linked(found.customer_id))

    def profiles_of(self, member_ids: Iterable[str]) -> dict[str, Profile]:
        members = list(member_ids)
        wanted = sorted({m for m in members if m not in self._rows})
        m = member_profiles.c
        # Bound parameters per IN list kept well under SQLite's limit.
        for start in range(0, len(wanted), 5000):
            chunk = wanted[start : start + 5000]
            self._rows.update(dict.fromkeys(chunk))
            for row in self._db.execute(select(member_profiles).where(m.member_id.in_(chunk))):
                self._rows[row.member_id] = _profile(row)
        customers = sorted(
            {p.customer_id for i in members if (p := self._rows.get(i)) is not None and p.customer_id}
            - self._accounts.keys()
        )
        a = customer_accounts.c
        for start in range(0, len(customers), 5000):
            chunk = customers[start : start + 5000]
            for customer_id in chunk:
                self._accounts[customer_id] = {}
            rows = self._db.execute(
                select(a.customer_id, a.channel, a.account, a.display_name).where(a.customer_id.in_(chunk))
            )
            for row in rows:
                self._accounts[row.customer_id][Channel(row.channel)] = (row.account, row.display_name)
        return {i: p for i in members if (p := self.profile(i)) is not None}

    def _stored(self, member_id: str) -> Profile | None:
        """The member's row as kept, without the accounts identity linked to their customer."""
        if member_id not in self._rows:
            row = self._db.execute(
                select(member_profiles).where(member_profiles.c.member_id == member_id)
            ).first()
            self._rows[member_id] = None if row is None else _profile(row)
        return self._rows[member_id]

    def link_account(
        self, customer_id: str, channel: Channel, account: str, display_name: str, now: datetime
    ) -> None:
        values = {"account": account, "display_name": display_name, "update_time": now}
        key = {"customer_id": customer_id, "channel": channel.value}
        if not insert_new(self._db, customer_accounts, {**key, **values, "create_time": now}):
            c = customer_accounts.c
            self._db.execute(
                update(customer_accounts)
                .where(c.customer_id == customer_id, c.channel == channel.value)
                .values(**values)
            )
        self._accounts.pop(customer_id, None)

    def accounts_of(self, customer_id: str) -> dict[Channel, str]:
        return {channel: account for channel, (account, _) in self._linked(customer_id).items()}

    def _linked(self, customer_id: str) -> dict[Channel, tuple[str, str]]:
        if not customer_id:
            return {}
        if customer_id not in self._accounts:
            c = customer_accounts.c
            rows = self._db.execute(
                select(c.channel, c.account, c.display_name).where(c.customer_id == customer_id)
            )
            self._accounts[customer_id] = {
                Channel(row.channel): (row.account, row.display_name) for row in rows
            }
        return self._accounts[customer_id]

    def profiles_after(self, cursor: str, limit: int) -> list[Profile]:
        c = member_profiles.c
        rows = self._db.execute(
            select(member_profiles)
            .where(c.member_id > cursor, c.survivor_id == "")
            .order_by(c.member_id)
            .limit(limit)
        )
        found = [_profile(row) for row in rows]
        # The page's linked accounts in one query rather than one per member.
        customers = sorted({p.customer_id for p in found if p.customer_id})
        linked: dict[str, dict[Channel, tuple[str, str]]] = {}
        a = customer_accounts.c
        for start in range(0, len(customers), 5000):
            accounts = self._db.execute(
                select(a.customer_id, a.channel, a.account, a.display_name).where(
                    a.customer_id.in_(customers[start : start + 5000])
                )
            )
            for account in accounts:
                linked.setdefault(account.customer_id, {})[Channel(account.channel)] = (
                    account.account,
                    account.display_name,
                )
        return [_with_accounts(p, linked.get(p.customer_id, {})) for p in found]

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
        if (found := self._stored(member_id)) is None:
            self.put_profile(Profile(facts=bare, customer_id="", survivor_id=survivor_id), now)
            return
        self._db.execute(
            update(member_profiles)
            .where(member_profiles.c.member_id == member_id)
            .values(survivor_id=survivor_id, update_time=now)
        )
        self._rows[member_id] = dataclasses.replace(found, survivor_id=survivor_id)

    def survivor_of(self, member_id: str) -> str | None:
        found = self._stored(member_id)
        return (found.survivor_id or None) if found else None

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
        kept = self._rows.get(order.member_id)
        if kept is not None:
            # The row as this transaction holds it says what moves: one statement, or none.
            last, first_time = kept.last_order_time, kept.first_purchase_time
            moved = dataclasses.replace(
                kept,
                # Orders arriving out of order still leave the latest time in place.
                last_order_time=order.complete_time if last is None or last < order.complete_time else last,
                first_purchase_time=first_time or order.complete_time,
            )
            if moved != kept:
                self._db.execute(
                    update(member_profiles)
                    .where(c.member_id == order.member_id)
                    .values(
                        last_order_time=moved.last_order_time, first_purchase_time=moved.first_purchase_time
                    )
                )
                self._rows[order.member_id] = moved
            return first_time is None
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
        # Unknown to this transaction till now: read afresh when next asked.
        self._rows.pop(order.member_id, None)
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


def _with_accounts(profile: Profile, linked: dict[Channel, tuple[str, str]]) -> Profile:
    """The member's profile with the accounts identity linked to their customer, which win over
    those an enrolment carried, and the customer's name when membership gave none."""
    if not linked:
        return profile
    names = [name for _, name in sorted(linked.values()) if name]
    facts = profile.facts
    if not facts.display_name and names:
        facts = dataclasses.replace(facts, display_name=names[0])
    accounts = {**profile.accounts, **{ch: account for ch, (account, _) in linked.items()}}
    return dataclasses.replace(profile, facts=facts, accounts=accounts)


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


def _turn_key(kind: str, key: str) -> int:
    """The advisory lock of one member, customer or coupon: named after marketing's tables, as
    services may share one PostgreSQL database (a schema each) and advisory locks span it."""
    digest = hashlib.sha256(f"marketing.{kind}:{key}".encode()).digest()
    return int.from_bytes(digest[:7], "big")
