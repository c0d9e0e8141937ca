"""Every service's database out of reach for a while, under a steady load of reads and writes on
all four services: the services answer UNAVAILABLE (or keep a call until the database is back, or
the caller's deadline passes), never INTERNAL or UNKNOWN, and recover by themselves once the
database returns.

On SQLite another connection holds the write lock of every service's file (BEGIN EXCLUSIVE):
readers go on, writers wait for SQLite's busy timeout and are then answered UNAVAILABLE. On
PostgreSQL the services run on a throwaway database of their own, which is closed to new
connections (CONNECTION LIMIT 0) while its open ones are terminated, then opened again.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection

from quanyu.config import SERVICE_NAMES
from quanyu.db import normalise_url
from quanyu.fulfilment.v1 import fulfilment_pb2
from quanyu.identity.v1 import identity_pb2
from quanyu.marketing.v1 import marketing_pb2, marketing_pb2_grpc
from quanyu.membership.v1 import membership_pb2
from quanyu.orders.v1 import orders_pb2
from tests.processes import poll
from tests.reliability.deployment import SQLITE, Deployment
from tests.reliability.world import SERVER_ERRORS, Background, Call, Load, Outcome, World, retrying

RECOVERY = 90.0  # how long the services may take to serve again once the database is back
# Writers on SQLite wait this long for the lock before they are answered UNAVAILABLE.
SQLITE_BUSY_SECONDS = 15.0


@dataclass
class OutageFigures:
    outages: int = 0
    calls: int = 0
    unavailable: int = 0  # answered UNAVAILABLE
    deadline_exceeded: int = 0  # the caller's deadline passed first
    server_errors: int = 0  # answered INTERNAL or UNKNOWN, or logged as unexpected
    unrecovered: int = 0  # services not serving again once the database was back
    problems: list[str] = field(default_factory=list)


@dataclass
class Cut:
    """How to take a deployment's databases away and give them back."""

    take_away: Callable[[], None]
    give_back: Callable[[], None]


def database_outage(
    d: Deployment, cut: Cut, *, outages: int, refusals: int, deadline: float
) -> OutageFigures:
    """`outages` times: cut the databases off under load until every service has felt it (with
    `refusals`, until each has answered that many calls UNAVAILABLE; with none, until its readers
    were answered and its writers held up meanwhile), then give them back and wait for every
    service to serve reads and writes again. Callers give each call `deadline` seconds."""
    figures = OutageFigures()
    w = World(d)
    workload = _Workload(d, w, deadline)
    marks = d.log_marks()
    with Load(len(workload.calls), workload.make) as load:
        for number in range(outages):
            _one_outage(d, cut, load, workload, refusals=refusals, figures=figures, number=number)
    _judge(load.calls, figures)
    d.logs_written()
    for error in d.server_errors(marks):
        figures.server_errors += 1
        figures.problems.append(f"logged: {error}")
    for service in SERVICE_NAMES:
        if not (d.alive(service) and d.serving(service)):
            figures.unrecovered += 1
            figures.problems.append(f"{service} is not serving after the outages")
    return figures


def _one_outage(
    d: Deployment,
    cut: Cut,
    load: Load,
    workload: _Workload,
    *,
    refusals: int,
    figures: OutageFigures,
    number: int,
) -> None:
    poll(lambda: workload.all_served(load.finished(), since=0.0), bool, "the load is under way")
    marks = d.log_marks()
    cut.take_away()
    cut_at = time.monotonic()
    try:
        poll(
            lambda: (
                _Workload.all_refused(d, marks, refusals) if refusals else workload.all_called(load, cut_at)
            ),
            bool,
            "every service feels the outage",
            SQLITE_BUSY_SECONDS * (4 + refusals),
        )
    finally:
        cut.give_back()
    back_at = time.monotonic()
    try:
        poll(
            lambda: workload.all_served(load.finished(), since=back_at),
            bool,
            "every service serves reads and writes again",
            RECOVERY,
        )
    except AssertionError as late:
        figures.unrecovered += 1
        figures.problems.append(f"outage {number}: {late}")
    figures.outages += 1


