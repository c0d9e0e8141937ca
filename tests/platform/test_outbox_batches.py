"""The outbox relay's batches, on a real SQLite database: a run of effects of a batched kind is
delivered in one call with a handful of statements, a batch refused for good is delivered one by
one so a bad effect is refused alone, an unanswered batch is retried later as a whole, two relays
never deliver one effect twice, and effects keep their order within a lane."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, Table, event, insert, select, update

from quanyu.db import Database, new_metadata, utcnow
from quanyu.errors import Unavailable
from quanyu.outbox import BatchDeliverer, OutboxRelay, PermanentFailure, add_effect, outbox_table

WAIT = 20.0  # seconds a test waits for a delivery that should come at once


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[tuple[Database, Any]]:
    table = outbox_table(new_metadata())
    database = Database(f"sqlite:///{tmp_path / 'outbox.db'}")
    table.metadata.create_all(database.engine)
    yield database, table
    database.dispose()


def write(database: Database, table: Any, *effects: tuple[str, dict[str, Any]]) -> None:
    with database.transaction() as connection:
        for kind, payload in effects:
            add_effect(connection, table, kind, payload, utcnow())


def rows(database: Database, table: Any) -> list[Any]:
    with database.snapshot() as connection:
        return list(connection.execute(select(table).order_by(table.c.effect_id)).all())


class Receiver:
    """What a receiving service saw: each call, batch or single, with the payloads' numbers."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.lock = threading.Lock()

    def one(self, kind: str) -> Any:
        def deliver(payload: dict[str, Any]) -> None:
            with self.lock:
                self.calls.append((kind, [payload["n"]]))

        return deliver

    def many(self, kind: str) -> Any:
        def deliver(payloads: list[dict[str, Any]]) -> None:
            with self.lock:
                self.calls.append((f"{kind}*", [p["n"] for p in payloads]))

        return deliver

    def delivered(self) -> list[int]:
        return sorted(n for _, numbers in self.calls for n in numbers)


def test_a_run_of_a_batched_kind_goes_in_calls_of_its_size_with_a_few_statements(outbox: Any) -> None:
    database, table = outbox
    write(database, table, *[("issue_coupon", {"n": n}) for n in range(1_200)])
    receiver = Receiver()
    relay = OutboxRelay(
        database,
        table,
        {"issue_coupon": receiver.one("issue_coupon")},
        batched={"issue_coupon": BatchDeliverer(receiver.many("issue_coupon"), size=500)},
    )
    statements: list[str] = []

    def listener(connection: Any, cursor: Any, statement: str, *rest: Any) -> None:
        statements.append(statement)

    event.listen(database.engine, "before_cursor_execute", listener)
    try:
        # One pass: its batches are leased together and marked delivered together.
        assert relay.deliver_due() == 1_200
    finally:
        event.remove(database.engine, "before_cursor_execute", listener)
    assert [(kind, len(numbers)) for kind, numbers in receiver.calls] == [
        ("issue_coupon*", 500),
        ("issue_coupon*", 500),
        ("issue_coupon*", 200),
    ]
    assert [n for _, numbers in receiver.calls for n in numbers] == list(range(1_200))
    # A read of what is due, one lease and one mark for the three batches; not three
    # transactions an effect, nor two a batch.
    writes = [s for s in statements if s.lstrip().upper().startswith("UPDATE")]
    assert len(writes) == 2
    assert len(statements) < 10
    assert all(row.delivered_time is not None and row.attempts == 1 for row in rows(database, table))
    assert relay.deliver_due() == 0


def test_a_batch_refused_for_good_is_delivered_one_by_one_and_only_the_bad_effect_fails(
    outbox: Any,
) -> None:
    database, table = outbox
    write(database, table, *[("grant_points", {"n": n, "bad": n == 3}) for n in range(6)])
    singles: list[int] = []

    def many(payloads: list[dict[str, Any]]) -> None:
        if any(p["bad"] for p in payloads):
            raise PermanentFailure("INVALID_ARGUMENT: requests[3].points: must be greater than zero")

    def one(payload: dict[str, Any]) -> None:
        if payload["bad"]:
            raise PermanentFailure("INVALID_ARGUMENT: points: must be greater than zero")
        singles.append(payload["n"])

    relay = OutboxRelay(
        database, table, {"grant_points": one}, batched={"grant_points": BatchDeliverer(many)}
    )
    assert relay.deliver_due() == 5
    assert singles == [0, 1, 2, 4, 5]
    found = rows(database, table)
    assert [row.failed for row in found] == [0, 0, 0, 1, 0, 0]
    assert "points" in found[3].last_error
    assert all(row.lease_until is None for row in found)
    state = relay.state()
    assert (state.undelivered, state.failed) == (0, 1)


