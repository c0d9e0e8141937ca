"""Membership's repositories: members, the ledger and its lots, coupons, on one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import Connection

from quanyu.db import joined_sum, wide_sum
from quanyu.ids import new_id
from services.membership.domain import EntryKind, Guide, Lot, MemberCode, Stage
from services.membership.storage import (
    coupons,
    guides,
    ledger_entries,
    lot_draws,
    member_codes,
    member_customers,
    member_merges,
    member_tags,
    members,
    point_lots,
)


@dataclass
class Member:
    member_id: str
    customer_id: str
    tier: str
    points_balance: int
    home_store_id: str
    guide_id: str
    enrolled_channel: str
    enroll_time: datetime
    stage: Stage
    lifetime_spend_cents: int
    referrer_member_id: str
    last_purchase_time: datetime | None
    stage_times: dict[Stage, datetime | None] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Entry:
    entry_id: str
    member_id: str
    kind: EntryKind
    points: int
    balance_after: int
    source_id: str
    store_id: str
    create_time: datetime
    expire_time: datetime | None
    spend_cents: int
    spend_time: datetime | None
    shortfall_points: int
    seq: int
    owner: str = ""


@dataclass(frozen=True)
class Coupon:
    code: str
    member_id: str
    discount_cents: int
    min_spend_cents: int
    expire_time: datetime
    redeemed_order_id: str | None
    request_fingerprint: str
    redeemed_store_id: str = ""


def _member(row: Any, tags: list[str]) -> Member:
    return Member(
        member_id=row.member_id,
        customer_id=row.customer_id,
        tier=row.tier,
        points_balance=row.points_balance,
        home_store_id=row.home_store_id,
        guide_id=row.guide_id,
        enrolled_channel=row.enrolled_channel,
        enroll_time=row.enroll_time,
        stage=Stage(row.stage),
        lifetime_spend_cents=row.lifetime_spend_cents,
        referrer_member_id=row.referrer_member_id,
        last_purchase_time=row.last_purchase_time,
        stage_times={
            Stage.AWARENESS: row.enroll_time,
            Stage.INTEREST: row.interest_time,
            Stage.PURCHASE: row.purchase_time,
            Stage.LOYALTY: row.loyalty_time,
        },
        tags=tags,
    )


def _entry(row: Any) -> Entry:
    return Entry(
        entry_id=row.entry_id,
        member_id=row.member_id,
        kind=EntryKind(row.kind),
        points=row.points,
        balance_after=row.balance_after,
        source_id=row.source_id,
        store_id=row.store_id,
        create_time=row.create_time,
        expire_time=row.expire_time,
        spend_cents=row.spend_cents,
        spend_time=row.spend_time,
        shortfall_points=row.shortfall_points,
        seq=row.seq,
        owner=row.source_owner,
    )


_STAGE_TIME_COLUMN = {
    Stage.INTEREST: "interest_time",
    Stage.PURCHASE: "purchase_time",
    Stage.LOYALTY: "loyalty_time",
}


# The reads behind every enrolment, lookup and points movement, built once: only their
# parameters change per call, and a statement built per call costs more to construct and key for
# the cache than to run.
_ROOT_OF = select(members.c.root_member_id).where(members.c.member_id == bindparam("member"))
_MEMBER_OF_CUSTOMER = select(member_customers.c.member_id).where(
    member_customers.c.customer_id == bindparam("customer")
)
_MEMBER = select(members).where(members.c.member_id == bindparam("member"))
_MEMBER_LOCKED = _MEMBER.with_for_update()
# Sets the columns named by the parameters it is given (all but the key).
_SAVE_MEMBER = update(members).where(members.c.member_id == bindparam("saved_member"))
_TAGS_OF = (
    select(member_tags.c.tag)
    .where(member_tags.c.member_id == bindparam("member"))
    .order_by(member_tags.c.tag)
)
_GROUP = select(members.c.member_id).where(members.c.root_member_id == bindparam("root"))


class MemberRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection

    # --- finding -------------------------------------------------------------------------------

    def root_of(self, member_id: str) -> str | None:
        root: str | None = self._db.execute(_ROOT_OF, {"member": member_id}).scalar_one_or_none()
        return root

    def root_of_customer(self, customer_id: str) -> str | None:
        member_id = self._db.execute(_MEMBER_OF_CUSTOMER, {"customer": customer_id}).scalar_one_or_none()
        return self.root_of(member_id) if member_id else None

    def get(self, member_id: str, *, lock: bool = False) -> Member | None:
        row = self._db.execute(_MEMBER_LOCKED if lock else _MEMBER, {"member": member_id}).one_or_none()
        if row is None:
            return None
        tags = list(self._db.execute(_TAGS_OF, {"member": member_id}).scalars())
        return _member(row, tags)

    def group(self, root_member_id: str) -> list[str]:
        """The survivor and every member merged into it: whose entries make up its ledger."""
        return list(self._db.execute(_GROUP, {"root": root_member_id}).scalars())

    # --- writing -------------------------------------------------------------------------------

    def create(
        self,
        customer_id: str,
        *,
        tier: str,
        home_store_id: str,
        guide_id: str,
        channel: str,
        referrer_member_id: str,
        now: datetime,
    ) -> str:
        member_id = new_id("mem")
        # The customer's key first: a concurrent enrolment of the same customer fails here.
        self._db.execute(insert(member_customers).values(customer_id=customer_id, member_id=member_id))
        self._db.execute(
            insert(members).values(
                member_id=member_id,
                customer_id=customer_id,
                root_member_id=member_id,
                tier=tier,
                home_store_id=home_store_id,
                guide_id=guide_id,
                enrolled_channel=channel,
                enroll_time=now,
                stage=int(Stage.AWARENESS),
                referrer_member_id=referrer_member_id,
                points_balance=0,
                lifetime_spend_cents=0,
                merged=False,
                update_time=now,
            )
        )
        return member_id

    def save(self, member: Member, now: datetime) -> None:
        """Write back what the use cases change on a member row."""
        values: dict[str, Any] = {
            "customer_id": member.customer_id,
            "tier": member.tier,
            "points_balance": member.points_balance,
            "home_store_id": member.home_store_id,
            "guide_id": member.guide_id,
            "stage": int(member.stage),
            "lifetime_spend_cents": member.lifetime_spend_cents,
            "referrer_member_id": member.referrer_member_id,
            "last_purchase_time": member.last_purchase_time,
            "update_time": now,
        }
        for stage, column in _STAGE_TIME_COLUMN.items():
            values[column] = member.stage_times.get(stage)
        self._db.execute(_SAVE_MEMBER, {**values, "saved_member": member.member_id})

    def add_tags(self, member_id: str, tags: Sequence[str]) -> None:
        have = set(
            self._db.execute(select(member_tags.c.tag).where(member_tags.c.member_id == member_id)).scalars()
        )
        fresh = [{"member_id": member_id, "tag": tag} for tag in tags if tag not in have]
        if fresh:
            self._db.execute(insert(member_tags), fresh)

    def remove_tags(self, member_id: str, tags: Sequence[str]) -> None:
        if tags:
            self._db.execute(
                member_tags.delete().where(member_tags.c.member_id == member_id, member_tags.c.tag.in_(tags))
            )

    def point_customer(self, customer_id: str, member_id: str) -> None:
        """From now on `customer_id` leads to `member_id`."""
        moved = self._db.execute(
            update(member_customers)
            .where(member_customers.c.customer_id == customer_id)
            .values(member_id=member_id)
        )
        if moved.rowcount == 0:
            self._db.execute(insert(member_customers).values(customer_id=customer_id, member_id=member_id))

    def fold_into(self, survivor: Member, merged: Member, now: datetime) -> None:
        """Make every member rooted at `merged` part of `survivor`: lots, coupons and tags move."""
        self._db.execute(
            update(members)
            .where(members.c.root_member_id == merged.member_id)
            .values(root_member_id=survivor.member_id, update_time=now)
        )
        self._db.execute(
            update(members)
            .where(members.c.member_id == merged.member_id)
            .values(merged=True, points_balance=0, update_time=now)
        )
        self._db.execute(
            update(point_lots)
            .where(point_lots.c.root_member_id == merged.member_id)
            .values(root_member_id=survivor.member_id)
        )
        self._db.execute(
            update(coupons)
            .where(coupons.c.member_id == merged.member_id, coupons.c.redeemed_order_id.is_(None))
            .values(member_id=survivor.member_id)
        )
        self.add_tags(survivor.member_id, merged.tags)

    def record_merge(
        self,
        request_id: str,
        survivor_customer_id: str,
        merged_customer_id: str,
        survivor_member_id: str,
        now: datetime,
    ) -> None:
        self._db.execute(
            insert(member_merges).values(
                request_id=request_id,
                survivor_customer_id=survivor_customer_id,
                merged_customer_id=merged_customer_id,
                survivor_member_id=survivor_member_id,
                create_time=now,
            )
        )

    def merge_request(self, request_id: str) -> Any | None:
        return self._db.execute(
            select(member_merges).where(member_merges.c.request_id == request_id)
        ).one_or_none()

    # --- segments ------------------------------------------------------------------------------

    def segment(self, filters: dict[str, Any], after: str, limit: int) -> list[str]:
        query = select(members.c.member_id).where(members.c.merged.is_(False), members.c.member_id > after)
        for column in ("tier", "home_store_id", "guide_id"):
            if filters.get(column):
                query = query.where(members.c[column] == filters[column])
        if filters.get("stage"):
            query = query.where(members.c.stage == int(filters["stage"]))
        if filters.get("tag"):
            query = query.where(
                members.c.member_id.in_(
                    select(member_tags.c.member_id).where(member_tags.c.tag == filters["tag"])
                )
            )
        return list(self._db.execute(query.order_by(members.c.member_id).limit(limit)).scalars())

    def stage_counts(self, home_store_id: str) -> dict[Stage, int]:
        query = (
            select(members.c.stage, func.count()).where(members.c.merged.is_(False)).group_by(members.c.stage)
        )
        if home_store_id:
            query = query.where(members.c.home_store_id == home_store_id)
        return {Stage(stage): int(count) for stage, count in self._db.execute(query)}


# Every points movement looks its key up, appends an entry and opens or draws on lots.
_ENTRY_BY_KEY = select(ledger_entries).where(ledger_entries.c.idempotency_key == bindparam("key"))
_NEW_ENTRY = insert(ledger_entries)
_NEW_LOT = insert(point_lots)
_OPEN_LOTS = select(point_lots.c.lot_id, point_lots.c.expire_time, point_lots.c.remaining).where(
    point_lots.c.root_member_id == bindparam("root"), point_lots.c.remaining > 0
)
_TAKE_FROM_LOT = (
    update(point_lots)
    .where(point_lots.c.lot_id == bindparam("lot"), point_lots.c.remaining >= bindparam("points"))
    .values(remaining=point_lots.c.remaining - bindparam("points"))
)
# And what earning (the tier's rolling spend, the first earn) and reversing a movement read.
_ENTRIES_OF_SOURCE = (
    select(ledger_entries)
    .where(
        ledger_entries.c.source_id == bindparam("source"),
        ledger_entries.c.source_owner == bindparam("owner"),
        ledger_entries.c.kind.in_(bindparam("kinds", expanding=True)),
    )
    .order_by(ledger_entries.c.seq)
)
# Every earn reads the member's rolling spend: summed in halves, so a member whose ledger holds
# spends from before they were bounded can still earn rather than fail on an overflow.
_ROLLING_SPEND = select(*wide_sum(ledger_entries.c.spend_cents)).where(
    ledger_entries.c.member_id.in_(bindparam("members", expanding=True)),
    ledger_entries.c.spend_time >= bindparam("since"),
)
# What a member's earns and referral bonuses credited since a moment (their day, for its cap).
_EARNED_SINCE = select(*wide_sum(ledger_entries.c.points)).where(
    ledger_entries.c.member_id.in_(bindparam("members", expanding=True)),
    ledger_entries.c.kind.in_((EntryKind.EARN.value, EntryKind.REFERRAL_BONUS.value)),
    ledger_entries.c.create_time >= bindparam("since"),
)
_BONUSES_SINCE = (
    select(func.count())
    .select_from(ledger_entries)
    .where(
        ledger_entries.c.member_id.in_(bindparam("members", expanding=True)),
        ledger_entries.c.kind == EntryKind.REFERRAL_BONUS.value,
        ledger_entries.c.create_time >= bindparam("since"),
    )
)
# A purchase is an earn for money spent: an order of nothing buys nothing.
_PURCHASES = (
    select(func.count())
    .select_from(ledger_entries)
    .where(
        ledger_entries.c.member_id.in_(bindparam("members", expanding=True)),
        ledger_entries.c.kind == EntryKind.EARN.value,
        ledger_entries.c.spend_cents > 0,
    )
)
_LOT = select(point_lots).where(point_lots.c.lot_id == bindparam("lot"))
_NEW_DRAWS = insert(lot_draws)
_DRAWS_OF_ENTRY = (
    select(point_lots.c.lot_id, point_lots.c.expire_time, point_lots.c.remaining, lot_draws.c.points)
    .join(point_lots, point_lots.c.lot_id == lot_draws.c.lot_id)
    .where(lot_draws.c.entry_id == bindparam("entry"))
)


class LedgerRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def by_key(self, key: str) -> Entry | None:
        row = self._db.execute(_ENTRY_BY_KEY, {"key": key}).one_or_none()
        return _entry(row) if row else None

    def by_source(self, owner: str, source_id: str, kinds: Sequence[EntryKind]) -> list[Entry]:
        rows = self._db.execute(
            _ENTRIES_OF_SOURCE, {"source": source_id, "owner": owner, "kinds": [k.value for k in kinds]}
        )
        return [_entry(r) for r in rows]

    def append(
        self,
        *,
        member_id: str,
        kind: EntryKind,
        points: int,
        balance_after: int,
        source_id: str,
        store_id: str,
        key: str,
        now: datetime,
        owner: str = "",
        expire_time: datetime | None = None,
        spend_cents: int = 0,
        spend_time: datetime | None = None,
        reverses: str | None = None,
        shortfall: int = 0,
    ) -> Entry:
        entry_id = new_id("led")
        self._db.execute(
            _NEW_ENTRY,
            {
                "entry_id": entry_id,
                "member_id": member_id,
                "kind": kind.value,
                "points": points,
                "balance_after": balance_after,
                "source_id": source_id,
                "source_owner": owner,
                "store_id": store_id,
                "create_time": now,
                "expire_time": expire_time,
                "spend_cents": spend_cents,
                "spend_time": spend_time,
                "reverses_entry_id": reverses,
                "shortfall_points": shortfall,
                "idempotency_key": key,
            },
        )
        entry = self.by_key(key)
        assert entry is not None
        return entry

    def page(self, member_ids: Sequence[str], before_seq: int | None, limit: int) -> list[Entry]:
        query = select(ledger_entries).where(ledger_entries.c.member_id.in_(member_ids))
        if before_seq is not None:
            query = query.where(ledger_entries.c.seq < before_seq)
        rows = self._db.execute(query.order_by(ledger_entries.c.seq.desc()).limit(limit))
        return [_entry(r) for r in rows]

    def rolling_spend(self, member_ids: Sequence[str], since: datetime) -> int:
        return joined_sum(
            *self._db.execute(_ROLLING_SPEND, {"members": list(member_ids), "since": since}).one()
        )

    def earned_since(self, member_ids: Sequence[str], since: datetime) -> int:
        """Points the members' earns and referral bonuses credited from `since` on."""
        row = self._db.execute(_EARNED_SINCE, {"members": list(member_ids), "since": since}).one()
        return joined_sum(*row)

    def bonuses_since(self, member_ids: Sequence[str], since: datetime) -> int:
        """Referral bonuses the members were paid from `since` on."""
        return int(
            self._db.execute(_BONUSES_SINCE, {"members": list(member_ids), "since": since}).scalar_one()
        )

    def purchases(self, member_ids: Sequence[str]) -> int:
        """Earns for money spent: the first one is what pays a referrer."""
        return int(self._db.execute(_PURCHASES, {"members": list(member_ids)}).scalar_one())

    # --- lots ----------------------------------------------------------------------------------

    def open_lot(self, lot_id: str, root_member_id: str, points: int, expire_time: datetime) -> None:
        self._db.execute(
            _NEW_LOT,
            {
                "lot_id": lot_id,
                "root_member_id": root_member_id,
                "expire_time": expire_time,
                "original": points,
                "remaining": points,
            },
        )

    def lots(self, root_member_id: str) -> list[Lot]:
        rows = self._db.execute(_OPEN_LOTS, {"root": root_member_id})
        return [Lot(r.lot_id, r.expire_time, r.remaining) for r in rows]

    def lot(self, lot_id: str) -> Lot | None:
        row = self._db.execute(_LOT, {"lot": lot_id}).one_or_none()
        return Lot(row.lot_id, row.expire_time, row.remaining) if row else None

    def take_from_lot(self, lot_id: str, points: int) -> None:
        taken = self._db.execute(_TAKE_FROM_LOT, {"lot": lot_id, "points": points})
        if taken.rowcount != 1:
            raise RuntimeError(f"lot {lot_id} holds fewer than {points} points")

    def record_draws(self, entry_id: str, draws: Sequence[tuple[str, int]]) -> None:
        if draws:
            rows = [{"entry_id": entry_id, "lot_id": lot, "points": p} for lot, p in draws]
            self._db.execute(_NEW_DRAWS, rows)

    def draws(self, entry_id: str) -> list[tuple[Lot, int]]:
        rows = self._db.execute(_DRAWS_OF_ENTRY, {"entry": entry_id})
        return [(Lot(r.lot_id, r.expire_time, r.remaining), r.points) for r in rows]

    def lapsed_lots(
        self, as_of: datetime, root_member_id: str | None = None, limit: int = 500
    ) -> list[tuple[str, str]]:
        """(lot_id, root member) of lots past their expiry that still hold points."""
        query = select(point_lots.c.lot_id, point_lots.c.root_member_id).where(
            point_lots.c.expire_time <= as_of, point_lots.c.remaining > 0
        )
        if root_member_id is not None:
            query = query.where(point_lots.c.root_member_id == root_member_id)
        return [
            (r.lot_id, r.root_member_id)
            for r in self._db.execute(query.order_by(point_lots.c.expire_time).limit(limit))
        ]


