"""Marketing's figures: how soon an event-triggered coupon reaches the member while orders are
placed, what marketing adds to the cost of an order, and how fast a scheduled campaign grants a
large audience, all five services running as real processes on SQLite.

1. Event to grant under order load. Identity, membership, fulfilment, marketing and orders start
   in a temporary var dir on free ports of 127.0.0.1 (bench.orders' deployment), a few stores are
   loaded and every customer's first order placed before a RUNNING campaign triggered by
   ORDER_COMPLETED that issues a coupon is started. Then `--concurrency` threads place in-store
   till sales (which complete at once, so each one is an ORDER_COMPLETED for marketing) back to
   back. Latency, for every order placed while marketing ran: from the moment the client's
   CreateOrder call returned (wall clock) to the create time of that order's coupon in
   membership's coupons table (read from its database after the outboxes drained; the coupon is
   found through marketing's grant for the order's event, whose key is the coupon's request id).
   The create time is taken inside membership's transaction, just before it commits, so a
   coupon becomes visible a millisecond or so after the time used. Each order's way is also
   cut into hops (HOPS) by marketing's grant time and the time orders marked its event
   delivered, with their percentiles. `--rate` places the orders at that many a second across
   the threads, to time event to grant below the machine's ceiling as well as at it.
2. What marketing costs the order path: the same load in alternating phases with marketing
   running and with it stopped (A B A B), each process's CPU (user and system time from /proc)
   per order placed. With marketing stopped, orders', membership's and identity's events for it
   wait in their outboxes; before each phase with marketing the outboxes are let drain, so no
   backlog is counted in either phase, and after it too, with marketing still running, so that
   no grant of a phase with marketing waits out a phase without it: the latency in 1 includes
   the backlog the load leaves behind, never the minutes marketing was stopped on purpose.
3. A scheduled ONCE campaign with one coupon action over `--members` members, on a fresh
   platform for each size: members are seeded by bulk SQL into membership's members table and
   marketing's member profiles (real rows both services accept), then the campaign is created
   and started over gRPC and timed from StartCampaign to the last coupon present in membership's
   coupons table. In the largest run marketing is killed with SIGKILL once when `--kill-at` of
   the coupons are in, and started again; at the end it checks that the coupons in membership
   for the campaign equal marketing's GRANTED decisions, that no member has two, and that none
   was skipped (every audience member decided; granted = audience - held out). Beside the time:
   when the last member was decided and how many coupons had reached membership by then (the
   relay's lag behind the run), the CPU seconds marketing and membership spent over the run, and
   the machine's load average when it began and ended, without which no two runs compare.

    .venv/bin/python -m bench.marketing [--members 100000,1000000] [--seconds 10]
        [--concurrency 8] [--rate 0] [--customers 300] [--holdout 5] [--kill-at 0.4] [--no-kill]

It talks only to 127.0.0.1, bounds every wait, and removes its processes and temporary
directories when it ends.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import (
    CTE,
    ColumnElement,
    Engine,
    Integer,
    MetaData,
    create_engine,
    event,
    func,
    literal,
    null,
    select,
    text,
)
from sqlalchemy.engine import Connection

from bench.harness import CALL_TIMEOUT_S, Tally, cpu_seconds, cpu_seconds_if_alive, hammer
from bench.orders import SKUS, Deployment, deployment, errors, load_stores, table
from quanyu.auth import Principal, Role
from quanyu.common.v1 import common_pb2
from quanyu.db import UtcDateTime
from quanyu.marketing.v1 import marketing_pb2, marketing_pb2_grpc
from quanyu.orders.v1 import orders_pb2, orders_pb2_grpc
from quanyu.outbox import outbox_table
from services.marketing.domain.validation import MAX_PER_MEMBER
from services.marketing.storage.tables import grants, member_profiles
from services.membership.storage.tables import coupons, members
from services.orders.domain.events import MARKETING_EVENT

# Started in this order: marketing calls membership and fulfilment, orders calls the rest.
SERVICES = ("identity", "membership", "fulfilment", "marketing", "orders")
# The processes whose CPU an order costs; marketing's own is shown beside them.
ORDER_PATH = ("identity", "membership", "fulfilment", "orders")
SETTINGS = {
    # A started ONCE campaign is looked for every second rather than every 30.
    "QUANYU_MARKETING_RUN_INTERVAL_SECONDS": "1",
    # A run whose replica was killed is taken over after this long without a page committed.
    "QUANYU_MARKETING_RUN_LEASE_SECONDS": "10",
}
# Orders' outbox, read for when each event was marked delivered.
ORDERS_OUTBOX = outbox_table(MetaData())
UNIT_PRICE = 2_500
SEED_BATCH = 100_000
# The processes whose CPU a scheduled run is reported with.
CPU_OF = ("marketing", "membership")
DRAIN_TIMEOUT_S = 300.0
COUPON = marketing_pb2.CouponAction(discount_cents=1_000, min_spend_cents=5_000, valid_days=30)


def ops(running: Deployment) -> tuple[tuple[str, str]]:
    return running.token(Principal(Role.OPS, "bench-marketing"))


def engine(running: Deployment, service: str) -> Engine:
    made = create_engine(f"sqlite:///{running.var / f'{service}.db'}", connect_args={"timeout": 60})

    @event.listens_for(made, "connect")
    def _wal(connection: object, _: object) -> None:
        connection.execute("PRAGMA busy_timeout = 60000")  # type: ignore[attr-defined]

    return made


def undelivered(running: Deployment) -> int:
    """Effects still waiting in any service's outbox (refused ones count as done)."""
    waiting = 0
    for service in SERVICES:
        made = engine(running, service)
        try:
            with made.connect() as connection:
                has = connection.execute(
                    text("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'outbox'")
                ).scalar_one()
                if has:
                    waiting += connection.execute(
                        text("SELECT count(*) FROM outbox WHERE delivered_time IS NULL AND failed = 0")
                    ).scalar_one()
        finally:
            made.dispose()
    return waiting


