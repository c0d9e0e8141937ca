"""What membership's use cases need from the world: its repositories (`Stores`, built on one
transaction by storage/ or kept in memory by tests) and identity (`Customers`)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from quanyu.audit_record import AuditTrail
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
from services.membership.domain.known import MemberState

# ListMembers' filters: tier, tag, stage (its number), home_store_id, guide_id; empty = any.
Segment = Mapping[str, str | int]


@dataclass(frozen=True)
class CouponListing:
    """Which coupons one page of ListCoupons reads: the members' (a member and those merged into
    them), issued before `before` (time, code) when given, and with `active_at` only those
    unredeemed and unexpired then."""

    member_ids: Sequence[str]
    active_at: datetime | None
    before: tuple[datetime, str] | None
    limit: int


class MemberStore(Protocol):
    def root_of(self, member_id: str) -> str | None:
        """The member `member_id` is part of now (itself, unless merged into another)."""
        ...

    def roots_of(self, member_ids: Collection[str]) -> dict[str, str]:
        """root_of for many members in one read; those that do not exist are left out."""
        ...

    def root_of_customer(self, customer_id: str) -> str | None: ...

    def get(self, member_id: str, *, lock: bool = False) -> Member | None:
        """The member with its tags; `lock` holds its row until the transaction ends."""
        ...

    def group(self, root_member_id: str) -> list[str]:
        """The survivor and every member merged into it: whose entries make up its ledger."""
        ...

    def add(self, member: Member) -> None:
        """A new member, and its customer leading to it (one member per customer)."""
        ...

    def state_for_orders(self, member_id: str) -> MemberState:
        """The member as orders is told of them (as saved), under their next version, which
        this takes (holding the member until the transaction ends)."""
        ...

    def save(self, member: Member, now: datetime) -> None: ...

    def add_tags(self, member_id: str, tags: Sequence[str]) -> None: ...

    def remove_tags(self, member_id: str, tags: Sequence[str]) -> None: ...

    def point_customer(self, customer_id: str, member_id: str) -> None:
        """From now on `customer_id` leads to `member_id`."""
        ...

    def fold_into(self, survivor: Member, merged: Member, now: datetime) -> None:
        """Make every member rooted at `merged` part of `survivor`: lots, coupons and tags move."""
        ...

    def record_merge(self, merge: MergeRecord, now: datetime) -> None: ...

    def merge_request(self, request_id: str) -> MergeRecord | None: ...

    def segment(self, filters: Segment, after: str, limit: int) -> list[str]:
        """Ids of unmerged members matching `filters`, in id order after `after`."""
        ...

    def stage_counts(self, home_store_id: str) -> dict[Stage, int]: ...


class LedgerStore(Protocol):
    def by_key(self, key: str) -> Entry | None: ...

    def by_source(self, owner: str, source_id: str, kinds: Sequence[EntryKind]) -> list[Entry]: ...

    def append(self, posting: Posting) -> Entry:
        """Record a movement: its entry, the points it takes from lots (ConcurrentChange when a
        lot holds fewer than it read), the lots it was drawn from, the lot it opens."""
        ...

    def page(self, member_ids: Sequence[str], before_seq: int | None, limit: int) -> list[Entry]:
        """Newest first."""
        ...

    def rolling_spend(self, member_ids: Sequence[str], since: datetime) -> int: ...

    def earned_since(self, member_ids: Sequence[str], since: datetime) -> int:
        """Points the members' earns and referral bonuses credited from `since` on."""
        ...

    def bonuses_since(self, member_ids: Sequence[str], since: datetime) -> int: ...

    def purchases(self, member_ids: Sequence[str]) -> int:
        """Earns for money spent: the first one is what pays a referrer."""
        ...

    def open_lots(self, root_member_id: str) -> list[Lot]:
        """The lots still holding points, lapsed or not."""
        ...

    def lapsed_lots(self, root_member_id: str, as_of: datetime) -> list[Lot]: ...

    def lapsed_roots(self, as_of: datetime, limit: int) -> list[str]:
        """Members holding lapsed points, soonest lapsed first."""
        ...

    def lot(self, lot_id: str) -> Lot | None: ...

    def draws(self, entry_id: str) -> list[Lot]:
        """The lots that paid for a redemption."""
        ...


class CouponStore(Protocol):
    def get(self, code: str) -> Coupon | None: ...

    def by_request(self, request_id: str) -> Coupon | None: ...

    def by_requests(self, request_ids: Collection[str]) -> dict[str, Coupon]:
        """by_request for many request ids in one read; those never issued are left out."""
        ...

    def issue(self, coupon: Coupon, request_id: str, now: datetime) -> None: ...

    def issue_many(self, issued: Sequence[tuple[Coupon, str]], now: datetime) -> None:
        """Several coupons, each with its request id, in one write."""
        ...

    def redeem(self, code: str, order_id: str, store_id: str, now: datetime) -> bool:
        """Take an unredeemed coupon for an order; False when another order has it already."""
        ...

    def release(self, code: str, order_id: str) -> None: ...

    def page(self, listing: CouponListing) -> list[Coupon]:
        """The listing's coupons, newest first (then by code, descending)."""
        ...


class MemberCodeStore(Protocol):
    def add(self, code_hash: str, member_id: str, now: datetime, expire_time: datetime) -> None: ...

    def get(self, code_hash: str) -> MemberCode | None: ...

    def bind(self, code_hash: str, store_id: str) -> MemberCode | None:
        """Tie a code to the store it is first shown at; the code as it stands afterwards."""
        ...


class GuideStore(Protocol):
    def get(self, guide_id: str) -> Guide | None: ...

    def save(self, guide: Guide, now: datetime) -> None: ...

    def page(self, store_id: str, after: str, limit: int) -> list[Guide]: ...


class Outbox(Protocol):
    def add(self, kind: str, payload: Mapping[str, Any], now: datetime) -> None:
        """Record an effect, delivered once the transaction commits."""
        ...


class Stores(Protocol):
    """Membership's repositories on one transaction."""

    @property
    def members(self) -> MemberStore: ...

    @property
    def ledger(self) -> LedgerStore: ...

    @property
    def coupons(self) -> CouponStore: ...

    @property
    def codes(self) -> MemberCodeStore: ...

    @property
    def guides(self) -> GuideStore: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def audit(self) -> AuditTrail: ...


class Customers(Protocol):
    """What identity says of customers (services.membership.downstream)."""

    def exists(self, customer_id: str) -> bool: ...

    def holds(self, customer_id: str, channel: str) -> bool:
        """Whether the customer holds an account on `channel`."""
        ...
