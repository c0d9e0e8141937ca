"""What identity tells marketing, on a real database (SQLite, and PostgreSQL when reachable): an
account a customer gains is told in the transaction that gave it, so a change that fails tells
nothing and one run again tells once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Connection

from quanyu.auth import Principal, Role
from quanyu.db import Database, migrate
from quanyu.unit_of_work import ConcurrentChange, SqlUnitOfWork, system_clock
from services.identity.bootstrap import MIGRATIONS
from services.identity.domain import (
    MARKETING_EVENT,
    ChannelAccount,
    PhoneHasher,
    ResolveRequest,
)
from services.identity.handlers import IdentityService
from services.identity.storage import SqlStores, outbox
from tests.conftest import throwaway_codec
from tests.outboxes import Failing, FlakyOutbox

OPS = Principal(Role.OPS, "ops")
WECHAT = ChannelAccount("CHANNEL_WECHAT_MINI_PROGRAM", "openid-1")
TILL = ChannelAccount("CHANNEL_STORE_POS", "card-1")


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    migrate(db, MIGRATIONS)
    yield db
    db.dispose()


@pytest.fixture
def failing() -> Failing:
    return Failing()


@pytest.fixture
def identity(database: Database, failing: Failing) -> IdentityService:
    def stores(connection: Connection) -> SqlStores:
        real = SqlStores(connection)
        real.outbox = FlakyOutbox(real.outbox, failing, lambda effect: effect.KIND == MARKETING_EVENT)  # type: ignore[assignment]
        return real

    return IdentityService(
        SqlUnitOfWork(database, stores), PhoneHasher(b"h" * 32), throwaway_codec(), system_clock
    )


def told(database: Database) -> list[dict[str, Any]]:
    with database.snapshot() as connection:
        rows = connection.execute(
            select(outbox.c.payload).where(outbox.c.kind == MARKETING_EVENT).order_by(outbox.c.effect_id)
        ).all()
    return [json.loads(row.payload)["account_linked"] for row in rows]


def test_a_customer_created_with_an_account_is_told_once_though_the_transaction_ran_again(
    identity: IdentityService, database: Database, failing: Failing
) -> None:
    failing.times, failing.error = 1, ConcurrentChange
    customer = identity.resolve_customer(OPS, ResolveRequest.checked(WECHAT, "", "Li Lei")).customer
    assert failing.times == 0
    assert told(database) == [
        {
            "customer_id": customer.customer_id,
            "account": {"channel": WECHAT.channel, "external_id": WECHAT.external_id},
            "display_name": "Li Lei",
        }
    ]


def test_a_link_that_fails_tells_nothing_and_links_nothing(
    identity: IdentityService, database: Database, failing: Failing
) -> None:
    customer = identity.resolve_customer(OPS, ResolveRequest.checked(WECHAT, "", "")).customer
    failing.times = 1
    with pytest.raises(RuntimeError):
        identity.link_account(OPS, customer.customer_id, TILL)
    assert [event["account"]["channel"] for event in told(database)] == [WECHAT.channel]
    assert TILL not in identity.get_customer(OPS, customer.customer_id).accounts
    identity.link_account(OPS, customer.customer_id, TILL)
    assert [event["account"]["channel"] for event in told(database)] == [WECHAT.channel, TILL.channel]
