"""What orders knows of customers and members: a returning customer's order asks neither
identity nor membership; merges, moved accounts and members told by events take effect at the
next order; and what orders is not sure of is asked, as before. Use cases over in-memory stores,
the repository on a real database (SQLite, and PostgreSQL when reachable)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from quanyu.auth import Principal, Role
from quanyu.db import Database, migrate
from quanyu.errors import InvalidArgument, NotFound
from quanyu.paging import PageTokens
from quanyu.phones import Phone, keyed_digest
from quanyu.unit_of_work import InMemoryUnitOfWork, SqlUnitOfWork
from services.orders.bootstrap import MIGRATIONS
from services.orders.domain import CustomerRef, FulfilmentType, Line, Member, OrderRequest, PlaceOrder, Where
from services.orders.domain.known import CustomerEvent, CustomerState, MemberState
from services.orders.handlers import Behaviour, OrdersService
from services.orders.ports import Customer, Placed
from services.orders.storage import SqlStores
from tests.orders.test_use_cases import MemoryStores

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
APP = Principal(Role.CHANNEL, "channel:CHANNEL_APP", channel="CHANNEL_APP")
SERVICE = Principal(Role.SERVICE, "service:bench")
PHONE_KEY = b"p" * 32
PHONE = "13800138000"
PHONE_HASH = keyed_digest(PHONE_KEY, Phone.parse(PHONE))


@dataclass
class Identity:
    """Identity and membership as orders sees them: who holds which account and phone, which
    customer was merged into which, and each customer's member; every question counted."""

    accounts: dict[tuple[str, str], str] = field(default_factory=dict)
    phones: dict[str, str] = field(default_factory=dict)
    merged: dict[str, str] = field(default_factory=dict)
    members: dict[str, Member] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def survivor(self, customer_id: str) -> str:
        while customer_id in self.merged:
            customer_id = self.merged[customer_id]
        return customer_id

    def resolve_customer(self, ref: CustomerRef) -> Customer:
        self.asked.append("identity")
        if ref.customer_id:
            found = ref.customer_id
        elif ref.account_external_id:
            found = self.accounts[ref.account_channel, ref.account_external_id]
        else:
            found = self.phones[PHONE]
        survivor = self.survivor(found)
        if survivor not in set(self.accounts.values()) | set(self.phones.values()):
            raise NotFound("customer", found)
        held = tuple(sorted(a for a, owner in self.accounts.items() if owner == survivor))
        return Customer(survivor, frozenset(channel for channel, _ in held), held)

    def enroll(self, customer_id: str, home_store_id: str, guide_id: str, channel: str) -> Member:
        self.asked.append("membership")
        return self.members.setdefault(customer_id, Member(f"mem-{customer_id}", home_store_id, guide_id))

    def assign(
        self, order_id: str, lines: Sequence[Line], kind: FulfilmentType, where: Where, *, at: datetime
    ) -> list[Placed]:
        return [Placed("S1", tuple(lines))]

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"orders should not have called {name}")


@dataclass
class Running:
    service: OrdersService
    stores: MemoryStores
    identity: Identity
    placed: int = 0

    def order(self, customer: CustomerRef, principal: Principal = APP, guide_id: str = "") -> tuple[str, str]:
        """Places a fresh order; (its customer, its member)."""
        self.placed += 1
        order = self.service.create(
            principal,
            PlaceOrder(
                OrderRequest(
                    request_id=f"req-{self.placed}",
                    owner=principal.owner,
                    customer=customer,
                    channel=principal.channel or "CHANNEL_APP",
                    fulfilment_type=FulfilmentType.DELIVERY,
                    lines=(Line("tea", 1, 1_000),),
                    delivery_location=(31.23, 121.47, 1),
                    delivery_address="People's Square",
                    origin_store_id="",
                    guide_id=guide_id,
                    coupon_code="",
                    points_to_redeem=0,
                )
            ),
        )
        return order.customer_id, order.member_id

    def told(self, *events: CustomerEvent) -> tuple[int, int]:
        return self.service.ingest_customer_events(list(events))


@pytest.fixture
def running() -> Running:
    stores, identity = MemoryStores(), Identity()
    service = OrdersService(
        InMemoryUnitOfWork(stores),
        identity,
        PageTokens(b"k" * 32, purpose="orders"),
        Behaviour(fingerprint_key=b"f" * 32, accept_window=timedelta(seconds=120), phone_key=PHONE_KEY),
        clock=lambda: NOW,
    )
    return Running(service, stores, identity)