# An order with a coupon takes it, and gives it back when the order is cancelled.
_COUPON = select(coupons).where(coupons.c.code == bindparam("coupon"))
_COUPON_OF_REQUEST = select(coupons).where(coupons.c.request_id == bindparam("request"))
_NEW_COUPON = insert(coupons)
_TAKE_COUPON = (
    update(coupons)
    .where(coupons.c.code == bindparam("coupon"), coupons.c.redeemed_order_id.is_(None))
    .values(
        redeemed_order_id=bindparam("order"),
        redeemed_store_id=bindparam("store"),
        redeemed_time=bindparam("at"),
    )
)
_GIVE_BACK_COUPON = (
    update(coupons)
    .where(coupons.c.code == bindparam("coupon"), coupons.c.redeemed_order_id == bindparam("order"))
    .values(redeemed_order_id=None, redeemed_store_id="", redeemed_time=None)
)


class CouponRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def get(self, code: str) -> Coupon | None:
        row = self._db.execute(_COUPON, {"coupon": code}).one_or_none()
        return self._coupon(row) if row else None

    def by_request(self, request_id: str) -> Coupon | None:
        row = self._db.execute(_COUPON_OF_REQUEST, {"request": request_id}).one_or_none()
        return self._coupon(row) if row else None

    @staticmethod
    def _coupon(row: Any) -> Coupon:
        return Coupon(
            row.code,
            row.member_id,
            row.discount_cents,
            row.min_spend_cents,
            row.expire_time,
            row.redeemed_order_id,
            row.request_fingerprint,
            row.redeemed_store_id,
        )

    def issue(self, coupon: Coupon, request_id: str, now: datetime) -> None:
        self._db.execute(
            _NEW_COUPON,
            {
                "code": coupon.code,
                "member_id": coupon.member_id,
                "discount_cents": coupon.discount_cents,
                "min_spend_cents": coupon.min_spend_cents,
                "expire_time": coupon.expire_time,
                "redeemed_order_id": None,
                "redeemed_store_id": "",
                "redeemed_time": None,
                "request_id": request_id,
                "request_fingerprint": coupon.request_fingerprint,
                "create_time": now,
            },
        )

    def redeem(self, code: str, order_id: str, store_id: str, now: datetime) -> bool:
        """Take an unredeemed coupon for an order; False when another order has it already."""
        taken = self._db.execute(
            _TAKE_COUPON, {"coupon": code, "order": order_id, "store": store_id, "at": now}
        )
        return taken.rowcount == 1

    def release(self, code: str, order_id: str) -> None:
        self._db.execute(_GIVE_BACK_COUPON, {"coupon": code, "order": order_id})


