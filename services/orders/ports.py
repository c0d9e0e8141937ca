"""What orders' use cases need from outside: the stores of one transaction (storage/ and the
in-memory fakes implement them) and the services orders calls (downstream.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.orders.domain import (
    CustomerRef,
    Effect,
    FulfilmentType,
    Line,
    Member,
    Order,
    Status,
    StatusChange,
    Where,
)
from services.orders.domain.known import CustomerState, Known, MemberState


@dataclass(frozen=True)
class Page:
    """Which orders a listing asks for, newest first, after `before` (time, order id)."""

    customer_id: str
    store_id: str
    channel: str
    statuses: Sequence[Status]
    before: tuple[datetime, str] | None
    limit: int


@dataclass(frozen=True)
class Earn:
    """Points a member earns for an order's spend, as EarnPoints takes them."""

    member_id: str
    source_id: str
    spend_cents: int
    store_id: str


@dataclass(frozen=True)
class StoreFigures:
    # Named as GetStoreReportResponse names them: the report is those figures and nothing else.
    orders_originated: int
    orders_fulfilled: int
    fulfilled_for_other_stores: int
    originated_while_closed: int
    revenue_cents: int


@dataclass(frozen=True)
class GuideFigures:
    # Named as GetGuideReportResponse names them.
    members: int
    orders: int
    online_orders: int
    in_store_orders: int
    revenue_cents: int


class Orders(Protocol):
    def add(self, order: Order, fingerprint: str, *, owner: str) -> None:
        """Store a new order with its first status change. An order already stored for the
        same request (or id) makes this fail as a conflict: the unit of work runs the use case
        again, to find it."""
        ...

    def get(self, order_id: str, *, lock: bool = False) -> Order | None: ...

    def save(self, order: Order) -> None:
        """Save what changed; `ConcurrentChange` when its status is no longer what was loaded."""
        ...

    def fingerprint(self, owner: str, request_id: str) -> tuple[str, str] | None:
        """(order id, request fingerprint) of the order a caller's request id placed."""
        ...

    def history(self, order_id: str) -> list[StatusChange]: ...

    def page(self, page: Page) -> list[Order]: ...

    def count_by_status(self) -> dict[str, float]: ...

    def due_for_timeout(self, now: datetime, limit: int) -> list[tuple[str, str]]: ...

    def store_report(self, store_id: str, start: datetime, end: datetime) -> StoreFigures: ...

    def guide_report(
        self, guide_id: str, start: datetime, end: datetime, origin_store_id: str
    ) -> GuideFigures: ...


class Outbox(Protocol):
    def add(self, effect: Effect, now: datetime, *, delay: timedelta = timedelta(0)) -> None:
        """Record an effect, delivered once the transaction commits (and `delay` has passed)."""
        ...


class KnownCustomers(Known, Protocol):
    """What orders knows of customers and members (services.orders.domain.known), written."""

    def apply_customer(self, state: CustomerState) -> bool:
        """Keep `state` if newer than the one kept, or none is; whether it was kept."""
        ...

    def apply_member(self, state: MemberState) -> bool: ...

    def remember_customer(self, state: CustomerState) -> None:
        """Keep a state learnt from an answer (version 0) unless one is kept already."""
        ...

    def remember_member(self, state: MemberState) -> None: ...


class Stores(Protocol):
    @property
    def orders(self) -> Orders: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def known(self) -> KnownCustomers: ...


@dataclass(frozen=True)
class Customer:
    customer_id: str
    channels: frozenset[str]  # the channels the customer holds accounts on
    accounts: tuple[tuple[str, str], ...] = ()  # (channel, external id), as identity answered


@dataclass(frozen=True)
class Placed:
    store_id: str
    lines: tuple[Line, ...]


class Downstream(Protocol):
    """The services orders calls; a failure is the domain error they answered (Unavailable when
    they did not answer)."""

    def resolve_customer(self, ref: CustomerRef) -> Customer: ...

    def enroll(self, customer_id: str, home_store_id: str, guide_id: str, channel: str) -> Member: ...

    def redeem_coupon(
        self, code: str, member_id: str, order_id: str, amount_cents: int, *, store_id: str, member_code: str
    ) -> int: ...

    def redeem_points(
        self, member_id: str, points: int, source_id: str, *, store_id: str, member_code: str
    ) -> None: ...

    def release_coupon(self, code: str, order_id: str) -> None: ...

    def reverse_points(self, source_id: str, reason: str) -> None: ...

    def earn_points(self, member_id: str, source_id: str, spend_cents: int, store_id: str) -> int: ...

    def earn_points_many(self, earns: Sequence[Earn]) -> list[int]:
        """Each earn's points, in order, credited in one call: all of them or none."""
        ...

    def assign(
        self, order_id: str, lines: Sequence[Line], kind: FulfilmentType, where: Where, *, at: datetime
    ) -> list[Placed]: ...

    def release(self, order_id: str, store_id: str = "") -> None: ...

    def commit(self, order_id: str) -> None: ...

    def commit_many(self, order_ids: Sequence[str]) -> None:
        """Each order's reservation committed in one call: all of them or none."""
        ...

    def is_open(self, store_id: str, at: datetime) -> bool: ...

    def ingest_events(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Tell marketing what happened: each event in marketing's Event JSON form, in order."""
        ...
