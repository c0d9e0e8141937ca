"""Identity's use cases on a real database (SQLite, and PostgreSQL when reachable)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from quanyu.auth import Principal, Role
from quanyu.db import Database, migrate
from quanyu.errors import AlreadyExists, InvalidArgument, NotFound
from quanyu.unit_of_work import SqlUnitOfWork, system_clock
from services.identity.bootstrap import MIGRATIONS
from services.identity.domain import ChannelAccount, PhoneHasher, ResolveRequest
from services.identity.handlers import IdentityService, Resolved
from services.identity.storage import SqlStores, customer_phones, customers
from tests.conftest import throwaway_codec

OPS = Principal(Role.OPS, "ops")
WECHAT = "CHANNEL_WECHAT_MINI_PROGRAM"
TMALL = "CHANNEL_TMALL"


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    migrate(db, MIGRATIONS)
    yield db
    db.dispose()


@pytest.fixture
def identity(database: Database) -> IdentityService:
    return IdentityService(
        SqlUnitOfWork(database, SqlStores), PhoneHasher(b"h" * 32), throwaway_codec(), system_clock
    )


def resolve(
    identity: IdentityService, channel: str = "", external_id: str = "", phone: str = "", name: str = ""
) -> Resolved:
    account = ChannelAccount(channel, external_id) if channel else None
    return identity.resolve_customer(OPS, ResolveRequest.checked(account, phone, name))


def test_resolving_a_new_account_creates_a_customer_and_again_finds_it(identity: IdentityService) -> None:
    first = resolve(identity, WECHAT, "openid-1", name="Li Lei")
    again = resolve(identity, WECHAT, "openid-1")
    assert first.created
    assert not again.created
    assert again.customer.customer_id == first.customer.customer_id
    assert again.customer.display_name == "Li Lei"
    assert again.customer.accounts == [ChannelAccount(WECHAT, "openid-1")]


def test_a_new_channel_found_by_phone_is_linked_to_the_same_customer(identity: IdentityService) -> None:
    wechat = resolve(identity, WECHAT, "openid-1", phone="+86 138-0013-8000")
    tmall = resolve(identity, TMALL, "buyer-9", phone="8613800138000")
    assert not tmall.created
    assert tmall.customer.customer_id == wechat.customer.customer_id
    assert set(tmall.customer.accounts) == {
        ChannelAccount(WECHAT, "openid-1"),
        ChannelAccount(TMALL, "buyer-9"),
    }
    assert tmall.customer.phone_masked == "138****8000"
    # The link is kept: the Tmall account alone now finds the customer.
    assert resolve(identity, TMALL, "buyer-9").customer.customer_id == wechat.customer.customer_id


def test_phones_are_stored_only_as_keyed_hashes(identity: IdentityService, database: Database) -> None:
    resolve(identity, phone="13800138000")
    with database.snapshot() as connection:
        rows = [tuple(str(v) for v in row) for row in connection.execute(select(customer_phones)).all()]
        rows += [tuple(str(v) for v in row) for row in connection.execute(select(customers)).all()]
    assert rows
    assert not any("13800138000" in value or "0013" in value for row in rows for value in row)


def test_lookup_finds_by_account_or_phone_and_otherwise_is_not_found(identity: IdentityService) -> None:
    created = resolve(identity, WECHAT, "openid-1", phone="13800138000").customer
    assert (
        identity.lookup_by_account(OPS, ChannelAccount(WECHAT, "openid-1")).customer_id == created.customer_id
    )
    assert identity.lookup_by_phone(OPS, "+86 138 0013 8000").customer_id == created.customer_id
    with pytest.raises(NotFound):
        identity.lookup_by_phone(OPS, "13900139000")
    with pytest.raises(NotFound):
        identity.lookup_by_account(OPS, ChannelAccount(TMALL, "nobody"))


def test_linking_an_account_owned_by_another_customer_is_already_exists(identity: IdentityService) -> None:
    alice = resolve(identity, WECHAT, "alice").customer
    bob = resolve(identity, WECHAT, "bob").customer
    linked = identity.link_account(OPS, alice.customer_id, ChannelAccount(TMALL, "alice-tmall"))
    assert ChannelAccount(TMALL, "alice-tmall") in linked.accounts
    # Linking the same account again to its owner changes nothing.
    assert identity.link_account(OPS, alice.customer_id, ChannelAccount(TMALL, "alice-tmall")) == linked
    with pytest.raises(AlreadyExists) as caught:
        identity.link_account(OPS, bob.customer_id, ChannelAccount(TMALL, "alice-tmall"))
    assert caught.value.reason == "ACCOUNT_LINKED_ELSEWHERE"
    with pytest.raises(NotFound):
        identity.link_account(OPS, "cus_missing", ChannelAccount(TMALL, "x"))


def test_a_merged_customer_leads_to_its_survivor_through_chains(identity: IdentityService) -> None:
    a = resolve(identity, WECHAT, "a", phone="13800138000").customer
    b = resolve(identity, TMALL, "b").customer
    c = resolve(identity, "CHANNEL_APP", "c", phone="13900139000").customer
    merged = identity.merge_customers(b.customer_id, a.customer_id)
    assert merged.customer_id == b.customer_id
    assert merged.phone_masked == "138****8000"
    identity.merge_customers(c.customer_id, b.customer_id)
    survivor = identity.get_customer(OPS, a.customer_id)
    assert survivor.customer_id == c.customer_id
    assert {x.external_id for x in survivor.accounts} == {"a", "b", "c"}
    assert survivor.phone_masked == "139****9000"
    # The merged customer's phone and accounts now find the survivor.
    assert identity.lookup_by_phone(OPS, "13800138000").customer_id == c.customer_id
    assert resolve(identity, WECHAT, "a").customer.customer_id == c.customer_id


def test_merging_again_is_harmless(identity: IdentityService) -> None:
    a = resolve(identity, WECHAT, "a").customer
    b = resolve(identity, WECHAT, "b").customer
    first = identity.merge_customers(b.customer_id, a.customer_id)
    assert identity.merge_customers(b.customer_id, a.customer_id) == first
    # The other way round, the two are already one: still the same customer.
    assert identity.merge_customers(a.customer_id, b.customer_id).customer_id == b.customer_id


def test_merging_unknown_customers_is_not_found(identity: IdentityService) -> None:
    a = resolve(identity, WECHAT, "a").customer
    with pytest.raises(NotFound):
        identity.merge_customers(a.customer_id, "cus_missing")
    with pytest.raises(InvalidArgument):
        identity.merge_customers(a.customer_id, a.customer_id)


def test_two_channels_resolving_one_new_person_at_once_make_one_customer(
    identity: IdentityService, database: Database
) -> None:
    callers = 8
    barrier = threading.Barrier(callers)
    results: list[str] = []
    errors: list[BaseException] = []

    def call(i: int) -> None:
        try:
            barrier.wait()
            results.append(
                resolve(
                    identity, WECHAT if i % 2 else TMALL, f"acct-{i}", phone="13700137000"
                ).customer.customer_id
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(results)) == 1
    with database.snapshot() as connection:
        assert connection.execute(select(func.count()).select_from(customers)).scalar_one() == 1
    assert len(identity.get_customer(OPS, results[0]).accounts) == callers