_CODE = select(member_codes).where(member_codes.c.code_hash == bindparam("code"))
_BIND_CODE = (
    update(member_codes)
    .where(member_codes.c.code_hash == bindparam("code"), member_codes.c.store_id == "")
    .values(store_id=bindparam("store"))
)


class MemberCodeRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def add(self, code_hash: str, member_id: str, now: datetime, expire_time: datetime) -> None:
        # A member's lapsed codes go as a new one comes: the table holds a few rows per member.
        self._db.execute(
            member_codes.delete().where(
                member_codes.c.member_id == member_id, member_codes.c.expire_time <= now
            )
        )
        self._db.execute(
            insert(member_codes).values(
                code_hash=code_hash,
                member_id=member_id,
                store_id="",
                create_time=now,
                expire_time=expire_time,
            )
        )

    def get(self, code_hash: str) -> MemberCode | None:
        row = self._db.execute(_CODE, {"code": code_hash}).one_or_none()
        return MemberCode(row.member_id, row.expire_time, row.store_id) if row else None

    def bind(self, code_hash: str, store_id: str) -> MemberCode | None:
        """Tie a code to the store it is first shown at; the code as it stands afterwards (tied to
        whichever store got there first, when two tried at once)."""
        self._db.execute(_BIND_CODE, {"code": code_hash, "store": store_id})
        return self.get(code_hash)


_GUIDE = select(guides).where(guides.c.guide_id == bindparam("guide"))


def _guide(row: Any) -> Guide:
    return Guide(row.guide_id, row.store_id, row.name, row.active)


class GuideRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def get(self, guide_id: str) -> Guide | None:
        row = self._db.execute(_GUIDE, {"guide": guide_id}).one_or_none()
        return _guide(row) if row else None

    def save(self, guide: Guide, now: datetime) -> None:
        values = {"store_id": guide.store_id, "name": guide.name, "active": guide.active, "update_time": now}
        changed = self._db.execute(update(guides).where(guides.c.guide_id == guide.guide_id).values(**values))
        if changed.rowcount == 0:
            self._db.execute(insert(guides).values(guide_id=guide.guide_id, create_time=now, **values))

    def page(self, store_id: str, after: str, limit: int) -> list[Guide]:
        query = select(guides).where(guides.c.guide_id > after)
        if store_id:
            query = query.where(guides.c.store_id == store_id)
        return [_guide(r) for r in self._db.execute(query.order_by(guides.c.guide_id).limit(limit))]