def _judge(calls: list[Call], figures: OutageFigures) -> None:
    for call in calls:
        outcome = call.outcome
        if outcome is None:
            continue
        figures.calls += 1
        if outcome.code == grpc.StatusCode.UNAVAILABLE:
            figures.unavailable += 1
        elif outcome.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            figures.deadline_exceeded += 1
        elif outcome.code in SERVER_ERRORS or not outcome.ok:
            figures.server_errors += outcome.code in SERVER_ERRORS
            figures.problems.append(f"{call.key}: {outcome}")


class _Workload:
    """A reader and a writer on each service, each call named `<service>:<read|write>:<n>`."""

    def __init__(self, d: Deployment, w: World, deadline: float) -> None:
        self._d, self._w, self._deadline = d, w, deadline
        self._sku = w.name("outage")
        self._store = w.store("O", 0, {self._sku: 1_000_000})
        member = w.member(w.name("outage-member"))
        self._member_id, self._customer_id = member.member_id, member.customer_id
        self._order_id = d.orders.CreateOrder(self._order("first"), metadata=w.app).order.order_id
        self._marketing = marketing_pb2_grpc.MarketingServiceStub(d.channel("marketing"))
        campaign = marketing_pb2.Campaign(
            name="Outage",
            trigger=marketing_pb2.Trigger(event=marketing_pb2.TRIGGER_EVENT_ENGAGEMENT),
            actions=[marketing_pb2.Action(add_tag="engaged")],
        )
        self._campaign_id = self._marketing.CreateCampaign(
            marketing_pb2.CreateCampaignRequest(campaign=campaign), metadata=w.ops
        ).campaign.campaign_id
        self._numbers = itertools.count()
        self.calls = [(service, kind) for service in SERVICE_NAMES for kind in ("read", "write")]

    def make(self, worker: int, n: int) -> tuple[str, Callable[[], object]]:
        service, kind = self.calls[worker]
        unique = f"{next(self._numbers)}-{uuid.uuid4().hex[:6]}"
        return f"{service}:{kind}:{unique}", self._call(service, kind, unique, n)

    def _call(self, service: str, kind: str, unique: str, n: int) -> Callable[[], object]:  # noqa: PLR0911
        d, w = self._d, self._w
        if (service, kind) == ("identity", "read"):
            customer = identity_pb2.GetCustomerRequest(customer_id=self._customer_id)
            return lambda: d.identity.GetCustomer(customer, metadata=w.service, timeout=self._deadline)
        if service == "identity":
            resolve = identity_pb2.ResolveCustomerRequest(account=w.account(w.name(f"outage-{unique}")))
            return lambda: d.identity.ResolveCustomer(resolve, metadata=w.service, timeout=self._deadline)
        if (service, kind) == ("membership", "read"):
            member = membership_pb2.GetMemberRequest(member_id=self._member_id)
            return lambda: d.membership.GetMember(member, metadata=w.service, timeout=self._deadline)
        if service == "membership":
            earn = membership_pb2.EarnPointsRequest(
                member_id=self._member_id, source_id=w.name(f"outage-{unique}"), spend_cents=100
            )
            return lambda: d.membership.EarnPoints(earn, metadata=w.service, timeout=self._deadline)
        if (service, kind) == ("fulfilment", "read"):
            stock = fulfilment_pb2.GetStockRequest(store_id=self._store, skus=[self._sku])
            return lambda: d.fulfilment.GetStock(stock, metadata=w.service, timeout=self._deadline)
        if service == "fulfilment":
            levels = [fulfilment_pb2.SkuQuantity(sku=f"{self._sku}-{n % 7}", on_hand=n)]
            restock = fulfilment_pb2.SetStockRequest(store_id=self._store, levels=levels)
            return lambda: d.fulfilment.SetStock(restock, metadata=w.service, timeout=self._deadline)
        if (service, kind) == ("marketing", "read"):
            campaign = marketing_pb2.GetCampaignRequest(campaign_id=self._campaign_id)
            return lambda: self._marketing.GetCampaign(campaign, metadata=w.ops, timeout=self._deadline)
        if service == "marketing":
            engaged = marketing_pb2.Event(
                event_id=w.name(f"outage-{unique}")[:64],
                engagement=marketing_pb2.Engagement(member_id=self._member_id),
            )
            ingest = marketing_pb2.IngestEventsRequest(events=[engaged])
            return lambda: self._marketing.IngestEvents(ingest, metadata=w.service, timeout=self._deadline)
        if kind == "read":
            order = orders_pb2.GetOrderRequest(order_id=self._order_id)
            return lambda: d.orders.GetOrder(order, metadata=w.app, timeout=self._deadline)
        create = self._order(unique)
        return lambda: d.orders.CreateOrder(create, metadata=w.app, timeout=self._deadline)

    def _order(self, unique: str) -> orders_pb2.CreateOrderRequest:
        return self._w.delivery(
            self._w.name(f"outage-order-{unique}"), self._w.name("outage-member"), {self._sku: 1}
        )

    def all_served(self, finished: list[Call], *, since: float) -> bool:
        """Every reader and writer has had a call that started after `since` answered OK."""
        served = {
            tuple(c.key.split(":")[:2])
            for c in finished
            if c.started_at > since and c.outcome and c.outcome.ok
        }
        return served >= set(self.calls)

    def all_called(self, load: Load, since: float) -> bool:
        """Every reader has been answered during the outage and every writer is held up by it."""
        read = {c.key.split(":")[0] for c in load.finished() if c.ended_at > since and ":read:" in c.key}
        held = {c.key.split(":")[0] for c in load.in_flight() if c.started_at > since and ":write:" in c.key}
        return read >= set(SERVICE_NAMES) and held >= set(SERVICE_NAMES)

    @staticmethod
    def all_refused(d: Deployment, marks: dict[Path, int], at_least: int) -> bool:
        """Every service has answered `at_least` calls UNAVAILABLE since `marks`."""
        refused = Counter(e.get("service") for e in d.log_events(marks) if e.get("code") == "UNAVAILABLE")
        return all(refused[service] >= at_least for service in SERVICE_NAMES)


