"""Identity's use cases over an in-memory unit of work: no database, no gRPC, a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from quanyu.auth import Principal, Role, TokenCodec
from quanyu.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from quanyu.unit_of_work import InMemoryUnitOfWork
from services.identity.domain import ChannelAccount, CustomersMerged, PhoneHasher, ResolveRequest
from services.identity.handlers import IdentityService
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
            TokenCodec(b"s" * 32),
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
    world.service.merge_customers(survivor, merged)
    world.service.merge_customers(survivor, merged)  # again: already one customer
    assert world.stores.outbox.effects == [(CustomersMerged(survivor, merged), NOW)]
    assert world.woken == 1
    assert world.stores.outbox.effects[0][0].payload["request_id"] == f"customer-merge:{merged}:{survivor}"
    assert world.service.get_customer(OPS, merged).customer_id == survivor


def test_merging_an_unknown_customer_is_not_found_and_records_nothing(world: World) -> None:
    survivor = world.resolve(OPS, WECHAT, "a")
    with pytest.raises(NotFound):
        world.service.merge_customers(survivor, "cus_missing")
    assert world.stores.outbox.effects == []
    assert world.woken == 0


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
