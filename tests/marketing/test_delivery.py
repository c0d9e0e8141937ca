"""Marketing's outbox delivered to a membership server through the batch RPCs, as the service's
relay delivers it: a campaign's coupons in one call, their codes put into the messages that name
them (held, unpulled, until then), and a member membership does not know refused alone while the
others' coupons and messages go through."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from quanyu.auth import Role
from quanyu.clients import service_channel
from quanyu.config import Settings
from quanyu.db import Database
from quanyu.membership.v1 import membership_pb2, membership_pb2_grpc
from quanyu.outbox import OutboxRelay
from services.marketing import bootstrap
from services.marketing.domain import Channel
from services.marketing.handlers.service import MarketingService
from services.marketing.storage.tables import outbox
from services.membership import bootstrap as membership_bootstrap
from tests.conftest import TokenFactory, bearer, served
from tests.marketing.factory import campaign, coupon, message
from tests.marketing.use_case_support import Clock, enrolled, order_completed, running

Stub = membership_pb2_grpc.MembershipServiceStub
# The relay and membership run on the real clock: the grants are made now (their effects due at
# once, their coupons' expiry ahead); their messages are pulled a day later, past any quiet hours.
GRANT_TIME = datetime.now(UTC).replace(microsecond=0)
PULL_TIME = GRANT_TIME + timedelta(days=1)


@dataclasses.dataclass
class Deployed:
    marketing: MarketingService
    clock: Clock
    database: Database
    relay: OutboxRelay
    membership: Stub
    ops: tuple[tuple[str, str]]


@pytest.fixture
def deployed(settings: Settings, token: TokenFactory) -> Iterator[Deployed]:
    membership_bootstrap.migrate(settings)
    bootstrap.migrate(settings)
    with served(membership_bootstrap.build_app(settings), settings) as membership_server:
        settings.membership.target = membership_server.target
        stub = Stub(service_channel(settings, "membership", caller="marketing"))
        clock = Clock(GRANT_TIME)
        service, database = bootstrap.build_service(settings, clock=clock)
        relay = bootstrap.outbox_relay(database, stub, service.messages)
        try:
            yield Deployed(
                service, clock, database, relay, Stub(membership_server.channel), bearer(token(Role.OPS))
            )
        finally:
            service.close()


def members_granted(d: Deployed, member_ids: list[str]) -> None:
    """Each member known to marketing, consenting on the app, and granted by a first purchase."""
    running(d.marketing.campaigns, campaign(holdout_percent=0, actions=(coupon(), message())))
    d.marketing.triggers.ingest([dataclasses.replace(enrolled(m), occur_time=GRANT_TIME) for m in member_ids])
    for m in member_ids:
        d.marketing.messages.set_contact_preferences(f"cus_{m}", {Channel.APP: True})
    d.marketing.triggers.ingest(
        [dataclasses.replace(order_completed(m, f"evt_{m}"), occur_time=GRANT_TIME) for m in member_ids]
    )


def enrol(d: Deployed, count: int) -> list[str]:
    return [
        d.membership.Enroll(
            membership_pb2.EnrollRequest(customer_id=f"cus-{n}"), metadata=d.ops
        ).member.member_id
        for n in range(count)
    ]


def coupon_of(d: Deployed, member_id: str) -> str:
    listed = d.membership.ListCoupons(membership_pb2.ListCouponsRequest(member_id=member_id), metadata=d.ops)
    (only,) = listed.coupons
    assert only.campaign_id
    return str(only.code)


def statements_of(d: Deployed, work: Any) -> list[str]:
    """The statements `work` runs on marketing's database."""
    seen: list[str] = []

    def statement(connection: Any, cursor: Any, sql: str, *rest: Any) -> None:
        seen.append(sql)

    event.listen(d.database.engine, "before_cursor_execute", statement)
    try:
        work()
    finally:
        event.remove(d.database.engine, "before_cursor_execute", statement)
    return seen


def test_a_campaigns_coupons_go_in_one_call_and_their_codes_into_the_held_messages(
    deployed: Deployed,
) -> None:
    d = deployed
    member_ids = enrol(d, 3)
    members_granted(d, member_ids)
    d.clock.now = PULL_TIME
    assert d.marketing.messages.pull_messages(Channel.APP) == []

    statements = statements_of(d, d.relay.deliver_due)
    # One lease and one mark for the three coupons, and one statement filling their codes in.
    updates = [s for s in statements if s.lstrip().upper().startswith("UPDATE")]
    assert len(updates) == 3

    pulled = {m.member_id: m.text for m in d.marketing.messages.pull_messages(Channel.APP)}
    assert pulled == {m: f"Hi Li Lei, your code {coupon_of(d, m)}" for m in member_ids}
    with d.database.snapshot() as connection:
        rows = connection.execute(select(outbox.c.delivered_time, outbox.c.failed)).all()
    assert len(rows) == 3
    assert all(row.delivered_time is not None and row.failed == 0 for row in rows)
    # Delivered again (a relay that died before marking them), nothing changes on either side.
    with d.database.transaction() as connection:
        connection.execute(outbox.update().values(delivered_time=None))
    assert d.relay.deliver_due() == 3
    assert {m: coupon_of(d, m) for m in member_ids} == {
        m: text.rsplit(" ", 1)[1] for m, text in pulled.items()
    }


def test_a_member_membership_does_not_know_is_refused_alone(deployed: Deployed) -> None:
    d = deployed
    known = enrol(d, 2)
    members_granted(d, [known[0], "mem_unknown", known[1]])

    assert d.relay.deliver_due() == 2
    d.clock.now = PULL_TIME

    with d.database.snapshot() as connection:
        failed = connection.execute(
            select(outbox.c.payload, outbox.c.last_error).where(outbox.c.failed == 1)
        ).all()
    assert len(failed) == 1
    assert "mem_unknown" in failed[0].payload
    assert "NOT_FOUND" in failed[0].last_error
    pulled = {m.member_id: m.text for m in d.marketing.messages.pull_messages(Channel.APP)}
    # The unknown member's message still waits for a code that will not come, unsent.
    assert pulled == {m: f"Hi Li Lei, your code {coupon_of(d, m)}" for m in known}