# --- the two ways to cut a database off --------------------------------------------------------


@contextmanager
def sqlite_cut(d: Deployment) -> Iterator[Cut]:
    """Every service's SQLite file write-locked by another connection while cut off."""
    assert d.backend == SQLITE
    stack = ExitStack()

    def take_away() -> None:
        for service in SERVICE_NAMES:
            stack.enter_context(d.writes_held(service))

    try:
        yield Cut(take_away, stack.close)
    finally:
        stack.close()


@contextmanager
def postgres_cut(admin_url: str, database: str) -> Iterator[Cut]:
    """The throwaway database closed to new connections and its open ones terminated."""
    admin = create_engine(normalise_url(admin_url), isolation_level="AUTOCOMMIT")

    def take_away() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{database}" CONNECTION LIMIT 0'))
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": database},
            )

    def give_back() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{database}" CONNECTION LIMIT -1'))

    try:
        yield Cut(take_away, give_back)
    finally:
        give_back()
        admin.dispose()


# --- a transaction PostgreSQL aborts to break a deadlock ----------------------------------------


def deadlock_victim(d: Deployment) -> tuple[Outcome[object], Outcome[object]]:
    """A CreateOrder whose transaction PostgreSQL aborts to break a deadlock: (its answer, the
    answer to a retry with the same request id).

    Another connection locks `order_lines`, so orders' transaction, once it has written its row
    in `orders`, waits there; then it asks for `orders` too. The transaction that waited first
    finds the deadlock first and gives way: orders'.
    """
    w = World(d)
    sku = w.name("deadlock")
    w.store("D", 0, {sku: 10})
    request = w.delivery(w.name("deadlock"), w.name("deadlock-buyer"), {sku: 1})
    engine = create_engine(normalise_url(d.database_urls["orders"]))
    try:
        with engine.connect() as connection:
            connection.begin()
            connection.execute(text('LOCK TABLE "order_lines" IN EXCLUSIVE MODE'))
            with Background(lambda: d.orders.CreateOrder(request, metadata=w.app, timeout=60)) as pending:
                poll(lambda: _waits_for(connection, "order_lines"), bool, "orders waits for order_lines")
                connection.execute(text('LOCK TABLE "orders" IN EXCLUSIVE MODE'))
                connection.rollback()
                first: Outcome[object] = pending.outcome()
    finally:
        engine.dispose()
    retried, _ = retrying(lambda: d.orders.CreateOrder(request, metadata=w.app, timeout=60))
    return first, retried


def _waits_for(connection: Connection, table: str) -> bool:
    waiting = connection.execute(
        text("SELECT count(*) FROM pg_locks WHERE relation = CAST(:table AS regclass) AND NOT granted"),
        {"table": table},
    ).scalar_one()
    return bool(waiting)