def drain(running: Deployment) -> float:
    """Seconds until every outbox is empty; RuntimeError past DRAIN_TIMEOUT_S."""
    began = time.monotonic()
    while (left := undelivered(running)) > 0:
        if time.monotonic() - began > DRAIN_TIMEOUT_S:
            raise RuntimeError(f"{left} effects still undelivered after {DRAIN_TIMEOUT_S:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - began


def start_campaign(running: Deployment, campaign: marketing_pb2.Campaign) -> str:
    with grpc.insecure_channel(running.address("marketing")) as channel:
        marketing = marketing_pb2_grpc.MarketingServiceStub(channel)
        made = marketing.CreateCampaign(
            marketing_pb2.CreateCampaignRequest(campaign=campaign, request_id=f"bench-{uuid.uuid4().hex}"),
            metadata=ops(running),
            timeout=CALL_TIMEOUT_S,
        ).campaign
        marketing.StartCampaign(
            marketing_pb2.StartCampaignRequest(campaign_id=made.campaign_id),
            metadata=ops(running),
            timeout=CALL_TIMEOUT_S,
        )
    return str(made.campaign_id)


# --- 1 and 2: event to grant, and what marketing costs an order --------------------------------


def phone(number: int) -> str:
    return f"+86 139 {number // 10_000 % 10_000:04d} {number % 10_000:04d}"


@dataclass
class Phase:
    marketing: bool
    tally: Tally
    cpu_ms_per_order: dict[str, float]
    # (order id, wall-clock time its CreateOrder returned) of every order placed.
    placed: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class EventResult:
    phases: list[Phase]
    latencies_ms: list[float]
    without_coupon: int
    concurrency: int
    customers: int
    rate: float | None = None
    # Each hop's waits, ms, for the orders timed: see HOPS.
    hops_ms: dict[str, list[float]] = field(default_factory=dict)


def till_sales(running: Deployment, stores: int, customers: int) -> Callable[[str, int], tuple[str, float]]:
    """A call placing one in-store sale (request id, customer number), answering the order's id
    and the wall-clock time the call returned. Its channel is shared by every thread.

    A customer's first sale names them by phone, which creates the customer and member; later
    ones name them by customer id, as a till does once it knows the customer (phone look-ups are
    rationed per caller)."""
    token = ops(running)
    channel = grpc.insecure_channel(running.address("orders"))
    orders = orders_pb2_grpc.OrderServiceStub(channel)
    known: dict[int, str] = {}

    def place(request_id: str, customer: int) -> tuple[str, float]:
        number = customer % customers
        request = orders_pb2.CreateOrderRequest(
            request_id=request_id,
            channel=common_pb2.CHANNEL_STORE_POS,
            fulfilment_type=common_pb2.FULFILMENT_TYPE_IN_STORE,
            lines=[common_pb2.Line(sku=SKUS[customer % len(SKUS)], quantity=1, unit_price_cents=UNIT_PRICE)],
            origin_store_id=f"SH-{customer % stores:04d}",
        )
        if number in known:
            request.customer_id = known[number]
        else:
            request.phone = phone(number)
        order = orders.CreateOrder(request, metadata=token, timeout=CALL_TIMEOUT_S).order
        returned = time.time()
        if order.status != orders_pb2.ORDER_STATUS_COMPLETED:
            raise RuntimeError(f"a till sale came back {orders_pb2.OrderStatus.Name(order.status)}")
        known[number] = order.customer_id
        return str(order.order_id), returned

    return place


def first_sale(place: Callable[[str, int], tuple[str, float]], customer: int) -> None:
    """The customer's first sale, named by phone: a caller's phone look-ups are rationed (about
    20 a second), so one refused for that is placed again once the quota has room."""
    for _ in range(600):
        try:
            place(f"bench-first-{customer}", customer)
            return
        except grpc.RpcError as error:
            if error.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            time.sleep(0.1)
    raise RuntimeError(f"customer {customer}: phone look-ups still over quota after a minute")


def load_phase(
    running: Deployment,
    place: Callable[[str, int], tuple[str, float]],
    *,
    marketing: bool,
    seconds: float,
    concurrency: int,
    rate: float | None = None,
) -> Phase:
    run = uuid.uuid4().hex[:8]
    placed: list[list[tuple[str, float]]] = [[] for _ in range(concurrency)]

    def call(thread: int, sequence: int) -> None:
        placed[thread].append(place(f"bench-{run}-{thread}-{sequence}", thread * 7919 + sequence * 31))

    watched = ORDER_PATH + (("marketing",) if marketing else ())
    pids = {service: running.processes[service].pid for service in watched}
    before = {service: cpu_seconds(pid) for service, pid in pids.items()}
    tally = hammer(call, concurrency, seconds, refusals=(), rate=rate)
    spent = {service: cpu_seconds(pid) - before[service] for service, pid in pids.items()}
    per_order = {s: 1000 * used / tally.calls if tally.calls else math.nan for s, used in spent.items()}
    return Phase(marketing, tally, per_order, [p for own in placed for p in own])


def coupon_times(running: Deployment, campaign_id: str) -> dict[str, datetime]:
    """The create time of the campaign's coupon for each order, by order id."""
    marketing, membership = engine(running, "marketing"), engine(running, "membership")
    try:
        with marketing.connect() as connection:
            keys = dict(
                connection.execute(
                    select(grants.c.grant_key, grants.c.occurrence_id).where(
                        grants.c.campaign_id == campaign_id, grants.c.outcome == "GRANTED"
                    )
                ).all()
            )
        with membership.connect() as connection:
            made = connection.execute(
                select(coupons.c.request_id, coupons.c.create_time).where(
                    coupons.c.campaign_id == campaign_id
                )
            ).all()
    finally:
        marketing.dispose()
        membership.dispose()
    # The occurrence of an order's event: "event:orders/<order id>/completed".
    found: dict[str, datetime] = {}
    for request_id, create_time in made:
        # The coupon's request id is its action's key: "<grant key>.<action index>.<kind>".
        occurrence = keys.get(request_id.split(".", 1)[0], "")
        if occurrence.startswith("event:orders/"):
            found[occurrence.split("/")[1]] = create_time
    return found


# Where an order's event waits on its way to a coupon, each hop from the end of the one before:
HOPS = (
    # from CreateOrder returning to marketing's transaction for it beginning (the grant time): in
    # orders' outbox until its marketing lane leased it, and the IngestEvents call's way there
    "orders outbox → marketing ingest",
    # from the grant time to orders marking the event delivered: the rest of the ingest call
    # (marketing's transaction) and orders' write marking its batch delivered
    "ingest call → marked delivered in orders",
    # from the grant time to the coupon's create time in membership: marketing's commit, the
    # wait in marketing's outbox and the IssueCoupon call's way into membership's transaction
    "marketing outbox → coupon in membership",
)


def hop_times(running: Deployment, campaign_id: str) -> dict[str, tuple[float, float, float]]:
    """For each order whose coupon was made, by order id: (grant time, time orders marked its
    event delivered, coupon create time), seconds since the epoch, from the three databases."""
    marketing, membership, orders = (engine(running, s) for s in ("marketing", "membership", "orders"))
    try:
        with marketing.connect() as connection:
            granted = {
                key: (occurrence, at)
                for key, occurrence, at in connection.execute(
                    select(grants.c.grant_key, grants.c.occurrence_id, grants.c.grant_time).where(
                        grants.c.campaign_id == campaign_id, grants.c.outcome == "GRANTED"
                    )
                ).all()
            }
        with membership.connect() as connection:
            made = connection.execute(
                select(coupons.c.request_id, coupons.c.create_time).where(
                    coupons.c.campaign_id == campaign_id
                )
            ).all()
        with orders.connect() as connection:
            delivered: dict[str, datetime] = {}
            for payload, at in connection.execute(
                select(ORDERS_OUTBOX.c.payload, ORDERS_OUTBOX.c.delivered_time).where(
                    ORDERS_OUTBOX.c.kind == MARKETING_EVENT, ORDERS_OUTBOX.c.delivered_time.is_not(None)
                )
            ).all():
                event = json.loads(payload)
                delivered[event.get("event_id") or event.get("eventId") or ""] = at
    finally:
        marketing.dispose()
        membership.dispose()
        orders.dispose()
    found: dict[str, tuple[float, float, float]] = {}
    for request_id, create_time in made:
        occurrence, grant_time = granted.get(request_id.split(".", 1)[0], ("", None))
        if grant_time is None or not occurrence.startswith("event:orders/"):
            continue
        order_id = occurrence.split("/")[1]
        marked = delivered.get(f"orders/{order_id}/completed")
        if marked is not None:
            found[order_id] = (grant_time.timestamp(), marked.timestamp(), create_time.timestamp())
    return found


def timed(
    phases: Sequence[Phase], made: dict[str, datetime], times: dict[str, tuple[float, float, float]]
) -> tuple[list[float], int, dict[str, list[float]]]:
    """Event to grant of every order placed while marketing ran, ms; how many orders have no
    coupon; and each hop's share of the way (HOPS), ms, for the orders whose hops were found."""
    latencies, missing = [], 0
    hops: dict[str, list[float]] = {hop: [] for hop in HOPS}
    for phase in phases:
        if not phase.marketing:
            continue
        for order_id, returned in phase.placed:
            created = made.get(order_id)
            if created is None:
                missing += 1
            else:
                latencies.append(1000 * (created.timestamp() - returned))
            if order_id in times:
                granted, marked, coupon = times[order_id]
                for hop, ms in zip(
                    HOPS,
                    (1000 * (granted - returned), 1000 * (marked - granted), 1000 * (coupon - granted)),
                    strict=True,
                ):
                    hops[hop].append(ms)
    return latencies, missing, hops


def event_bench(
    *, seconds: float, concurrency: int, customers: int, stores: int, rounds: int, rate: float | None = None
) -> EventResult:
    print("event to grant: starting the five services", file=sys.stderr, flush=True)
    with deployment(None, SERVICES, **SETTINGS) as running:
        load_stores(running, stores, seed=7)
        place = till_sales(running, stores, customers)
        # Every customer and member exists, and marketing knows them, before the campaign starts.
        with ThreadPoolExecutor(concurrency) as pool:
            firsts = [pool.submit(first_sale, place, n) for n in range(customers)]
            for first in firsts:
                first.result(timeout=CALL_TIMEOUT_S * customers)
        drain(running)
        campaign_id = start_campaign(
            running,
            marketing_pb2.Campaign(
                name="A coupon for every purchase",
                trigger=marketing_pb2.Trigger(event=marketing_pb2.TRIGGER_EVENT_ORDER_COMPLETED),
                actions=[marketing_pb2.Action(issue_coupon=COUPON)],
                # Every purchase, as often as the member buys within the run.
                limits=marketing_pb2.Limits(per_member_max=MAX_PER_MEMBER),
            ),
        )
        # A short warm-up, not counted.
        load_phase(running, place, marketing=True, seconds=min(2.0, seconds / 3), concurrency=concurrency)
        drain(running)
        phases: list[Phase] = []
        for _ in range(rounds):
            for with_marketing in (True, False):
                if with_marketing and running.processes["marketing"].poll() is not None:
                    running.start("marketing")
                    print(f"  marketing back, outboxes drained in {drain(running):.1f} s", file=sys.stderr)
                elif not with_marketing:
                    running.processes["marketing"].send_signal(signal.SIGTERM)
                    running.processes["marketing"].wait(timeout=60)
                phase = load_phase(
                    running,
                    place,
                    marketing=with_marketing,
                    seconds=seconds,
                    concurrency=concurrency,
                    rate=rate,
                )
                which = "with" if with_marketing else "without"
                print(
                    f"  {which} marketing: {phase.tally.per_second:.1f} orders/s",
                    file=sys.stderr,
                    flush=True,
                )
                phases.append(phase)
                if with_marketing:
                    drain(running)
        running.start("marketing")
        drain(running)
        made = coupon_times(running, campaign_id)
        times = hop_times(running, campaign_id)
    latencies, missing, hops = timed(phases, made, times)
    return EventResult(phases, latencies, missing, concurrency, customers, rate, hops)


# --- 3: a scheduled campaign over a large audience ---------------------------------------------


@dataclass
class RunResult:
    members: int
    seconds: float
    granted: int
    held_out: int
    decided_members: int
    coupons: int
    members_with_two: int
    killed_at: int | None  # coupons in membership when marketing was killed
    restart_s: float  # from the kill to marketing serving again
    decided_s: float  # from StartCampaign to the last member decided
    coupons_when_decided: int  # coupons in membership by then
    cpu_s: dict[str, float]  # CPU seconds of marketing and membership over the timed run
    load: tuple[float, float]  # the machine's 1-minute load average when the run began and ended


def numbered(first: int, last: int) -> CTE:
    """The numbers first .. last - 1 as rows of one column n, made by SQLite itself."""
    numbers = select(literal(first, Integer).label("n")).cte("numbers", recursive=True)
    return numbers.union_all(select(numbers.c.n + 1).where(numbers.c.n + 1 < last))


def seed(running: Deployment, count: int) -> None:
    """`count` members in membership's members table and in marketing's member profiles.

    Each batch is one INSERT ... SELECT over numbers SQLite counts out itself: building a million
    rows in Python and binding them one by one took 15 minutes, most of a 1,000,000-member session.
    Batches keep each service's writer free between them, as the services are running."""
    now = literal(datetime.now(UTC) - timedelta(days=1), UtcDateTime())
    membership, marketing = engine(running, "membership"), engine(running, "marketing")
    try:
        for first in range(0, count, SEED_BATCH):
            n = numbered(first, min(first + SEED_BATCH, count)).c.n
            member_id = func.printf("mem_bench_%08d", n)
            customer_id = func.printf("cus_bench_%08d", n)
            member_row: dict[str, ColumnElement[Any]] = {
                "member_id": member_id,
                "customer_id": customer_id,
                "root_member_id": member_id,
                "tier": literal("GOLD"),
                "home_store_id": literal("SH-0000"),
                "guide_id": literal(""),
                "enrolled_channel": literal("CHANNEL_APP"),
                "enroll_time": now,
                "stage": literal(3),  # PURCHASE
                "interest_time": now,
                "purchase_time": now,
                "loyalty_time": null(),
                "last_purchase_time": now,
                "referrer_member_id": literal(""),
                "points_balance": literal(0),
                "lifetime_spend_cents": literal(0),
                "merged": literal(False),
                "update_time": now,
                "birthday": literal(""),
            }
            profile_row = profile_of_number(n, now)
            for made, table_, row in (
                (membership, members, member_row),
                (marketing, member_profiles, profile_row),
            ):
                with made.begin() as connection:
                    connection.execute(
                        table_.insert().from_select(
                            list(row), select(*(value.label(name) for name, value in row.items()))
                        )
                    )
    finally:
        membership.dispose()
        marketing.dispose()


def profile_of_number(n: ColumnElement[Any], at: ColumnElement[Any]) -> dict[str, ColumnElement[Any]]:
    """Marketing's member profile of the bench's member number `n`, as columns of a select:
    a GOLD member in the PURCHASE stage of store SH-0000, as membership's seeded member is."""
    return {
        "member_id": func.printf("mem_bench_%08d", n),
        "customer_id": func.printf("cus_bench_%08d", n),
        "tier": literal("GOLD"),
        "stage": literal("PURCHASE"),
        "tags": literal(""),
        "home_store_id": literal("SH-0000"),
        "guide_id": literal(""),
        "display_name": literal(""),
        "points_balance": literal(0),
        "time_zone": literal(""),
        "birthday": literal(""),
        "accounts": literal("{}"),
        "survivor_id": literal(""),
        "last_order_time": null(),
        "first_purchase_time": null(),
        "create_time": at,
        "update_time": at,
    }


def outcomes_of(connection: Connection, campaign_id: str) -> dict[str, int]:
    """The campaign's decisions so far in marketing's grants, by outcome."""
    return dict(
        connection.execute(
            select(grants.c.outcome, func.count())
            .where(grants.c.campaign_id == campaign_id)
            .group_by(grants.c.outcome)
        ).all()
    )


def coupons_of(connection: Connection, campaign_id: str) -> int:
    """The campaign's coupons in membership's coupons table."""
    return int(
        connection.execute(
            select(func.count()).select_from(coupons).where(coupons.c.campaign_id == campaign_id)
        ).scalar_one()
    )


def progress(running: Deployment, campaign_id: str) -> tuple[int, int, int]:
    """(members decided, of them granted, coupons in membership) for the campaign so far."""
    marketing, membership = engine(running, "marketing"), engine(running, "membership")
    try:
        with marketing.connect() as connection:
            decided = outcomes_of(connection, campaign_id)
        with membership.connect() as connection:
            issued = coupons_of(connection, campaign_id)
    finally:
        marketing.dispose()
        membership.dispose()
    return sum(decided.values()), decided.get("GRANTED", 0), issued


class CpuWatch:
    """CPU seconds of the CPU_OF processes since it was made: each process's first and last
    reading, so a marketing killed keeps what it spent and the one started after it counts from
    zero."""

    def __init__(self, running: Deployment) -> None:
        self._running = running
        self._seen: dict[int, tuple[str, float, float]] = {}
        for service in CPU_OF:
            pid = running.processes[service].pid
            at = cpu_seconds(pid)
            self._seen[pid] = (service, at, at)

    def read(self) -> None:
        for service in CPU_OF:
            pid = self._running.processes[service].pid
            now = cpu_seconds_if_alive(pid)
            if now is not None:
                first = self._seen[pid][1] if pid in self._seen else 0.0
                self._seen[pid] = (service, first, now)

    def spent(self) -> dict[str, float]:
        return {
            service: sum(last - first for name, first, last in self._seen.values() if name == service)
            for service in CPU_OF
        }


def scheduled_run(
    count: int, *, holdout: int, kill_at: float | None, timeout_s: float, page_size: int
) -> RunResult:
    print(f"scheduled run, {count:,} members: starting the five services", file=sys.stderr, flush=True)
    pages = {"QUANYU_MARKETING_RUN_PAGE_SIZE": str(page_size)} if page_size else {}
    with deployment(None, SERVICES, **SETTINGS, **pages) as running:
        load_stores(running, 1, seed=7)
        began = time.perf_counter()
        seed(running, count)
        print(f"  seeded in {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
        start = Timestamp()
        start.FromDatetime(datetime.now(UTC) + timedelta(seconds=1))
        campaign_id = start_campaign(
            running,
            marketing_pb2.Campaign(
                name="Spring coupon",
                trigger=marketing_pb2.Trigger(
                    schedule=marketing_pb2.Schedule(kind=marketing_pb2.SCHEDULE_KIND_ONCE, local_time="10:00")
                ),
                actions=[marketing_pb2.Action(issue_coupon=COUPON)],
                holdout_percent=holdout,
                start_time=start,
            ),
        )
        began = time.perf_counter()
        killed_at, restart_s = None, math.nan
        decided_s, when_decided = math.nan, 0
        load_began = os.getloadavg()[0]
        cpu = CpuWatch(running)
        while True:
            time.sleep(2.0)
            cpu.read()
            decided, granted, issued = progress(running, campaign_id)
            elapsed = time.perf_counter() - began
            if decided >= count and math.isnan(decided_s):
                decided_s, when_decided = elapsed, issued
            print(
                f"  {elapsed:6.0f} s: {decided:,} decided, {granted:,} granted, {issued:,} coupons",
                file=sys.stderr,
                flush=True,
            )
            if decided >= count and issued >= granted:
                seconds = elapsed
                break
            if elapsed > timeout_s:
                raise RuntimeError(
                    f"not done after {timeout_s:.0f} s: {decided:,} decided, {issued:,} coupons"
                )
            if kill_at is not None and killed_at is None and issued >= kill_at * count:
                killed_at = issued
                cpu.read()
                marketing = running.processes["marketing"]
                marketing.kill()  # SIGKILL: no page, relay batch or lease given back
                marketing.wait(timeout=60)
                restarted = time.perf_counter()
                running.start("marketing")
                restart_s = time.perf_counter() - restarted
                print(
                    f"  marketing killed at {issued:,} coupons and started again", file=sys.stderr, flush=True
                )
        marketing_db, membership_db = engine(running, "marketing"), engine(running, "membership")
        try:
            with marketing_db.connect() as connection:
                outcomes = outcomes_of(connection, campaign_id)
                decided_members = connection.execute(
                    select(func.count(grants.c.member_id.distinct())).where(
                        grants.c.campaign_id == campaign_id
                    )
                ).scalar_one()
            with membership_db.connect() as connection:
                issued = coupons_of(connection, campaign_id)
                twice = connection.execute(
                    select(func.count()).select_from(
                        select(coupons.c.member_id)
                        .where(coupons.c.campaign_id == campaign_id)
                        .group_by(coupons.c.member_id)
                        .having(func.count() > 1)
                        .subquery()
                    )
                ).scalar_one()
        finally:
            marketing_db.dispose()
            membership_db.dispose()
    return RunResult(
        members=count,
        seconds=seconds,
        granted=outcomes.get("GRANTED", 0),
        held_out=outcomes.get("HELD_OUT", 0),
        decided_members=decided_members,
        coupons=issued,
        members_with_two=twice,
        killed_at=killed_at,
        restart_s=restart_s,
        decided_s=decided_s,
        coupons_when_decided=when_decided,
        cpu_s=cpu.spent(),
        load=(load_began, os.getloadavg()[0]),
    )


# --- printing ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def report_events(result: EventResult) -> str:
    with_phases = [p for p in result.phases if p.marketing]
    latency = table(
        ["event to grant", "orders/s", "orders timed", "p50 ms", "p99 ms", "max ms", "without a coupon"],
        [
            [
                "ORDER_COMPLETED → coupon in membership",
                f"{mean([p.tally.per_second for p in with_phases]):.1f}",
                f"{len(result.latencies_ms):,}",
                f"{percentile(result.latencies_ms, 50):.0f}",
                f"{percentile(result.latencies_ms, 99):.0f}",
                f"{max(result.latencies_ms, default=math.nan):.0f}",
                f"{result.without_coupon}",
            ]
        ],
    )
    hops = table(
        ["hop (each order's event)", "orders", "p50 ms", "p90 ms", "p99 ms", "max ms"],
        [
            [
                hop,
                f"{len(waits):,}",
                *(f"{percentile(waits, q):.0f}" for q in (50, 90, 99)),
                f"{max(waits, default=math.nan):.0f}",
            ]
            for hop, waits in result.hops_ms.items()
        ],
    )
    rows = []
    for number, phase in enumerate(result.phases, 1):
        path = sum(phase.cpu_ms_per_order[s] for s in ORDER_PATH)
        rows.append(
            [
                f"{number}. {'with' if phase.marketing else 'without'} marketing",
                f"{phase.tally.per_second:.1f}",
                f"{phase.tally.percentile_ms(50):.1f}",
                f"{phase.tally.percentile_ms(99):.1f}",
                *(f"{phase.cpu_ms_per_order[s]:.2f}" for s in ORDER_PATH),
                f"{path:.2f}",
                f"{phase.cpu_ms_per_order['marketing']:.2f}" if phase.marketing else "-",
                errors(phase.tally),
                f"{phase.tally.machine_busy:.0%}",
            ]
        )
    for label, marketing in (("mean with", True), ("mean without", False)):
        chosen = [p for p in result.phases if p.marketing is marketing]
        rows.append(
            [
                label,
                f"{mean([p.tally.per_second for p in chosen]):.1f}",
                "",
                "",
                *(f"{mean([p.cpu_ms_per_order[s] for p in chosen]):.2f}" for s in ORDER_PATH),
                f"{mean([sum(p.cpu_ms_per_order[s] for s in ORDER_PATH) for p in chosen]):.2f}",
                f"{mean([p.cpu_ms_per_order['marketing'] for p in chosen]):.2f}" if marketing else "-",
                "",
                "",
            ]
        )
    cpu = table(
        [
            "phase",
            "orders/s",
            "p50 ms",
            "p99 ms",
            *ORDER_PATH,
            "order path",
            "marketing",
            "errors",
            "machine busy",
        ],
        rows,
    )
    pace = f"at {result.rate:g} orders/s" if result.rate else "as fast as they are answered"
    heading = (
        f"In-store till sales (complete at once), {result.concurrency} threads {pace}, {result.customers}"
        " customers; a RUNNING campaign on ORDER_COMPLETED issues a coupon for each."
    )
    note = (
        "CPU per order placed, ms: each process's user and system time over the phase (/proc/PID/stat)"
        " per order; the order path is identity, membership, fulfilment and orders."
    )
    return "\n\n".join([heading, latency, hops, note, cpu])


def report_runs(results: Sequence[RunResult]) -> str:
    rows = [
        [
            f"{r.members:,}",
            f"{r.seconds:.0f}",
            f"{r.granted / r.seconds:,.0f}",
            f"{r.granted:,}",
            f"{r.held_out:,}",
            f"{r.coupons:,}",
            f"{r.members_with_two}",
            f"{r.members - r.decided_members + (r.members - r.held_out - r.granted)}",
            f"at {r.killed_at:,} coupons, back in {r.restart_s:.1f} s" if r.killed_at is not None else "-",
            f"{r.decided_s:.0f}",
            f"{r.coupons_when_decided:,}",
            f"{r.cpu_s['marketing']:.0f} + {r.cpu_s['membership']:.0f}",
            f"{r.load[0]:.1f} to {r.load[1]:.1f}",
        ]
        for r in results
    ]
    heading = (
        "A scheduled ONCE campaign, one coupon action, SQLite, all five services: seconds from"
        " StartCampaign to the last coupon in membership"
    )
    return "\n\n".join(
        [
            heading,
            table(
                [
                    "members",
                    "seconds",
                    "grants/s",
                    "granted",
                    "held out",
                    "coupons in membership",
                    "members with two",
                    "skipped",
                    "marketing killed",
                    "all decided at s",
                    "coupons by then",
                    "CPU s marketing + membership",
                    "load average",
                ],
                rows,
            ),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.marketing", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--members",
        default="100000,1000000",
        help="audience sizes of the scheduled runs, comma-separated; 0 for none (default 100000,1000000)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=10.0,
        help="seconds per load phase; 0 for no load phases (default 10)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="with/without pairs of load phases (default 2)")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="client threads placing orders (default 8)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="orders a second the threads place together in the load phases; 0 for flat out (default)",
    )
    parser.add_argument("--customers", type=int, default=300, help="distinct customers (default 300)")
    parser.add_argument("--stores", type=int, default=20, help="stores with tills (default 20)")
    parser.add_argument(
        "--holdout", type=int, default=5, help="holdout percent of the scheduled runs (default 5)"
    )
    parser.add_argument(
        "--kill-at",
        type=float,
        default=0.4,
        help="share of coupons in at which the largest run kills marketing",
    )
    parser.add_argument("--no-kill", action="store_true", help="never kill marketing")
    parser.add_argument(
        "--page-size", type=int, default=0, help="members per page of a run (default: marketing's)"
    )
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds a scheduled run may take at most"
    )
    args = parser.parse_args(argv)
    # Stopped with SIGTERM, it still stops the services it started and removes their files.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes = sorted({int(size) for size in args.members.split(",") if int(size) > 0})
    if args.seconds < 0 or args.concurrency < 1 or args.customers < 1 or args.stores < 1 or args.rounds < 1:
        parser.error("--seconds, --rounds, --concurrency, --customers and --stores must be positive")
    if args.rate < 0:
        parser.error("--rate must not be negative")
    if not 0 < args.kill_at < 1 or not 0 <= args.holdout <= 100:
        parser.error("--kill-at must lie between 0 and 1, --holdout between 0 and 100")

    parts = []
    if args.seconds:
        events = event_bench(
            seconds=args.seconds,
            concurrency=args.concurrency,
            customers=args.customers,
            stores=args.stores,
            rounds=args.rounds,
            rate=args.rate or None,
        )
        parts.append(report_events(events))
        print(parts[-1], flush=True)
    runs = [
        scheduled_run(
            size,
            holdout=args.holdout,
            kill_at=None if args.no_kill or size != sizes[-1] else args.kill_at,
            timeout_s=args.timeout,
            page_size=args.page_size,
        )
        for size in sizes
    ]
    if runs:
        print("\n" + report_runs(runs), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