def app(external_id: str) -> CustomerRef:
    return CustomerRef(account_channel="CHANNEL_APP", account_external_id=external_id)


def customer(
    customer_id: str, version: int, *accounts: str, merged_into: str = "", phones: Sequence[str] = ()
) -> CustomerEvent:
    return CustomerEvent(
        f"identity/customer/{customer_id}/{version}",
        customer=CustomerState(
            customer_id, version, merged_into, tuple(("CHANNEL_APP", a) for a in accounts), tuple(phones)
        ),
    )


def member(member_id: str, version: int, customer_id: str, root: str = "", home: str = "") -> CustomerEvent:
    return CustomerEvent(
        f"membership/member/{member_id}/{version}",
        member=MemberState(member_id, version, customer_id, root or member_id, home, ""),
    )


def test_a_returning_customer_s_order_asks_neither_identity_nor_membership(running: Running) -> None:
    running.identity.accounts["CHANNEL_APP", "open-1"] = "cus-1"
    assert running.order(app("open-1")) == ("cus-1", "mem-cus-1")
    assert running.identity.asked == ["identity", "membership"]
    # Their answers were kept with the first order: the next ones ask nobody.
    assert running.order(app("open-1")) == ("cus-1", "mem-cus-1")
    assert running.order(CustomerRef(customer_id="cus-1")) == ("cus-1", "mem-cus-1")
    assert running.identity.asked == ["identity", "membership"]


def test_after_a_merge_is_told_the_next_order_lands_on_the_survivor(running: Running) -> None:
    running.identity.accounts["CHANNEL_APP", "open-1"] = "cus-old"
    running.identity.accounts["CHANNEL_APP", "open-2"] = "cus-new"
    assert running.order(app("open-1")) == ("cus-old", "mem-cus-old")
    assert running.order(app("open-2")) == ("cus-new", "mem-cus-new")
    # Identity merges cus-old into cus-new (its accounts move) and tells both, as it does in one
    # transaction; membership folds the merged member into the survivor's and tells both.
    running.identity.accounts["CHANNEL_APP", "open-1"] = "cus-new"
    running.identity.merged["cus-old"] = "cus-new"
    assert running.told(
        customer("cus-new", 3, "open-1", "open-2"),
        customer("cus-old", 2, merged_into="cus-new"),
        member("mem-cus-old", 2, "cus-old", root="mem-cus-new"),
    ) == (3, 0)
    asked = len(running.identity.asked)
    assert running.order(app("open-1")) == ("cus-new", "mem-cus-new")
    assert running.order(CustomerRef(customer_id="cus-old")) == ("cus-new", "mem-cus-new")
    assert len(running.identity.asked) == asked


def test_a_merge_told_half_asks_identity_rather_than_guess(running: Running) -> None:
    running.told(customer("cus-old", 1, "open-1"), customer("cus-new", 1, "open-2"))
    running.identity.accounts["CHANNEL_APP", "open-1"] = "cus-new"
    running.identity.merged["cus-old"] = "cus-new"
    # The survivor's state arrived (it holds open-1 now), the merged customer's not yet: open-1
    # is listed under both, and identity is asked.
    running.told(customer("cus-new", 2, "open-1", "open-2"))
    assert running.order(app("open-1"))[0] == "cus-new"
    assert running.identity.asked[0] == "identity"


def test_an_older_or_repeated_state_changes_nothing(running: Running) -> None:
    running.identity.accounts["CHANNEL_APP", "open-1"] = "cus-new"
    assert running.told(customer("cus-old", 5, merged_into="cus-new"), customer("cus-new", 4, "open-1")) == (
        2,
        0,
    )
    # The state before the merge, overtaken on the way, and a repeat of the merge.
    assert running.told(customer("cus-old", 4, "open-1"), customer("cus-old", 5, merged_into="cus-new")) == (
        0,
        2,
    )
    assert running.order(CustomerRef(customer_id="cus-old"))[0] == "cus-new"
    assert running.identity.asked == ["membership"]