def test_an_unanswered_batch_is_retried_later_as_a_whole(outbox: Any) -> None:
    database, table = outbox
    write(database, table, *[("update_tags", {"n": n}) for n in range(4)])
    receiver = Receiver()
    down = True

    def many(payloads: list[dict[str, Any]]) -> None:
        if down:
            raise Unavailable("membership is not answering", reason="UNAVAILABLE")
        receiver.many("update_tags")(payloads)

    relay = OutboxRelay(
        database,
        table,
        {"update_tags": receiver.one("update_tags")},
        batched={"update_tags": BatchDeliverer(many)},
    )
    before = utcnow()
    assert relay.deliver_due() == 0
    found = rows(database, table)
    assert all(row.delivered_time is None and row.failed == 0 and row.lease_until is None for row in found)
    assert all(row.attempts == 1 and row.next_attempt_time > before for row in found)
    assert "not answering" in found[0].last_error
    # Not due again before its backoff has passed.
    assert relay.deliver_due() == 0
    down = False
    with database.transaction() as connection:
        connection.execute(update(table).values(next_attempt_time=utcnow() - timedelta(seconds=1)))
    assert relay.deliver_due() == 4
    assert receiver.calls == [("update_tags*", [0, 1, 2, 3])]
    assert [row.attempts for row in rows(database, table)] == [2, 2, 2, 2]


def test_a_batch_keeps_the_order_of_its_lane(outbox: Any) -> None:
    database, table = outbox
    kinds = ["issue_coupon", "issue_coupon", "update_tags", "issue_coupon", "issue_coupon", "issue_coupon"]
    write(database, table, *[(kind, {"n": n}) for n, kind in enumerate(kinds)])
    receiver = Receiver()
    relay = OutboxRelay(
        database,
        table,
        {"issue_coupon": receiver.one("issue_coupon"), "update_tags": receiver.one("update_tags")},
        lanes={"membership": ["issue_coupon", "update_tags"]},
        batched={"issue_coupon": BatchDeliverer(receiver.many("issue_coupon"), size=2)},
    )
    assert relay.deliver_due() == 6
    assert receiver.calls == [
        ("issue_coupon*", [0, 1]),
        ("update_tags", [2]),
        ("issue_coupon*", [3, 4]),
        ("issue_coupon*", [5]),
    ]


def test_two_relays_never_deliver_one_effect_twice(outbox: Any) -> None:
    database, table = outbox
    write(database, table, *[("issue_coupon", {"n": n}) for n in range(20)])
    receiver = Receiver()
    inside, freed = threading.Event(), threading.Event()

    def held(payloads: list[dict[str, Any]]) -> None:
        inside.set()
        assert freed.wait(WAIT)
        receiver.many("first")(payloads)

    first = OutboxRelay(
        database,
        table,
        {"issue_coupon": receiver.one("x")},
        batched={"issue_coupon": BatchDeliverer(held, size=10)},
    )
    second = OutboxRelay(
        database,
        table,
        {"issue_coupon": receiver.one("x")},
        batched={"issue_coupon": BatchDeliverer(receiver.many("second"), size=10)},
    )
    passing = threading.Thread(target=first.deliver_due)
    passing.start()
    try:
        assert inside.wait(WAIT)
        # The first relay holds effects 0-19 leased (its pass's two batches), mid-call on the
        # first: the second takes only what was written since.
        write(database, table, *[("issue_coupon", {"n": n}) for n in range(20, 30)])
        assert second.deliver_due() == 10
    finally:
        freed.set()
        passing.join(WAIT)
    assert receiver.calls == [
        ("second*", list(range(20, 30))),
        ("first*", list(range(10))),
        ("first*", list(range(10, 20))),
    ]
    assert receiver.delivered() == list(range(30))

    # Run side by side from the start, they still deliver each effect once.
    write(database, table, *[("issue_coupon", {"n": n}) for n in range(30, 2_030)])
    relays = [
        OutboxRelay(
            database,
            table,
            {"issue_coupon": receiver.one("x")},
            batched={"issue_coupon": BatchDeliverer(receiver.many(name), size=50)},
            poll_seconds=0.01,
        )
        for name in ("a", "b")
    ]
    for relay in relays:
        relay.start()
    try:
        done = threading.Event()
        while not done.wait(0.05):
            if relays[0].state().undelivered == 0:
                done.set()
            assert len(receiver.calls) < 10_000
    finally:
        for relay in relays:
            relay.stop()
    assert receiver.delivered() == list(range(2_030))


