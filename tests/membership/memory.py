"""Membership's stores kept in memory (services.membership.ports.Stores), for use cases tested
without a database over quanyu.unit_of_work.InMemoryUnitOfWork."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from quanyu.unit_of_work import ConcurrentChange
from services.membership.domain import (
    Coupon,
    Entry,
    EntryKind,
    Guide,
    Lot,
    Member,
    MemberCode,
    MergeRecord,
    Posting,
    Stage,
)
from services.membership.domain.known import ORDERS_EVENT, MemberState
from services.membership.ports import CouponListing, Segment
from tests.trail import MemoryAudit


@dataclass
class _Row:
    member: Member
    root: str
    merged: bool = False


class MemoryMembers:
    def __init__(self, world: MemoryStores) -> None:
        self._world = world
        self.rows: dict[str, _Row] = {}
        self.customers: dict[str, str] = {}
        self.merges: dict[str, MergeRecord] = {}
        self.versions: dict[str, int] = {}

    def root_of(self, member_id: str) -> str | None:
        row = self.rows.get(member_id)
        return row.root if row else None

    def roots_of(self, member_ids: Collection[str]) -> dict[str, str]:
        return {member_id: self.rows[member_id].root for member_id in member_ids if member_id in self.rows}

    def root_of_customer(self, customer_id: str) -> str | None:
        member_id = self.customers.get(customer_id)
        return self.root_of(member_id) if member_id else None

    def get(self, member_id: str, *, lock: bool = False) -> Member | None:
        row = self.rows.get(member_id)
        return copy.deepcopy(row.member) if row else None

    def group(self, root_member_id: str) -> list[str]:
        return [member_id for member_id, row in self.rows.items() if row.root == root_member_id]

    def state_for_orders(self, member_id: str) -> MemberState:
        row = self.rows[member_id]
        self.versions[member_id] = self.versions.get(member_id, 0) + 1
        member = row.member
        return MemberState(
            member_id,
            self.versions[member_id],
            member.customer_id,
            row.root,
            member.home_store_id,
            member.guide_id,
        )

    def add(self, member: Member) -> None:
        if member.customer_id in self.customers:
            raise AssertionError("one member per customer")
        self.customers[member.customer_id] = member.member_id
        self.rows[member.member_id] = _Row(copy.deepcopy(member), member.member_id)

    def save(self, member: Member, now: datetime) -> None:
        tags = self.rows[member.member_id].member.tags
        self.rows[member.member_id].member = replace(copy.deepcopy(member), tags=tags)

    def add_tags(self, member_id: str, tags: Sequence[str]) -> None:
        member = self.rows[member_id].member
        member.tags = sorted(set(member.tags) | set(tags))

    def remove_tags(self, member_id: str, tags: Sequence[str]) -> None:
        member = self.rows[member_id].member
        member.tags = sorted(set(member.tags) - set(tags))

    def point_customer(self, customer_id: str, member_id: str) -> None:
        self.customers[customer_id] = member_id

    def fold_into(self, survivor: Member, merged: Member, now: datetime) -> None:
        for row in self.rows.values():
            if row.root == merged.member_id:
                row.root = survivor.member_id
        self.rows[merged.member_id].merged = True
        self.rows[merged.member_id].member.points_balance = 0
        for lot_id, root in list(self._world.ledger.lot_roots.items()):
            if root == merged.member_id:
                self._world.ledger.lot_roots[lot_id] = survivor.member_id
        for code, coupon in list(self._world.coupons.by_code.items()):
            if coupon.member_id == merged.member_id and coupon.redeemed_order_id is None:
                self._world.coupons.by_code[code] = replace(coupon, member_id=survivor.member_id)
        self.add_tags(survivor.member_id, merged.tags)

    def record_merge(self, merge: MergeRecord, now: datetime) -> None:
        self.merges[merge.request_id] = merge

    def merge_request(self, request_id: str) -> MergeRecord | None:
        return self.merges.get(request_id)

    def segment(self, filters: Segment, after: str, limit: int) -> list[str]:
        def matches(row: _Row) -> bool:
            m = row.member
            return (
                not row.merged
                and all(
                    not filters.get(name) or getattr(m, name) == filters[name]
                    for name in ("tier", "home_store_id", "guide_id")
                )
                and (not filters.get("stage") or int(m.stage) == int(filters["stage"]))
                and (not filters.get("tag") or filters["tag"] in m.tags)
            )

        return sorted(i for i, row in self.rows.items() if i > after and matches(row))[:limit]

    def stage_counts(self, home_store_id: str) -> dict[Stage, int]:
        counts: dict[Stage, int] = {}
        for row in self.rows.values():
            if not row.merged and (not home_store_id or row.member.home_store_id == home_store_id):
                counts[row.member.stage] = counts.get(row.member.stage, 0) + 1
        return counts


class MemoryLedger:
    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.keys: dict[str, Entry] = {}
        self.spend: dict[str, tuple[int, datetime | None]] = {}
        self.lots: dict[str, Lot] = {}
        self.lot_roots: dict[str, str] = {}
        self.paid_from: dict[str, list[str]] = {}
        self._ids = itertools.count(1)

    def by_key(self, key: str) -> Entry | None:
        return self.keys.get(key)

    def by_source(self, owner: str, source_id: str, kinds: Sequence[EntryKind]) -> list[Entry]:
        return [e for e in self.entries if e.owner == owner and e.source_id == source_id and e.kind in kinds]

    def append(self, posting: Posting) -> Entry:
        for lot_id, points in posting.takes:
            lot = self.lots[lot_id]
            if lot.remaining < points:
                raise ConcurrentChange(f"lot {lot_id}")
            self.lots[lot_id] = replace(lot, remaining=lot.remaining - points)
        seq = next(self._ids)
        entry = Entry(
            entry_id=f"led_{seq}",
            member_id=posting.member_id,
            kind=posting.kind,
            points=posting.points,
            balance_after=posting.balance_after,
            source_id=posting.source_id,
            store_id=posting.store_id,
            create_time=posting.create_time,
            expire_time=posting.expire_time,
            spend_cents=posting.spend_cents,
            spend_time=posting.spend_time,
            shortfall_points=posting.shortfall,
            seq=seq,
            owner=posting.owner,
        )
        self.entries.append(entry)
        self.keys[posting.key] = entry
        self.paid_from[entry.entry_id] = [lot_id for lot_id, _ in posting.draws]
        if posting.lot_expire_time is not None:
            self.lots[entry.entry_id] = Lot(entry.entry_id, posting.lot_expire_time, posting.points)
            self.lot_roots[entry.entry_id] = posting.root_member_id
        return entry

    def page(self, member_ids: Sequence[str], before_seq: int | None, limit: int) -> list[Entry]:
        found = [
            e
            for e in self.entries
            if e.member_id in member_ids and (before_seq is None or e.seq < before_seq)
        ]
        return sorted(found, key=lambda e: -e.seq)[:limit]

    def rolling_spend(self, member_ids: Sequence[str], since: datetime) -> int:
        return sum(
            e.spend_cents
            for e in self.entries
            if e.member_id in member_ids and e.spend_time and e.spend_time >= since
        )

    def earned_since(self, member_ids: Sequence[str], since: datetime) -> int:
        return sum(
            e.points
            for e in self.entries
            if e.member_id in member_ids
            and e.kind in (EntryKind.EARN, EntryKind.REFERRAL_BONUS)
            and e.create_time >= since
        )

    def bonuses_since(self, member_ids: Sequence[str], since: datetime) -> int:
        return sum(
            1
            for e in self.entries
            if e.member_id in member_ids and e.kind is EntryKind.REFERRAL_BONUS and e.create_time >= since
        )

    def purchases(self, member_ids: Sequence[str]) -> int:
        return sum(
            1
            for e in self.entries
            if e.member_id in member_ids and e.kind is EntryKind.EARN and e.spend_cents > 0
        )

    def open_lots(self, root_member_id: str) -> list[Lot]:
        return [
            lot
            for lot in self.lots.values()
            if self.lot_roots[lot.lot_id] == root_member_id and lot.remaining > 0
        ]

    def lapsed_lots(self, root_member_id: str, as_of: datetime) -> list[Lot]:
        return [lot for lot in self.open_lots(root_member_id) if lot.expire_time <= as_of]

    def lapsed_roots(self, as_of: datetime, limit: int) -> list[str]:
        lapsed = sorted(
            (lot.expire_time, self.lot_roots[lot.lot_id])
            for lot in self.lots.values()
            if lot.remaining > 0 and lot.expire_time <= as_of
        )
        return list(dict.fromkeys(root for _, root in lapsed[:limit]))

    def lot(self, lot_id: str) -> Lot | None:
        return self.lots.get(lot_id)

    def draws(self, entry_id: str) -> list[Lot]:
        return [self.lots[lot_id] for lot_id in self.paid_from.get(entry_id, [])]


class MemoryCoupons:
    def __init__(self) -> None:
        self.by_code: dict[str, Coupon] = {}
        self.requests: dict[str, str] = {}

    def get(self, code: str) -> Coupon | None:
        return self.by_code.get(code)

    def by_request(self, request_id: str) -> Coupon | None:
        code = self.requests.get(request_id)
        return self.by_code[code] if code else None

    def by_requests(self, request_ids: Collection[str]) -> dict[str, Coupon]:
        return {r: self.by_code[self.requests[r]] for r in request_ids if r in self.requests}

    def issue(self, coupon: Coupon, request_id: str, now: datetime) -> None:
        self.by_code[coupon.code] = replace(coupon, create_time=now)
        self.requests[request_id] = coupon.code

    def issue_many(self, issued: Sequence[tuple[Coupon, str]], now: datetime) -> None:
        for coupon, request_id in issued:
            self.issue(coupon, request_id, now)

    def page(self, listing: CouponListing) -> list[Coupon]:
        active_at, before = listing.active_at, listing.before

        def key(coupon: Coupon) -> tuple[datetime, str]:
            assert coupon.create_time is not None
            return coupon.create_time, coupon.code

        found = [
            c
            for c in self.by_code.values()
            if c.member_id in listing.member_ids
            and (active_at is None or c.active(active_at))
            and (before is None or key(c) < before)
        ]
        return sorted(found, key=key, reverse=True)[: listing.limit]

    def redeem(self, code: str, order_id: str, store_id: str, now: datetime) -> bool:
        coupon = self.by_code[code]
        if coupon.redeemed_order_id is not None:
            return False
        self.by_code[code] = replace(coupon, redeemed_order_id=order_id, redeemed_store_id=store_id)
        return True

    def release(self, code: str, order_id: str) -> None:
        coupon = self.by_code[code]
        if coupon.redeemed_order_id == order_id:
            self.by_code[code] = replace(coupon, redeemed_order_id=None, redeemed_store_id="")


class MemoryCodes:
    def __init__(self) -> None:
        self.codes: dict[str, MemberCode] = {}

    def add(self, code_hash: str, member_id: str, now: datetime, expire_time: datetime) -> None:
        self.codes[code_hash] = MemberCode(member_id, expire_time, "")

    def get(self, code_hash: str) -> MemberCode | None:
        return self.codes.get(code_hash)

    def bind(self, code_hash: str, store_id: str) -> MemberCode | None:
        code = self.codes[code_hash]
        if not code.store_id:
            self.codes[code_hash] = replace(code, store_id=store_id)
        return self.codes[code_hash]


class MemoryGuides:
    def __init__(self) -> None:
        self.guides: dict[str, Guide] = {}

    def get(self, guide_id: str) -> Guide | None:
        return self.guides.get(guide_id)

    def save(self, guide: Guide, now: datetime) -> None:
        self.guides[guide.guide_id] = guide

    def page(self, store_id: str, after: str, limit: int) -> list[Guide]:
        found = [
            g
            for i, g in sorted(self.guides.items())
            if i > after and (not store_id or g.store_id == store_id)
        ]
        return found[:limit]


class MemoryOutbox:
    """The effects recorded, as (kind, payload) in order; what orders is told of members apart."""

    def __init__(self) -> None:
        self.effects: list[tuple[str, dict[str, Any]]] = []
        self.told_orders: list[dict[str, Any]] = []

    def add(self, kind: str, payload: Mapping[str, Any], now: datetime) -> None:
        if kind == ORDERS_EVENT:
            self.told_orders.append(dict(payload))
        else:
            self.effects.append((kind, dict(payload)))


@dataclass
class MemoryStores:
    members: MemoryMembers = field(init=False)
    ledger: MemoryLedger = field(default_factory=MemoryLedger)
    coupons: MemoryCoupons = field(default_factory=MemoryCoupons)
    codes: MemoryCodes = field(default_factory=MemoryCodes)
    guides: MemoryGuides = field(default_factory=MemoryGuides)
    outbox: MemoryOutbox = field(default_factory=MemoryOutbox)
    audit: MemoryAudit = field(default_factory=MemoryAudit)

    def __post_init__(self) -> None:
        self.members = MemoryMembers(self)


class AllCustomers:
    """Identity for tests whose callers are the platform's own: every customer exists."""

    def exists(self, customer_id: str) -> bool:
        return True

    def holds(self, customer_id: str, channel: str) -> bool:
        return True