def test_what_an_answer_taught_gives_way_to_any_state_told(running: Running) -> None:
    running.identity.accounts["CHANNEL_APP", "open-1"] = "cus-1"
    running.order(app("open-1"))
    # The account moved to another customer (identity's merge): told, it is theirs at once.
    running.identity.accounts["CHANNEL_APP", "open-1"] = "cus-2"
    running.identity.merged["cus-1"] = "cus-2"
    running.told(customer("cus-1", 1, merged_into="cus-2"), customer("cus-2", 1, "open-1"))
    running.told(member("mem-2", 1, "cus-2", home="SH-001"))
    asked = len(running.identity.asked)
    assert running.order(app("open-1")) == ("cus-2", "mem-2")
    assert len(running.identity.asked) == asked


def test_a_merged_member_leads_to_the_member_it_is_part_of(running: Running) -> None:
    running.told(customer("cus-1", 1, "open-1"), member("mem-a", 1, "cus-1"))
    assert running.order(app("open-1")) == ("cus-1", "mem-a")
    running.told(member("mem-a", 2, "cus-1", root="mem-b"))
    # The survivor member itself is not told yet: membership is asked.
    running.identity.accounts["CHANNEL_APP", "open-1"] = "cus-1"
    running.identity.members["cus-1"] = Member("mem-b", "", "")
    assert running.order(app("open-1")) == ("cus-1", "mem-b")
    assert running.identity.asked == ["membership"]
    running.told(member("mem-b", 1, "cus-2", home="SH-002"))
    assert running.order(app("open-1")) == ("cus-1", "mem-b")
    assert running.identity.asked == ["membership"]


def test_a_phone_finds_a_known_customer_and_with_an_account_only_a_phone_known_to_be_held(
    running: Running,
) -> None:
    running.told(customer("cus-1", 1, "open-1", phones=[PHONE_HASH]), member("mem-1", 1, "cus-1"))
    assert running.order(CustomerRef(phone="+86 138-0013-8000"), principal=SERVICE) == ("cus-1", "mem-1")
    assert running.order(
        CustomerRef(account_channel="CHANNEL_APP", account_external_id="open-1", phone=PHONE)
    ) == (
        "cus-1",
        "mem-1",
    )
    assert running.identity.asked == []
    # A phone nobody is known to hold would be linked by identity: asked (and membership with it,
    # as for every customer identity is asked for).
    running.identity.accounts["CHANNEL_APP", "open-1"] = "cus-1"
    running.identity.members["cus-1"] = Member("mem-1", "", "")
    running.order(
        CustomerRef(account_channel="CHANNEL_APP", account_external_id="open-1", phone="13900139000")
    )
    assert running.identity.asked == ["identity", "membership"]


def test_a_channel_the_customer_is_not_known_to_hold_a_named_guide_and_a_withheld_customer_are_asked(
    running: Running,
) -> None:
    running.told(customer("cus-1", 1, "open-1"), member("mem-1", 1, "cus-1"))
    mini = Principal(
        Role.CHANNEL, "channel:CHANNEL_WECHAT_MINI_PROGRAM", channel="CHANNEL_WECHAT_MINI_PROGRAM"
    )
    running.identity.accounts["CHANNEL_WECHAT_MINI_PROGRAM", "wx-1"] = "cus-1"
    running.identity.members["cus-1"] = Member("mem-1", "", "")
    # Orders knows cus-1 on the app only; identity says they linked a mini-program account since.
    assert running.order(CustomerRef(customer_id="cus-1"), principal=mini) == ("cus-1", "mem-1")
    assert running.identity.asked == ["identity", "membership"]
    running.identity.asked.clear()
    running.order(app("open-1"), guide_id="g-1")
    assert running.identity.asked == ["membership"]
    running.told(
        CustomerEvent(
            "identity/customer/cus-1/2", customer=CustomerState("cus-1", 2, "", (), (), withheld=True)
        )
    )
    running.identity.accounts["CHANNEL_APP", "open-1"] = "cus-1"
    running.order(CustomerRef(customer_id="cus-1"), principal=SERVICE)
    assert running.identity.asked[-2:] == ["identity", "membership"]