def test_a_batched_kind_needs_a_single_deliverer_for_a_refused_batch(outbox: Any) -> None:
    database, table = outbox
    with pytest.raises(ValueError, match="issue_coupon"):
        OutboxRelay(database, table, {}, batched={"issue_coupon": BatchDeliverer(lambda _: None)})
    with pytest.raises(ValueError, match="at least one"):
        BatchDeliverer(lambda _: None, size=0)


def test_what_a_batch_keeps_of_its_answer_is_written_with_its_marking_delivered(outbox: Any) -> None:
    database, table = outbox
    kept = Table("kept", table.metadata, Column("n", Integer, nullable=False))
    kept.create(database.engine)
    write(database, table, *[("issue_coupon", {"n": n}) for n in range(25)])
    failing = [True]

    def answer(payloads: list[dict[str, Any]]) -> list[int]:
        return [p["n"] for p in payloads]

    def keep(connection: Any, numbers: list[int]) -> None:
        connection.execute(insert(kept), [{"n": n} for n in numbers])
        if failing[0]:
            raise RuntimeError("the database went away")

    relay = OutboxRelay(
        database,
        table,
        {"issue_coupon": lambda _: None},
        batched={"issue_coupon": BatchDeliverer(answer, size=10, keep=keep)},
    )
    with pytest.raises(RuntimeError):
        relay.deliver_due()
    # Kept if and only if marked delivered: neither happened.
    with database.snapshot() as connection:
        assert connection.execute(select(kept.c.n)).all() == []
    assert all(row.delivered_time is None for row in rows(database, table))

    # Its lease run out, the batch is delivered again and its answers kept once.
    failing[0] = False
    with database.transaction() as connection:
        connection.execute(update(table).values(lease_until=None))
    assert relay.deliver_due() == 25
    with database.snapshot() as connection:
        assert sorted(connection.execute(select(kept.c.n)).scalars()) == list(range(25))
    assert all(row.delivered_time is not None for row in rows(database, table))


def test_batches_after_an_unanswered_one_are_given_back_unsent(outbox: Any) -> None:
    database, table = outbox
    write(database, table, *[("issue_coupon", {"n": n}) for n in range(30)])
    receiver = Receiver()
    down = [True]

    def many(payloads: list[dict[str, Any]]) -> None:
        if down[0] and payloads[0]["n"] == 10:
            raise Unavailable("membership is down", reason="UNAVAILABLE")
        receiver.many("issue_coupon")(payloads)

    relay = OutboxRelay(
        database,
        table,
        {"issue_coupon": receiver.one("issue_coupon")},
        batched={"issue_coupon": BatchDeliverer(many, size=10)},
    )
    assert relay.deliver_due() == 10
    assert receiver.calls == [("issue_coupon*", list(range(10)))]
    found = rows(database, table)
    assert all(row.delivered_time is not None for row in found[:10])
    # The unanswered batch waits for its retry; the one after it was never sent, and is free.
    assert all(row.attempts == 1 and row.delivered_time is None for row in found[10:20])
    assert all(row.lease_until is None for row in found[10:])
    assert all(row.attempts == 0 and row.delivered_time is None for row in found[20:])

    down[0] = False
    with database.transaction() as connection:
        connection.execute(update(table).values(next_attempt_time=utcnow() - timedelta(seconds=1)))
    assert relay.deliver_due() == 20
    assert receiver.delivered() == list(range(30))
