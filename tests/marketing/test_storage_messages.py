"""Messages are delivered at least once: a pull leases them, an ack delivers them, a lease left to
lapse lets them be pulled again; consent withdrawn stops those not yet pulled. Times are passed
in, so nothing waits."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from quanyu.unit_of_work import SqlUnitOfWork
from services.marketing.domain import Channel
from services.marketing.ports import Message, MessageStatus
from services.marketing.storage import SqlStores

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def queued(
    n: int, *, channel: Channel = Channel.APP, customer: str = "cus_1", send_at: datetime = NOW
) -> Message:
    return Message(
        message_id=f"msg_{n}",
        campaign_id="cmp_1",
        grant_key=f"mkt_{n}",
        customer_id=customer,
        member_id="mem_1",
        channel=channel,
        account="app-user-1",
        text=f"Hello {n}",
        create_time=NOW,
        send_at=send_at,
    )


def ids(found: list[Message]) -> list[str]:
    return [m.message_id for m in found]


def test_a_message_reads_back_and_is_queued_once_per_grant_and_channel(uow: SqlUnitOfWork[SqlStores]) -> None:
    assert uow.run(lambda tx: tx.stores.messages.add(queued(1))) is True
    assert uow.run(lambda tx: tx.stores.messages.add(queued(1))) is False

    assert uow.read(lambda tx: tx.stores.messages.get("msg_1")) == queued(1)


def test_pull_leases_ack_delivers_and_an_expired_lease_is_pulled_again(uow: SqlUnitOfWork[SqlStores]) -> None:
    uow.run(lambda tx: [tx.stores.messages.add(queued(n)) for n in (1, 2)])
    uow.run(lambda tx: tx.stores.messages.add(queued(3, channel=Channel.WECHAT_MINI_PROGRAM)))

    first = uow.run(lambda tx: tx.stores.messages.pull(Channel.APP, NOW, LEASE, 10))
    assert ids(first) == ["msg_1", "msg_2"]
    assert {(m.lease_until, m.pulls) for m in first} == {(NOW + LEASE, 1)}
    # Leased: a second pull within the lease finds nothing.
    assert (
        uow.run(lambda tx: tx.stores.messages.pull(Channel.APP, NOW + timedelta(seconds=10), LEASE, 10)) == []
    )

    assert (
        uow.run(
            lambda tx: tx.stores.messages.ack(Channel.APP, ["msg_1", "msg_3"], NOW + timedelta(seconds=5))
        )
        == 1
    )

    later = NOW + LEASE
    again = uow.run(lambda tx: tx.stores.messages.pull(Channel.APP, later, LEASE, 10))
    assert [(m.message_id, m.pulls) for m in again] == [("msg_2", 2)]
    delivered = uow.read(lambda tx: tx.stores.messages.get("msg_1"))
    assert delivered is not None
    assert (delivered.status, delivered.deliver_time) == (MessageStatus.DELIVERED, NOW + timedelta(seconds=5))
    assert uow.read(lambda tx: tx.stores.messages.count("cmp_1", MessageStatus.DELIVERED)) == 1
    # An ack repeated by the backend changes nothing.
    assert uow.run(lambda tx: tx.stores.messages.ack(Channel.APP, ["msg_1"], later)) == 0


def test_a_message_held_for_quiet_hours_is_not_pulled_before_its_time(uow: SqlUnitOfWork[SqlStores]) -> None:
    uow.run(lambda tx: tx.stores.messages.add(queued(1, send_at=NOW + timedelta(hours=2))))

    assert uow.run(lambda tx: tx.stores.messages.pull(Channel.APP, NOW, LEASE, 10)) == []
    due = NOW + timedelta(hours=2)
    assert ids(uow.run(lambda tx: tx.stores.messages.pull(Channel.APP, due, LEASE, 10))) == ["msg_1"]


def test_a_pull_takes_at_most_its_limit_oldest_first(uow: SqlUnitOfWork[SqlStores]) -> None:
    uow.run(
        lambda tx: [tx.stores.messages.add(queued(n, send_at=NOW - timedelta(minutes=n))) for n in range(5)]
    )

    assert ids(uow.run(lambda tx: tx.stores.messages.pull(Channel.APP, NOW, LEASE, 2))) == ["msg_4", "msg_3"]


def test_withdrawn_consent_suppresses_what_is_queued_and_not_pulled(uow: SqlUnitOfWork[SqlStores]) -> None:
    uow.run(lambda tx: [tx.stores.messages.add(queued(n)) for n in (1, 2)])
    uow.run(lambda tx: tx.stores.messages.add(queued(3, send_at=NOW + timedelta(hours=1))))
    uow.run(lambda tx: tx.stores.messages.add(queued(4, customer="cus_2")))
    pulled = uow.run(lambda tx: tx.stores.messages.pull(Channel.APP, NOW, LEASE, 1))
    assert ids(pulled) == ["msg_1"]

    suppressed = uow.run(lambda tx: tx.stores.messages.suppress_unpulled("cus_1", Channel.APP, "NO_CONSENT"))

    assert suppressed == 2
    found = uow.read(lambda tx: {n: tx.stores.messages.get(f"msg_{n}") for n in (1, 2, 3, 4)})
    assert {n: m.status for n, m in found.items() if m is not None} == {
        1: MessageStatus.PENDING,
        2: MessageStatus.SUPPRESSED,
        3: MessageStatus.SUPPRESSED,
        4: MessageStatus.PENDING,
    }
    later = NOW + timedelta(hours=2)
    assert ids(uow.run(lambda tx: tx.stores.messages.pull(Channel.APP, later, LEASE, 10))) == [
        "msg_1",
        "msg_4",
    ]


def test_sends_of_the_last_days_are_counted_per_customer_and_channel(uow: SqlUnitOfWork[SqlStores]) -> None:
    earlier = [queued(n, send_at=NOW - timedelta(days=days)) for n, days in enumerate((8, 6, 1))]
    uow.run(lambda tx: [tx.stores.messages.add(m) for m in earlier])
    uow.run(lambda tx: tx.stores.messages.add(queued(5, channel=Channel.WECHAT_MINI_PROGRAM)))
    uow.run(lambda tx: tx.stores.messages.add(queued(6, customer="cus_2")))

    week_ago = NOW - timedelta(days=7)
    times = uow.read(lambda tx: tx.stores.messages.sent_times("cus_1", Channel.APP, week_ago))

    assert times == [NOW - timedelta(days=6), NOW - timedelta(days=1)]


def test_two_backends_pulling_at_once_never_lease_one_message_twice(
    uow: SqlUnitOfWork[SqlStores], replicas: list[SqlUnitOfWork[SqlStores]]
) -> None:
    uow.run(lambda tx: [tx.stores.messages.add(queued(n)) for n in range(40)])
    gate = threading.Barrier(4)
    pulled: list[list[str]] = []

    def backend(n: int) -> None:
        gate.wait()
        replica = replicas[n % len(replicas)]
        pulled.append(ids(replica.run(lambda tx: tx.stores.messages.pull(Channel.APP, NOW, LEASE, 15))))

    threads = [threading.Thread(target=backend, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    every = [message_id for batch in pulled for message_id in batch]
    assert len(every) == len(set(every)) == 40
