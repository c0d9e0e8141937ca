"""The points ledger and its lots, and coupons, loaded and saved as domain objects."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from quanyu.db import joined_sum, wide_sum
from quanyu.ids import new_id
from quanyu.unit_of_work import ConcurrentChange
from services.membership.domain import Coupon, Entry, EntryKind, Lot, Posting
from services.membership.ports import CouponListing
from services.membership.storage.tables import coupons, ledger_entries, lot_draws, point_lots

# An entry's fields that are columns of its row by the same name.
_ENTRY_COLUMNS = tuple(f.name for f in fields(Entry) if f.name not in {"kind", "owner"})


def _entry(row: Any) -> Entry:
    return Entry(
        **{name: getattr(row, name) for name in _ENTRY_COLUMNS},
        kind=EntryKind(row.kind),
        owner=row.source_owner,
    )


def _lot(row: Any) -> Lot:
    return Lot(row.lot_id, row.expire_time, row.remaining)


# Every points movement looks its key up, appends an entry and opens or draws on lots.
_ENTRY_BY_KEY = select(ledger_entries).where(ledger_entries.c.idempotency_key == bindparam("key"))
_NEW_ENTRY = insert(ledger_entries)
_NEW_LOT = insert(point_lots)
_LOT_COLUMNS = (point_lots.c.lot_id, point_lots.c.expire_time, point_lots.c.remaining)
_OPEN_LOTS = select(*_LOT_COLUMNS).where(
    point_lots.c.root_member_id == bindparam("root"), point_lots.c.remaining > 0
)
_LAPSED_LOTS = _OPEN_LOTS.where(point_lots.c.expire_time <= bindparam("as_of"))
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
_OF_MEMBERS = ledger_entries.c.member_id.in_(bindparam("members", expanding=True))
_SINCE = ledger_entries.c.create_time >= bindparam("since")
# Every earn reads the member's rolling spend: summed in halves, so a member whose ledger holds
# spends from before they were bounded can still earn rather than fail on an overflow.
_ROLLING_SPEND = select(*wide_sum(ledger_entries.c.spend_cents)).where(
    _OF_MEMBERS, ledger_entries.c.spend_time >= bindparam("since")
)
# What a member's earns and referral bonuses credited since a moment (their day, for its cap).
_EARNED_SINCE = select(*wide_sum(ledger_entries.c.points)).where(
    _OF_MEMBERS,
    ledger_entries.c.kind.in_((EntryKind.EARN.value, EntryKind.REFERRAL_BONUS.value)),
    _SINCE,
)
_COUNT = select(func.count()).select_from(ledger_entries)
_BONUSES_SINCE = _COUNT.where(_OF_MEMBERS, ledger_entries.c.kind == EntryKind.REFERRAL_BONUS.value, _SINCE)
# A purchase is an earn for money spent: an order of nothing buys nothing.
_PURCHASES = _COUNT.where(
    _OF_MEMBERS, ledger_entries.c.kind == EntryKind.EARN.value, ledger_entries.c.spend_cents > 0
)
_LOT = select(*_LOT_COLUMNS).where(point_lots.c.lot_id == bindparam("lot"))
_NEW_DRAWS = insert(lot_draws)
_DRAWN_LOTS = (
    select(*_LOT_COLUMNS)
    .select_from(lot_draws.join(point_lots, point_lots.c.lot_id == lot_draws.c.lot_id))
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

    def append(self, posting: Posting) -> Entry:
        for lot_id, points in posting.takes:
            if self._db.execute(_TAKE_FROM_LOT, {"lot": lot_id, "points": points}).rowcount != 1:
                raise ConcurrentChange(f"lot {lot_id}")
        entry_id = new_id("led")
        self._db.execute(
            _NEW_ENTRY,
            {
                "entry_id": entry_id,
                "member_id": posting.member_id,
                "kind": posting.kind.value,
                "points": posting.points,
                "balance_after": posting.balance_after,
                "source_id": posting.source_id,
                "source_owner": posting.owner,
                "store_id": posting.store_id,
                "create_time": posting.create_time,
                "expire_time": posting.expire_time,
                "spend_cents": posting.spend_cents,
                "spend_time": posting.spend_time,
                "reverses_entry_id": posting.reverses,
                "shortfall_points": posting.shortfall,
                "idempotency_key": posting.key,
            },
        )
        if posting.draws:
            self._db.execute(
                _NEW_DRAWS, [{"entry_id": entry_id, "lot_id": lot, "points": p} for lot, p in posting.draws]
            )
        if posting.lot_expire_time is not None:
            self._db.execute(
                _NEW_LOT,
                {
                    "lot_id": entry_id,
                    "root_member_id": posting.root_member_id,
                    "expire_time": posting.lot_expire_time,
                    "original": posting.points,
                    "remaining": posting.points,
                },
            )
        entry = self.by_key(posting.key)
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
        row = self._db.execute(_EARNED_SINCE, {"members": list(member_ids), "since": since}).one()
        return joined_sum(*row)

    def bonuses_since(self, member_ids: Sequence[str], since: datetime) -> int:
        return int(
            self._db.execute(_BONUSES_SINCE, {"members": list(member_ids), "since": since}).scalar_one()
        )

    def purchases(self, member_ids: Sequence[str]) -> int:
        return int(self._db.execute(_PURCHASES, {"members": list(member_ids)}).scalar_one())

    # --- lots ----------------------------------------------------------------------------------

    def open_lots(self, root_member_id: str) -> list[Lot]:
        return [_lot(r) for r in self._db.execute(_OPEN_LOTS, {"root": root_member_id})]

    def lapsed_lots(self, root_member_id: str, as_of: datetime) -> list[Lot]:
        return [_lot(r) for r in self._db.execute(_LAPSED_LOTS, {"root": root_member_id, "as_of": as_of})]

    def lapsed_roots(self, as_of: datetime, limit: int) -> list[str]:
        query = (
            select(point_lots.c.root_member_id)
            .where(point_lots.c.expire_time <= as_of, point_lots.c.remaining > 0)
            .order_by(point_lots.c.expire_time)
            .limit(limit)
        )
        return list(dict.fromkeys(self._db.execute(query).scalars()))

    def lot(self, lot_id: str) -> Lot | None:
        row = self._db.execute(_LOT, {"lot": lot_id}).one_or_none()
        return _lot(row) if row else None

    def draws(self, entry_id: str) -> list[Lot]:
        return [_lot(r) for r in self._db.execute(_DRAWN_LOTS, {"entry": entry_id})]


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


_COUPON_COLUMNS = tuple(f.name for f in fields(Coupon))


def _coupon(row: Any) -> Coupon:
    return Coupon(**{name: getattr(row, name) for name in _COUPON_COLUMNS})


class CouponRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def get(self, code: str) -> Coupon | None:
        row = self._db.execute(_COUPON, {"coupon": code}).one_or_none()
        return _coupon(row) if row else None

    def by_request(self, request_id: str) -> Coupon | None:
        row = self._db.execute(_COUPON_OF_REQUEST, {"request": request_id}).one_or_none()
        return _coupon(row) if row else None

    def by_requests(self, request_ids: Collection[str]) -> dict[str, Coupon]:
        found = self._db.execute(select(coupons).where(coupons.c.request_id.in_(request_ids)))
        return {row.request_id: _coupon(row) for row in found}

    def issue(self, coupon: Coupon, request_id: str, now: datetime) -> None:
        self.issue_many([(coupon, request_id)], now)

    def issue_many(self, issued: Sequence[tuple[Coupon, str]], now: datetime) -> None:
        self._db.execute(
            _NEW_COUPON,
            [
                # Field by field, not dataclasses.asdict: that deep-copies every value, and a batch
                # of 500 coupons spent most of its time there.
                {
                    **{name: getattr(coupon, name) for name in _COUPON_COLUMNS},
                    "redeemed_time": None,
                    "request_id": request_id,
                    "create_time": now,
                }
                for coupon, request_id in issued
            ],
        )

    def redeem(self, code: str, order_id: str, store_id: str, now: datetime) -> bool:
        taken = self._db.execute(
            _TAKE_COUPON, {"coupon": code, "order": order_id, "store": store_id, "at": now}
        )
        return taken.rowcount == 1

    def release(self, code: str, order_id: str) -> None:
        self._db.execute(_GIVE_BACK_COUPON, {"coupon": code, "order": order_id})

    def page(self, listing: CouponListing) -> list[Coupon]:
        active_at, before = listing.active_at, listing.before
        query = select(coupons).where(coupons.c.member_id.in_(listing.member_ids))
        if active_at is not None:
            query = query.where(coupons.c.redeemed_order_id.is_(None), coupons.c.expire_time > active_at)
        if before is not None:
            time, code = before
            query = query.where(
                or_(
                    coupons.c.create_time < time,
                    and_(coupons.c.create_time == time, coupons.c.code < code),
                )
            )
        ordered = query.order_by(coupons.c.create_time.desc(), coupons.c.code.desc()).limit(listing.limit)
        return [_coupon(r) for r in self._db.execute(ordered)]