def test_an_ingest_request_s_problems_are_named_by_field(running: Running) -> None:
    with pytest.raises(InvalidArgument) as refused:
        running.told(
            CustomerEvent("", customer=CustomerState("", 0, "", (("CHANNEL_APP", ""),), ("h" * 65,))),
            CustomerEvent("e-2"),
            member("m" * 65, 1, "cus-1"),
        )
    fields = {v.field for v in refused.value.violations}
    assert fields == {
        "events[0].event_id",
        "events[0].customer.customer_id",
        "events[0].customer.version",
        "events[0].customer.accounts[0].external_id",
        "events[0].customer.phone_hashes[0]",
        "events[1]",
        "events[2].member.member_id",
        "events[2].member.root_member_id",
    }
    with pytest.raises(InvalidArgument) as too_many:
        running.told(*[customer(f"cus-{n}", 1) for n in range(501)])
    assert [v.field for v in too_many.value.violations] == ["events"]
    assert running.stores.known.customers == {}


@pytest.fixture
def sql_service(database_url: str) -> Iterator[OrdersService]:
    database = Database(database_url)
    migrate(database, MIGRATIONS)
    yield OrdersService(
        SqlUnitOfWork(database, SqlStores),
        Identity(),
        PageTokens(b"k" * 32, purpose="orders"),
        Behaviour(fingerprint_key=b"f" * 32, accept_window=timedelta(seconds=120), phone_key=PHONE_KEY),
        clock=lambda: NOW,
    )
    database.dispose()


def test_the_database_keeps_the_newest_state_of_each_customer_and_member(sql_service: OrdersService) -> None:
    ingest = sql_service.ingest_customer_events
    assert ingest(
        [customer("cus-1", 2, "open-1", "open-2", phones=[PHONE_HASH]), member("mem-1", 1, "cus-1")]
    ) == (2, 0)
    assert ingest(
        [customer("cus-1", 1, "open-1"), customer("cus-1", 2, "open-1"), member("mem-1", 1, "cus-2")]
    ) == (0, 3)

    def read(tx: Any) -> tuple[Any, ...]:
        known = tx.stores.known
        return (
            known.owners_of_account("CHANNEL_APP", "open-2"),
            known.owners_of_phone(PHONE_HASH),
            known.customer("cus-1"),
            known.members_of("cus-1"),
        )

    owners, phone_owners, found, members = sql_service.uow.read(read)
    assert (owners, phone_owners, found.channels, [m.member_id for m in members]) == (
        ["cus-1"],
        ["cus-1"],
        frozenset({"CHANNEL_APP"}),
        ["mem-1"],
    )
    # Merged away: its accounts and phones are the survivor's now, and it leads there.
    assert ingest([customer("cus-1", 3, merged_into="cus-2"), customer("cus-2", 1, "open-1", "open-2")]) == (
        2,
        0,
    )
    sql_service.uow.run(
        lambda tx: tx.stores.known.remember_customer(
            CustomerState("cus-1", 0, "", (("CHANNEL_APP", "open-1"),), ())
        )
    )
    owners, phone_owners, found, _ = sql_service.uow.read(read)
    assert (owners, phone_owners, found.merged_into) == (["cus-2"], [], "cus-2")


def test_a_retry_stored_while_the_order_was_being_placed_is_the_order_answered(
    sql_service: OrdersService,
) -> None:
    identity = sql_service.downstream
    assert isinstance(identity, Identity)
    identity.accounts["CHANNEL_APP", "open-1"] = "cus-1"
    command = PlaceOrder(
        OrderRequest(
            request_id="req-twice",
            owner=APP.owner,
            customer=app("open-1"),
            channel="CHANNEL_APP",
            fulfilment_type=FulfilmentType.DELIVERY,
            lines=(Line("tea", 1, 1_000),),
            delivery_location=(31.23, 121.47, 1),
            delivery_address="People's Square",
            origin_store_id="",
            guide_id="",
            coupon_code="",
            points_to_redeem=0,
        )
    )
    retried: list[Any] = []
    assign = identity.assign

    def assign_while_a_retry_lands(*args: Any, **kwargs: Any) -> list[Placed]:
        # The retry of the same request comes and is stored while the first is still asking
        # fulfilment: the first one's insert then collides with it.
        if not retried:
            retried.append(None)
            retried[0] = sql_service.create(APP, command)
        return assign(*args, **kwargs)

    identity.assign = assign_while_a_retry_lands  # type: ignore[method-assign]
    first = sql_service.create(APP, command)
    assert first == retried[0]
    stored = sql_service.uow.read(lambda tx: tx.stores.orders.fingerprint(APP.owner, "req-twice"))
    assert stored is not None
    assert stored[0] == first.order_id
