"""Identity's use cases over an in-memory unit of work: no database, no gRPC, a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from quanyu.auth import Principal, Role
from quanyu.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from quanyu.phones import Phone
from quanyu.unit_of_work import InMemoryUnitOfWork
from services.identity.domain import (
    AccountLinked,
    ChannelAccount,
    CustomersMerged,
    CustomerState,
    PhoneHasher,
    ResolveRequest,
)
from services.identity.handlers import IdentityService
from tests.conftest import throwaway_codec
from tests.identity.memory import MemoryStores

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
OPS = Principal(Role.OPS, "ops")
TMALL = Principal(Role.CHANNEL, "tmall", channel="CHANNEL_TMALL")
WECHAT = "CHANNEL_WECHAT_MINI_PROGRAM"


class World:
    def __init__(self) -> None:
        self.stores = MemoryStores()
        self.uow = InMemoryUnitOfWork(self.stores)
        self.woken = 0
        self.stores_known = {"SH-001"}
        self.service = IdentityService(
            self.uow,
            PhoneHasher(b"h" * 32),
            throwaway_codec(),
            lambda: NOW,
            on_effects=self._wake,
            store_exists=lambda store_id: store_id in self.stores_known,
        )

    def _wake(self) -> None:
        self.woken += 1

    def resolve(self, principal: Principal, channel: str, external_id: str, phone: str = "") -> str:
        request = ResolveRequest.checked(ChannelAccount(channel, external_id), phone, "")
        return self.service.resolve_customer(principal, request).customer.customer_id


@pytest.fixture
def world() -> World:
    return World()


def test_a_new_customer_is_created_at_the_clocks_time_and_found_again(world: World) -> None:
    request = ResolveRequest.checked(ChannelAccount(WECHAT, "openid-1"), "13800138000", "Li Lei")
    first = world.service.resolve_customer(OPS, request)
    again = world.service.resolve_customer(OPS, request)
    assert first.created
    assert not again.created
    assert again.customer.customer_id == first.customer.customer_id
    assert first.customer.create_time == NOW
    assert first.customer.phone_masked == "138****8000"


def test_a_merge_records_one_effect_for_membership_and_wakes_the_relay_after_it_commits(world: World) -> None:
    survivor = world.resolve(OPS, WECHAT, "a")
    merged = world.resolve(OPS, "CHANNEL_TMALL", "b")
    before, woken = len(world.stores.outbox.effects), world.woken
    world.service.merge_customers(survivor, merged)
    world.service.merge_customers(survivor, merged)  # again: already one customer
    recorded = world.stores.outbox.effects[before:]
    assert recorded[0] == (CustomersMerged(survivor, merged), NOW)
    assert world.woken == woken + 1
    assert recorded[0][0].payload["request_id"] == f"customer-merge:{merged}:{survivor}"
    # Marketing hears that the survivor holds both accounts now.
    assert [(e.customer_id, e.account) for e, _ in recorded[1:] if isinstance(e, AccountLinked)] == [
        (survivor, ChannelAccount(WECHAT, "a")),
        (survivor, ChannelAccount("CHANNEL_TMALL", "b")),
    ]
    # Orders hears of both as the merge leaves them: the survivor with both accounts, the merged
    # customer with none, leading to the survivor; each under a version after its last.
    told = [e for e, _ in recorded if isinstance(e, CustomerState)]
    assert [(e.customer_id, e.merged_into, e.accounts) for e in told] == [
        (survivor, None, (ChannelAccount(WECHAT, "a"), ChannelAccount("CHANNEL_TMALL", "b"))),
        (merged, survivor, ()),
    ]
    assert [e.version for e in told] == [2, 2]
    assert len(recorded) == 5
    assert world.service.get_customer(OPS, merged).customer_id == survivor


def test_orders_is_told_each_change_of_a_customer_s_accounts_and_phones_and_nothing_else(
    world: World,
) -> None:
    hashed = PhoneHasher(b"h" * 32).digest(Phone.parse("13800138000"))
    customer_id = world.resolve(OPS, WECHAT, "a")
    world.resolve(OPS, WECHAT, "a")  # found as it is: nothing to tell
    world.resolve(OPS, WECHAT, "a", "13800138000")  # gains the phone
    world.service.link_account(OPS, customer_id, ChannelAccount("CHANNEL_TMALL", "b"))
    told = [e for e, _ in world.stores.outbox.effects if isinstance(e, CustomerState)]
    assert [(e.version, e.accounts, e.phone_hashes) for e in told] == [
        (1, (ChannelAccount(WECHAT, "a"),), ()),
        (2, (ChannelAccount(WECHAT, "a"),), (hashed,)),
        (3, (ChannelAccount(WECHAT, "a"), ChannelAccount("CHANNEL_TMALL", "b")), (hashed,)),
    ]
    assert told[-1].payload["event_id"] == f"identity/customer/{customer_id}/3"


def test_merging_an_unknown_customer_is_not_found_and_records_nothing(world: World) -> None:
    survivor = world.resolve(OPS, WECHAT, "a")
    before, woken = list(world.stores.outbox.effects), world.woken
    with pytest.raises(NotFound):
        world.service.merge_customers(survivor, "cus_missing")
    assert world.stores.outbox.effects == before
    assert world.woken == woken


def test_a_channel_links_only_its_own_accounts_and_an_account_belongs_to_one_customer(world: World) -> None:
    mine = world.resolve(TMALL, "CHANNEL_TMALL", "buyer-1")
    other = world.resolve(OPS, "CHANNEL_TMALL", "buyer-2")
    with pytest.raises(PermissionDenied):
        world.service.link_account(TMALL, mine, ChannelAccount(WECHAT, "openid-9"))
    with pytest.raises(AlreadyExists) as caught:
        world.service.link_account(OPS, mine, ChannelAccount("CHANNEL_TMALL", "buyer-2"))
    assert caught.value.reason == "ACCOUNT_LINKED_ELSEWHERE"
    assert world.service.get_customer(OPS, other).customer_id == other


def test_a_channel_sees_only_its_own_accounts_of_a_customer(world: World) -> None:
    customer = world.resolve(OPS, WECHAT, "openid-1", phone="13800138000")
    world.resolve(OPS, "CHANNEL_TMALL", "buyer-1", phone="13800138000")
    seen = world.service.lookup_by_phone(TMALL, "13800138000")
    assert seen.customer_id == customer
    assert seen.accounts == [ChannelAccount("CHANNEL_TMALL", "buyer-1")]


def test_a_token_is_issued_at_the_clocks_time_for_a_store_that_exists(world: World) -> None:
    issued = world.service.issue_token(
        Role.STORE, subject="till-3", store_id="SH-001", channel="", ttl_seconds=60
    )
    assert issued.expire_time == datetime(2026, 3, 4, 12, 1, tzinfo=UTC)
    with pytest.raises(NotFound):
        world.service.issue_token(Role.STORE, subject="", store_id="SH-404", channel="", ttl_seconds=0)


def test_a_token_request_names_every_bad_field_at_once(world: World) -> None:
    with pytest.raises(InvalidArgument) as caught:
        world.service.issue_token(None, subject="x" * 129, store_id="", channel="99", ttl_seconds=-1)
    assert [v.field for v in caught.value.violations] == ["role", "subject", "channel", "ttl_seconds"]


def linked(world: World, since: int = 0) -> list[tuple[str, ChannelAccount, str]]:
    return [
        (e.customer_id, e.account, e.display_name)
        for e, _ in world.stores.outbox.effects[since:]
        if isinstance(e, AccountLinked)
    ]


def test_marketing_hears_each_account_a_customer_gains_once(world: World) -> None:
    request = ResolveRequest.checked(ChannelAccount(WECHAT, "openid-1"), "13800138000", "Li Lei")
    customer = world.service.resolve_customer(OPS, request).customer.customer_id
    assert linked(world) == [(customer, ChannelAccount(WECHAT, "openid-1"), "Li Lei")]
    assert world.woken == 1
    world.service.resolve_customer(OPS, request)  # found again: gains nothing
    assert len(linked(world)) == 1
    # Found by phone through another channel: the customer gains that channel's account.
    tmall = ResolveRequest.checked(ChannelAccount("CHANNEL_TMALL", "buyer-9"), "13800138000", "")
    world.service.resolve_customer(TMALL, tmall)
    assert linked(world)[1:] == [(customer, ChannelAccount("CHANNEL_TMALL", "buyer-9"), "Li Lei")]
    # Linked by its own call; linking it again gains nothing.
    till = ChannelAccount("CHANNEL_STORE_POS", "card-7")
    world.service.link_account(OPS, customer, till)
    world.service.link_account(OPS, customer, till)
    assert linked(world)[2:] == [(customer, till, "Li Lei")]
    event = world.stores.outbox.effects[-1][0]
    assert isinstance(event, AccountLinked)
    payload = event.payload
    assert payload["event_id"].startswith("identity/account/")
    assert len(payload["event_id"]) <= 64
    assert payload == {
        "event_id": payload["event_id"],
        "occur_time": NOW.isoformat(),
        "account_linked": {
            "customer_id": customer,
            "account": {"channel": "CHANNEL_STORE_POS", "external_id": "card-7"},
            "display_name": "Li Lei",
        },
    }
    # The id follows from the customer and the account alone.
    assert AccountLinked(customer, till, "", NOW).payload["event_id"] == payload["event_id"]
    assert AccountLinked("cus_other", till, "", NOW).payload["event_id"] != payload["event_id"]
