"""Messages through the use cases on the database: a backend pulls its channel's due messages,
pulls again what it did not confirm once the lease lapses, and withdrawing consent stops what is
queued and not yet pulled; a message naming its coupon waits for the code."""

from __future__ import annotations

from datetime import timedelta

from quanyu.unit_of_work import SqlUnitOfWork
from services.marketing.domain import Channel
from services.marketing.handlers import MessageCases
from services.marketing.ports import IssuedCoupon, MessageStatus
from services.marketing.storage import SqlStores
from tests.marketing.factory import campaign, coupon, message
from tests.marketing.use_case_support import (
    Clock,
    coupons_issued,
    effects,
    enrolled,
    make_cases,
    order_completed,
    running,
)

Uow = SqlUnitOfWork[SqlStores]


def granted_with_message(uow: Uow, clock: Clock, members: list[str]) -> tuple[MessageCases, str]:
    campaigns, triggers = make_cases(uow, clock)
    live = running(campaigns, campaign(holdout_percent=0, actions=(coupon(), message())))
    messages = MessageCases(uow, clock=clock)
    triggers.ingest([enrolled(m) for m in members])
    for m in members:
        messages.set_contact_preferences(f"cus_{m}", {Channel.APP: True})
    triggers.ingest([order_completed(m, f"evt_{m}") for m in members])
    coupons_issued(uow)
    return messages, live.campaign_id


def test_a_message_not_acknowledged_is_pulled_again_once_its_lease_lapses(uow: Uow) -> None:
    clock = Clock()
    messages, _ = granted_with_message(uow, clock, ["mem_1"])

    (first,) = messages.pull_messages(Channel.APP)
    assert messages.pull_messages(Channel.APP) == []
    assert messages.pull_messages(Channel.WECOM) == []
    clock.now += timedelta(minutes=2)
    (again,) = messages.pull_messages(Channel.APP)

    assert again.message_id == first.message_id
    assert messages.ack_messages(Channel.APP, [first.message_id]) == 1
    clock.now += timedelta(minutes=2)
    assert messages.pull_messages(Channel.APP) == []


def test_withdrawing_consent_stops_what_is_queued(uow: Uow) -> None:
    clock = Clock()
    messages, campaign_id = granted_with_message(uow, clock, ["mem_1", "mem_2"])

    answers = messages.set_contact_preferences("cus_mem_1", {Channel.APP: False})

    assert answers == {Channel.APP: False}
    assert [m.member_id for m in messages.pull_messages(Channel.APP)] == ["mem_2"]
    assert uow.read(lambda tx: tx.stores.messages.count(campaign_id, MessageStatus.SUPPRESSED)) == 1


def test_a_message_naming_its_coupon_is_held_until_the_coupons_delivery_fills_the_code_in(uow: Uow) -> None:
    clock = Clock()
    messages, _ = granted_with_message_held(uow, clock, ["mem_1", "mem_2"])
    assert messages.pull_messages(Channel.APP) == []
    issued = {
        payload["grant_key"]: IssuedCoupon(
            payload["grant_key"], payload["request_id"], f"CODE{payload['member_id']}"
        )
        for kind, payload in effects(uow.database)
        if kind == "issue_coupon"
    }
    first, second = sorted(issued.values(), key=lambda c: c.code)
    # Another coupon's request id frees nothing; the grant's own frees its message alone.
    assert messages.coupons_issued([IssuedCoupon(first.grant_key, second.request_id, "WRONG")]) == 0
    assert messages.coupons_issued([first]) == 1
    (pulled,) = messages.pull_messages(Channel.APP)
    assert pulled.text == "Hi Li Lei, your code CODEmem_1"
    # A batch delivered again changes nothing already filled in; the rest are filled in one go.
    assert messages.coupons_issued([first, second]) == 1
    clock.now += timedelta(minutes=2)
    assert sorted(m.text for m in messages.pull_messages(Channel.APP)) == [
        "Hi Li Lei, your code CODEmem_1",
        "Hi Li Lei, your code CODEmem_2",
    ]


def test_a_message_naming_no_coupon_is_not_held(uow: Uow) -> None:
    clock = Clock()
    campaigns, triggers = make_cases(uow, clock)
    running(campaigns, campaign(holdout_percent=0, actions=(coupon(), message("Welcome, {display_name}"))))
    messages = MessageCases(uow, clock=clock)
    triggers.ingest([enrolled("mem_1")])
    messages.set_contact_preferences("cus_mem_1", {Channel.APP: True})
    triggers.ingest([order_completed("mem_1", "evt_1")])
    assert [m.text for m in messages.pull_messages(Channel.APP)] == ["Welcome, Li Lei"]


def granted_with_message_held(uow: Uow, clock: Clock, members: list[str]) -> tuple[MessageCases, str]:
    campaigns, triggers = make_cases(uow, clock)
    live = running(campaigns, campaign(holdout_percent=0, actions=(coupon(), message())))
    messages = MessageCases(uow, clock=clock)
    triggers.ingest([enrolled(m) for m in members])
    for m in members:
        messages.set_contact_preferences(f"cus_{m}", {Channel.APP: True})
    triggers.ingest([order_completed(m, f"evt_{m}") for m in members])
    return messages, live.campaign_id
