"""`quanyu demo`: load the demo chain into the platform and play the main flows, saying what happened.

The demo is a client like any channel frontend, store terminal or ops tool: it calls the five
services at their configured targets with tokens it signs with the deployment's key, and never
opens a database. When the platform is not serving it starts `quanyu up` for as long as it runs
and stops it at the end; a platform that was already running is left running.

Each run has a run id of its own, from which every request id, order id, WeChat account and the
till customer's phone are made, so a second run on the same var dir plays the flows afresh while
the chain (stores by id, stock as absolute levels) is loaded again without harm. Every call has a
deadline and every wait a limit, so a run ends within `--timeout` seconds whatever the services do.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TextIO, TypeVar
from zoneinfo import ZoneInfo

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from quanyu.auth import Role, caller
from quanyu.clients import error_reason
from quanyu.common.v1 import common_pb2
from quanyu.config import SERVICE_NAMES, Environment, Settings
from quanyu.fulfilment.v1 import fulfilment_pb2, fulfilment_pb2_grpc
from quanyu.identity.v1 import identity_pb2_grpc
from quanyu.marketing.v1 import marketing_pb2_grpc
from quanyu.membership.v1 import membership_pb2, membership_pb2_grpc
from quanyu.orders.v1 import orders_pb2, orders_pb2_grpc
from quanyu_ops.demo.chain import (
    CITIES,
    DISTRICTS,
    SEED,
    TIMEZONE,
    Chain,
    DemoStore,
    Product,
    build_chain,
    offset,
)
from quanyu_ops.deployment import Deployment
from quanyu_ops.supervisor import is_serving, terminate

T = TypeVar("T")
Metadata = tuple[tuple[str, str], ...]

DEFAULT_TIMEOUT_SECONDS = 180.0
# One call's deadline; ImportStores checks and indexes a few hundred stores, so it gets longer.
CALL_SECONDS = 10.0
IMPORT_SECONDS = 60.0
START_SECONDS = 60.0  # for `quanyu up` to have every service SERVING
POINTS_SECONDS = 30.0  # for the outbox to bring points from membership back onto an order
PLATFORM_LOG = "quanyu-demo-platform.log"
NEAREST = 100  # the most stores FindNearestStores lists

MINI = common_pb2.CHANNEL_WECHAT_MINI_PROGRAM
APP = common_pb2.CHANNEL_APP
POS = common_pb2.CHANNEL_STORE_POS
DELIVERY = common_pb2.FULFILMENT_TYPE_DELIVERY
IN_STORE = common_pb2.FULFILMENT_TYPE_IN_STORE
S = orders_pb2  # order statuses: S.ORDER_STATUS_ASSIGNED, ...


@dataclass(frozen=True)
class Place:
    """Where a customer is, with the address they would type."""

    address: str
    latitude: float
    longitude: float

    @property
    def latlng(self) -> common_pb2.LatLng:
        return common_pb2.LatLng(
            latitude=self.latitude, longitude=self.longitude, system=common_pb2.COORDINATE_SYSTEM_WGS84
        )


# A flat off People's Square: by day a dozen stores deliver there, and at night the station store
# and the cloud store still do.
DELIVERY_PLACE = Place("Fuzhou Road 318, Huangpu, Shanghai", 31.2352, 121.4810)
# A flat by Huanglong in Hangzhou, within the Hangzhou cloud store's reach and no station store's.
NIGHT_PLACE = Place("Wensan Road 90, Xihu, Hangzhou", 30.2790, 120.1350)
TILL_STORE = "SZ-GS-01"
TILL_GUIDE = ("G-SZ-GS-01-03", "Lin Xiaoyu")
REJECT_REASONS = ("no staff on shift", "no courier free", "damaged stock", "closing early for a stocktake")

# Why CreateOrder turned an order away (ErrorInfo reasons), in words.
_REFUSALS = {
    "NO_STORE_IN_RANGE": "where no store delivers",
    "NO_STORE_OPEN": "where every store in reach is closed now",
    "AT_CAPACITY": "where every open store is at capacity",
    "INSUFFICIENT_STOCK": "for goods no store in reach has",
}
_REASONS = {
    "OUT_OF_ZONE": "does not deliver that far",
    "CLOSED": "closed",
    "PAUSED": "paused",
    "AT_CAPACITY": "at capacity",
    "INSUFFICIENT_STOCK": "short of something in the basket",
    "EXCLUDED": "turned it down before",
    "FARTHER": "farther",
}


class DemoFailed(Exception):
    """The demo cannot go on: the platform is unreachable, refuses the demo's token, or will not start."""


# --- the platform ---------------------------------------------------------------------------


@contextmanager
def running_platform(
    deployment: Deployment, say: Callable[[str], None], deadline: Deadline
) -> Iterator[None]:
    """The platform at its configured targets; started with `quanyu up` for the run when not serving."""
    settings = deployment.settings
    missing = [name for name in SERVICE_NAMES if not is_serving(settings.target(name))]
    if not missing:
        say("The platform is running; the demo uses it and leaves it running.")
        yield
        return
    log_path = settings.var_dir / PLATFORM_LOG
    log_path.parent.mkdir(parents=True, exist_ok=True)
    which = "the platform" if len(missing) == len(SERVICE_NAMES) else ", ".join(missing)
    say(f"Starting {which} for the demo (logs in {log_path}); it stops when the demo ends.")
    with log_path.open("ab") as log:
        # The same environment, so the services read the same configuration and keys as the demo.
        process = subprocess.Popen(
            [sys.executable, "-m", "quanyu_ops.cli", "up", *missing],
            stdout=log,
            stderr=log,
            env=deployment.child_environment(),
        )
        try:
            _wait_serving(settings, missing, process, deadline.left(START_SECONDS))
            yield
        finally:
            terminate(process, settings.grace_seconds + 10)


def _wait_serving(
    settings: Settings, services: Sequence[str], process: subprocess.Popen[bytes], within: float
) -> None:
    deadline = time.monotonic() + within
    waiting = list(services)
    while waiting:
        if process.poll() is not None:
            raise DemoFailed(
                f"`quanyu up` exited with status {process.returncode} before serving; "
                f"see {settings.var_dir / PLATFORM_LOG}"
            )
        if time.monotonic() > deadline:
            raise DemoFailed(f"{', '.join(waiting)} not serving within {within:.0f} s")
        waiting = [name for name in waiting if not is_serving(settings.target(name))]
        if waiting:
            time.sleep(0.2)


# --- calling the services -------------------------------------------------------------------


class Deadline:
    """When the run must be over: each call's deadline and each wait is cut to what is left."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def left(self, wanted: float = CALL_SECONDS) -> float:
        remaining = self._end - time.monotonic()
        if remaining <= 0:
            raise DemoFailed(f"the demo did not finish within {self.seconds:.0f} s")
        return min(wanted, remaining)


class Calls:
    """Stubs for the five services and tokens for each role the demo acts in."""

    def __init__(self, deployment: Deployment, channels: list[grpc.Channel], deadline: Deadline) -> None:
        self.deadline = deadline
        self._deployment = deployment
        settings = deployment.settings
        self._tokens: dict[tuple[str, str, str], Metadata] = {}

        def channel(service: str) -> grpc.Channel:
            made = grpc.insecure_channel(settings.target(service))
            channels.append(made)
            return made

        self.fulfilment = fulfilment_pb2_grpc.FulfilmentServiceStub(channel("fulfilment"))
        self.orders = orders_pb2_grpc.OrderServiceStub(channel("orders"))
        self.membership = membership_pb2_grpc.MembershipServiceStub(channel("membership"))
        self.identity = identity_pb2_grpc.IdentityServiceStub(channel("identity"))
        self.marketing = marketing_pb2_grpc.MarketingServiceStub(channel("marketing"))

    def token(self, role: Role, *, store_id: str = "", channel: str = "", subject: str = "") -> Metadata:
        key = (role.value, store_id, channel)
        if key not in self._tokens:
            principal = caller(role, store_id=store_id, channel=channel, subject=subject or "quanyu-demo")
            self._tokens[key] = self._deployment.bearer(principal, 3600)
        return self._tokens[key]

    @property
    def ops(self) -> Metadata:
        return self.token(Role.OPS)

    def channel_token(self, channel: common_pb2.Channel.ValueType) -> Metadata:
        return self.token(Role.CHANNEL, channel=common_pb2.Channel.Name(channel))

    def store(self, store_id: str) -> Metadata:
        return self.token(Role.STORE, store_id=store_id, subject=f"till-{store_id}")

    def order(self, order_id: str) -> orders_pb2.Order:
        answer: orders_pb2.Order = self.orders.GetOrder(
            orders_pb2.GetOrderRequest(order_id=order_id), metadata=self.ops, timeout=self.deadline.left()
        ).order
        return answer

    def explain(self, order_id: str) -> fulfilment_pb2.AssignmentDecision:
        answer: fulfilment_pb2.AssignmentDecision = self.fulfilment.ExplainAssignment(
            fulfilment_pb2.ExplainAssignmentRequest(order_id=order_id),
            metadata=self.ops,
            timeout=self.deadline.left(),
        ).decision
        return answer

    def deliverable(self, place: Place, lines: Sequence[common_pb2.Line]) -> list[fulfilment_pb2.StoreMatch]:
        """Of the NEAREST stores to `place`, those that could deliver `lines` now, nearest first."""
        answer = self.fulfilment.FindNearestStores(
            fulfilment_pb2.FindNearestStoresRequest(
                location=place.latlng, limit=NEAREST, lines=lines, fulfilment_type=DELIVERY
            ),
            metadata=self.ops,
            timeout=self.deadline.left(),
        )
        return [m for m in answer.matches if m.can_fulfil]

    def finish(self, order: orders_pb2.Order) -> orders_pb2.Order:
        """Accept, pack and hand over, as the fulfilling store's terminal does."""
        store = self.store(order.fulfilling_store_id)
        accept = orders_pb2.AcceptOrderRequest(order_id=order.order_id)
        self.orders.AcceptOrder(accept, metadata=store, timeout=self.deadline.left())
        ready = orders_pb2.MarkOrderReadyRequest(order_id=order.order_id)
        self.orders.MarkOrderReady(ready, metadata=store, timeout=self.deadline.left())
        done: orders_pb2.Order = self.orders.CompleteOrder(
            orders_pb2.CompleteOrderRequest(order_id=order.order_id),
            metadata=store,
            timeout=self.deadline.left(),
        ).order
        return done

    def reject(self, order: orders_pb2.Order, reason: str) -> orders_pb2.Order:
        """The fulfilling store turns the order down; where it went next, as ops see it (the store
        that rejected it is told only that its rejection stood)."""
        store_id = order.fulfilling_store_id
        self.orders.RejectOrder(
            orders_pb2.RejectOrderRequest(order_id=order.order_id, reason=reason, store_id=store_id),
            metadata=self.store(store_id),
            timeout=self.deadline.left(),
        )
        return self.order(order.order_id)


def eventually(read: Callable[[], T], done: Callable[[T], bool], within: float) -> T:
    """Poll `read` until `done` holds of its answer or `within` seconds pass; the last answer."""
    deadline = time.monotonic() + within
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


# --- words ----------------------------------------------------------------------------------


def distance(metres: float) -> str:
    return f"{metres:,.0f} m" if metres < 1000 else f"{metres / 1000:.1f} km"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def money(cents: int) -> str:
    return f"¥{cents / 100:,.2f}"


def masked(phone: str) -> str:
    return f"{phone[:3]}****{phone[-4:]}"


def failure_words(error: grpc.RpcError) -> str:
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    reason = error_reason(error)
    details = error.details() if isinstance(error, grpc.Call) else str(error)
    return f"{code.name}{f' {reason}' if reason else ''}: {details}"


class Story:
    """What the demo says: the flows as they are played, then one line per flow."""

    def __init__(self, out: TextIO, chain: Chain) -> None:
        self._out = out
        self._stores = {s.store_id: s for s in chain.stores}
        self.played: list[tuple[bool, str]] = []

    def say(self, text: str = "") -> None:
        print(text, file=self._out, flush=True)

    def step(self, text: str) -> None:
        self.say(f"   {text}")

    def store(self, store_id: str) -> str:
        known = self._stores.get(store_id)
        return f"{known.name} ({store_id})" if known else store_id

    def done(self, ok: bool, line: str) -> None:
        self.played.append((ok, line))
        if not ok:
            self.step(f"✗ {line}")

    def summary(self, run_id: str, settings: Settings) -> None:
        self.say()
        self.say(f"What the demo played (run {run_id}):")
        for ok, line in self.played:
            self.say(f"  {'✓' if ok else '✗'} {line}")
        self.say()
        self.say("Where to look next:")
        self.say(
            f"  quanyu map                 draws the stores, their delivery zones and these assignments "
            f"into {settings.var_dir / 'quanyu-map.png'}"
        )
        self.say("  quanyu map --city suzhou   one city at a time (shanghai, hangzhou, suzhou)")


# --- loading the chain ----------------------------------------------------------------------


def store_message(store: DemoStore) -> fulfilment_pb2.Store:
    return fulfilment_pb2.Store(
        store_id=store.store_id,
        name=store.name,
        location=common_pb2.LatLng(
            latitude=store.latitude, longitude=store.longitude, system=common_pb2.COORDINATE_SYSTEM_WGS84
        ),
        status=fulfilment_pb2.STORE_STATUS_PAUSED if store.paused else fulfilment_pb2.STORE_STATUS_ACTIVE,
        delivery_radius_m=store.radius_m,
        delivery_zone_geojson=store.zone_geojson,
        opening_hours=[fulfilment_pb2.OpeningHours(weekday=d, open=o, close=c) for d, o, c in store.hours],
        timezone=TIMEZONE,
        max_active_orders=store.max_active_orders,
    )


def load_chain(calls: Calls, chain: Chain, story: Story) -> None:
    started = time.monotonic()
    upserted = 0
    for first in range(0, len(chain.stores), 1000):
        answer = calls.fulfilment.ImportStores(
            fulfilment_pb2.ImportStoresRequest(
                stores=[store_message(s) for s in chain.stores[first:][:1000]]
            ),
            metadata=calls.ops,
            timeout=calls.deadline.left(IMPORT_SECONDS),
        )
        upserted += answer.upserted
        for problem in answer.errors:
            story.step(f"store {chain.stores[first + problem.index].store_id} refused: {problem.description}")
    levels, changed, kept = 0, 0, []
    # One store at a time: the service writes stock in one database, so parallel calls only queue.
    # Only the levels that differ are sent: on a second run that is what the last one sold.
    for store_id, stock in chain.stock.items():
        held = calls.fulfilment.GetStock(
            fulfilment_pb2.GetStockRequest(store_id=store_id),
            metadata=calls.ops,
            timeout=calls.deadline.left(),
        )
        current = {level.sku: level.on_hand for level in held.levels}
        levels += len(stock)
        differ = {sku: on_hand for sku, on_hand in stock.items() if current.get(sku) != on_hand}
        if not differ:
            continue
        request = fulfilment_pb2.SetStockRequest(
            store_id=store_id,
            levels=[fulfilment_pb2.SkuQuantity(sku=k, on_hand=v) for k, v in differ.items()],
        )
        try:
            calls.fulfilment.SetStock(request, metadata=calls.ops, timeout=calls.deadline.left())
        except grpc.RpcError as error:
            # Orders of an earlier run that were never finished may hold more than the new level;
            # that store keeps its stock as it is.
            if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            kept.append(store_id)
            continue
        changed += len(differ)
    # The till's guide, whom its sales are credited to: only a store's own guides may be.
    guide_id, name = TILL_GUIDE
    calls.membership.UpsertGuide(
        membership_pb2.UpsertGuideRequest(
            guide=membership_pb2.Guide(guide_id=guide_id, store_id=TILL_STORE, name=name, active=True)
        ),
        metadata=calls.ops,
        timeout=calls.deadline.left(),
    )
    cities = [c.name for c in CITIES]
    zones = sum(1 for s in chain.stores if s.zone)
    story.say(
        f"Loaded {upserted} stores in {', '.join(cities[:-1])} and {cities[-1]} "
        f"({zones} with a drawn delivery zone, the rest a radius; "
        f"{sum(1 for s in chain.stores if s.kind == 'cloud')} cloud stores open around the clock) "
        f"and {levels:,} stock levels of {len(chain.products)} SKUs ({changed:,} set afresh) "
        f"in {time.monotonic() - started:.1f} s."
    )
    if kept:
        story.step(f"kept the stock of {len(kept)} store(s) where open orders hold more: {', '.join(kept)}")


# --- the flows ------------------------------------------------------------------------------


def line(product: Product, quantity: int) -> common_pb2.Line:
    return common_pb2.Line(sku=product.sku, quantity=quantity, unit_price_cents=product.price_cents)


def basket_words(chain: Chain, lines: Sequence[common_pb2.Line]) -> str:
    names = {p.sku: p.name for p in chain.products}
    return ", ".join(f"{item.quantity} × {names.get(item.sku, item.sku)}" for item in lines)


def passed_over(story: Story, decision: fulfilment_pb2.AssignmentDecision, limit: int = 3) -> None:
    """Say which nearer stores were not chosen, and why."""
    # Sorted here rather than taken in the order given: the decision lists the stores ruled out
    # early (zone, hours, status) before those weighed for stock.
    chosen = chosen_distance(decision)
    nearer = sorted(
        (c for c in decision.candidates if not c.chosen and c.distance_m < chosen),
        key=lambda c: c.distance_m,
    )
    if not nearer:
        return
    shown = "; ".join(
        f"{story.store(c.store_id)} at {distance(c.distance_m)}: "
        f"{' and '.join(_REASONS.get(r, r.lower()) for r in c.reasons)}"
        for c in nearer[:limit]
    )
    more = f" and {len(nearer) - limit} more" if len(nearer) > limit else ""
    story.step(f"nearer but passed over: {shown}{more}")


def chosen_distance(decision: fulfilment_pb2.AssignmentDecision) -> float:
    return next((a.distance_m for a in decision.assignments), 0.0)


@dataclass
class Run:
    """One play of the demo: its id and the names made from it."""

    run_id: str
    started: datetime

    def key(self, what: str) -> str:
        return f"demo-{self.run_id}-{what}"

    def phone(self, what: str) -> str:
        """A mainland mobile number of this run's own (a till customer new to the chain)."""
        digest = int(hashlib.sha256(self.key(what).encode()).hexdigest(), 16)
        prefix = ("138", "139", "137", "158", "186", "187", "135", "150")[digest % 8]
        return f"{prefix}{digest // 8 % 100_000_000:08d}"

    def openid(self, what: str) -> str:
        """A WeChat openid of this run's own: 28 characters, as WeChat issues them."""
        return "o" + hashlib.sha256(self.key(what).encode()).hexdigest()[:27]


def play_delivery(calls: Calls, chain: Chain, run: Run, story: Story) -> orders_pb2.Order | None:
    story.say()
    story.say(f"1. A WeChat mini-program order for delivery to {DELIVERY_PLACE.address}")
    lines = [
        line(chain.product("Osmanthus Oolong Milk Tea (bottle 500 ml)"), 2),
        line(chain.product("Butter Croissant (single)"), 2),
        line(chain.product("Egg Tart (single)"), 1),
    ]
    phone = run.phone("delivery")
    story.step(f"basket: {basket_words(chain, lines)}")
    story.step(f"customer: WeChat openid {run.openid('delivery')[:10]}…, phone {masked(phone)}")
    able = calls.deliverable(DELIVERY_PLACE, lines)
    story.step(f"of the {NEAREST} stores nearest to it, {len(able)} could deliver it right now")
    order: orders_pb2.Order = calls.orders.CreateOrder(
        orders_pb2.CreateOrderRequest(
            request_id=run.key("delivery"),
            account=common_pb2.ChannelAccount(channel=MINI, external_id=run.openid("delivery")),
            phone=phone,
            fulfilment_type=DELIVERY,
            lines=lines,
            delivery_location=DELIVERY_PLACE.latlng,
            delivery_address=DELIVERY_PLACE.address,
        ),
        metadata=calls.channel_token(MINI),
        timeout=calls.deadline.left(),
    ).order
    if order.status != S.ORDER_STATUS_ASSIGNED:
        story.done(False, f"1. delivery order {order.order_id} is {S.OrderStatus.Name(order.status)}")
        return None
    decision = calls.explain(order.order_id)
    story.step(f"order {order.order_id}, {money(order.total_cents)}, member {order.member_id}")
    passed_over(story, decision)
    where = f"{story.store(order.fulfilling_store_id)}, {distance(chosen_distance(decision))} away"
    story.step(f"→ routed to {where}: the nearest store that delivers there with everything in stock")
    story.done(True, f"1. WeChat mini-program delivery → {where}")
    return order


def play_rejection(calls: Calls, order: orders_pb2.Order, story: Story) -> orders_pb2.Order | None:
    story.say()
    rejecting = order.fulfilling_store_id
    story.say(f"2. {story.store(rejecting)} turns the order down: no staff on shift")
    rerouted = calls.reject(order, "no staff on shift")
    if rerouted.status != S.ORDER_STATUS_ASSIGNED:
        why = rerouted.status_reason or S.OrderStatus.Name(rerouted.status)
        story.done(False, f"2. after {story.store(rejecting)} turned it down nobody could take it ({why})")
        return None
    decision = calls.explain(rerouted.order_id)
    where = f"{story.store(rerouted.fulfilling_store_id)}, {distance(chosen_distance(decision))} away"
    story.step(f"its stock there is released and the order is routed again, without {rejecting}")
    story.step(f"→ re-routed to {where}: the next nearest that can serve")
    story.done(True, f"2. {story.store(rejecting)} rejected it (no staff) → re-routed to {where}")
    return rerouted


def next_night(now: datetime) -> datetime:
    """The coming 02:00 in Shanghai: tonight's, or this morning's when it is not yet two."""
    local = now.astimezone(ZoneInfo(TIMEZONE))
    night = local.replace(hour=2, minute=0, second=0, microsecond=0)
    return night if night > local else night + timedelta(days=1)


def play_night(calls: Calls, chain: Chain, run: Run, story: Story) -> None:
    story.say()
    night = next_night(datetime.now(UTC))
    when = night.strftime("%H:%M on %a %d %b")
    story.say(f"3. A delivery to {NIGHT_PLACE.address} wanted at {when} (Shanghai time)")
    story.step("asked of fulfilment directly (AssignStore with at_time), as orders would at that hour")
    lines = [
        line(chain.product("Jasmine Green Tea (bottle 500 ml)"), 2),
        line(chain.product("Pork Floss Bun (single)"), 2),
    ]
    at_time = Timestamp()
    at_time.FromDatetime(night.astimezone(UTC))
    order_id = run.key("night")
    answer = calls.fulfilment.AssignStore(
        fulfilment_pb2.AssignStoreRequest(
            order_id=order_id,
            location=NIGHT_PLACE.latlng,
            lines=lines,
            fulfilment_type=DELIVERY,
            at_time=at_time,
        ),
        metadata=calls.ops,
        timeout=calls.deadline.left(),
    )
    decision = calls.explain(order_id)
    closed = sum(1 for c in decision.candidates if "CLOSED" in c.reasons and "OUT_OF_ZONE" not in c.reasons)
    (assignment,) = answer.assignments
    chosen = chain.store(assignment.store_id) if assignment.store_id in chain.stock else None
    where = f"{story.store(assignment.store_id)}, {distance(assignment.distance_m)} away"
    story.step(f"{plural(closed, 'store')} that deliver there {'is' if closed == 1 else 'are'} closed then")
    cloud = chosen is not None and chosen.kind == "cloud"
    story.step(f"→ assigned to {where}" + (", open around the clock" if cloud else ""))
    calls.fulfilment.ReleaseReservation(
        fulfilment_pb2.ReleaseReservationRequest(order_id=order_id),
        metadata=calls.ops,
        timeout=calls.deadline.left(),
    )
    story.step("its reservation is released again: it was only asked to show the choice")
    what = "the 24-hour cloud store" if cloud else "not the cloud store"
    story.done(cloud, f"3. night order for {night:%H:%M} → {where}, {what}")


def play_till(calls: Calls, chain: Chain, run: Run, story: Story) -> None:
    story.say()
    till = chain.store(TILL_STORE)
    guide_id, guide = TILL_GUIDE
    phone = run.phone("till")
    story.say(f"4. A sale at the till of {story.store(till.store_id)}, Suzhou; guide {guide} serves")
    lines = [line(chain.product("Egg Tart (single)"), 4), line(chain.product("Oat Latte (can 250 ml)"), 2)]
    story.step(f"basket: {basket_words(chain, lines)}; the customer pays with phone {masked(phone)}")
    order: orders_pb2.Order = calls.orders.CreateOrder(
        orders_pb2.CreateOrderRequest(
            request_id=run.key("till"),
            phone=phone,
            channel=POS,
            fulfilment_type=IN_STORE,
            origin_store_id=till.store_id,
            guide_id=guide_id,
            lines=lines,
        ),
        metadata=calls.store(till.store_id),
        timeout=calls.deadline.left(),
    ).order
    member = calls.membership.GetMember(
        membership_pb2.GetMemberRequest(customer_id=order.customer_id),
        metadata=calls.ops,
        timeout=calls.deadline.left(),
    ).member
    new = member.enroll_time.ToDatetime(tzinfo=UTC) >= run.started - timedelta(seconds=5)
    story.step(
        f"order {order.order_id}: {S.OrderStatus.Name(order.status).removeprefix('ORDER_STATUS_').lower()} "
        f"at once, {money(order.total_cents)}"
    )
    story.step(
        f"→ paying made them {'a new' if new else 'again a'} member: {member.member_id}, tier {member.tier}, "
        f"home store {story.store(member.home_store_id)}, guide {guide} ({member.guide_id})"
    )
    earned = eventually(
        lambda: calls.order(order.order_id),
        lambda o: o.points_earned > 0,
        calls.deadline.left(POINTS_SECONDS),
    )
    if earned.points_earned:
        story.step(f"→ {earned.points_earned} points on their first receipt")
    ok = order.status == S.ORDER_STATUS_COMPLETED and member.home_store_id == till.store_id and new
    story.done(
        ok,
        f"4. till sale at {story.store(till.store_id)} → new member {member.member_id}, "
        f"home store {till.store_id}, guide {guide}",
    )


def play_completion(calls: Calls, order: orders_pb2.Order, story: Story) -> None:
    story.say()
    story.say(f"5. {story.store(order.fulfilling_store_id)} accepts, packs and delivers the order")
    done = calls.finish(order)
    story.step(
        f"order {done.order_id} is {S.OrderStatus.Name(done.status).removeprefix('ORDER_STATUS_').lower()}; "
        "the stock leaves the shelf and membership credits the points"
    )
    earned = eventually(
        lambda: calls.order(order.order_id),
        lambda o: o.points_earned > 0,
        calls.deadline.left(POINTS_SECONDS),
    )
    if not earned.points_earned:
        story.done(False, f"5. delivery completed, but no points within {POINTS_SECONDS:.0f} s")
        return
    member = calls.membership.GetMember(
        membership_pb2.GetMemberRequest(member_id=earned.member_id),
        metadata=calls.ops,
        timeout=calls.deadline.left(),
    ).member
    story.step(
        f"→ {earned.points_earned} points earned on {money(earned.total_cents)}; "
        f"member {member.member_id} now holds {member.points_balance} points"
    )
    story.done(
        True,
        f"5. delivery completed by {story.store(order.fulfilling_store_id)} → "
        f"{earned.points_earned} points earned",
    )


# --- a busy hour, for the map ---------------------------------------------------------------


@dataclass(frozen=True)
class Customer:
    place: Place
    channel: common_pb2.Channel.ValueType
    account: str
    phone: str
    reject: bool  # the first store turns it down
    exhaust: bool  # every store in reach turns it down


def busy_hour_customers() -> list[Customer]:
    """Customers around every district, the same on every run: returning customers, as in life."""
    # Not for secrets: seeded so the customers, like the stores, are the same on every run.
    rng = random.Random(SEED + 1)  # noqa: S311
    customers = []
    for number, district in enumerate(DISTRICTS):
        lat, lng = offset(district.latitude, district.longitude, rng.gauss(0, 2500), rng.gauss(0, 2500))
        channel = MINI if number % 3 else APP
        customers.append(
            Customer(
                Place(f"near {district.landmark}, {district.name}", lat, lng),
                channel,
                f"demo-regular-{district.city}-{district.code}".lower(),
                f"1390{number:03d}{rng.randrange(10_000):04d}",
                reject=number % 5 == 2,
                exhaust=False,
            )
        )
    # On the edges of the suburbs, where one store or two deliver: once they turn an order down,
    # nobody is left to take it.
    for number, district in enumerate(d for d in DISTRICTS if d.suburb):
        lat, lng = offset(district.latitude, district.longitude, 4200 * (-1) ** number, 4800)
        customers.append(
            Customer(
                Place(f"the edge of {district.name}", lat, lng),
                MINI,
                f"demo-edge-{district.city}-{district.code}".lower(),
                f"1391{number:03d}{rng.randrange(10_000):04d}",
                reject=False,
                exhaust=True,
            )
        )
    return customers


def play_busy_hour(calls: Calls, chain: Chain, run: Run, story: Story, *, edges: int = 2) -> None:
    story.say()
    story.say("6. A busy hour: more delivery orders across the three cities, for the map")
    staples = [p for p in chain.products if p.core]
    outcomes = {"assigned to the nearest store": 0, "re-routed": 0, "unfulfillable": 0}
    turned_away: dict[str, int] = {}
    for number, customer in enumerate(busy_hour_customers()):
        lines = [line(staples[(number * 7 + k * 5) % len(staples)], 1 + (number + k) % 2) for k in range(2)]
        # An edge order is placed only where one store or two deliver, so that when they turn it
        # down nobody is left.
        if customer.exhaust and (edges == 0 or not 1 <= len(calls.deliverable(customer.place, lines)) <= 2):
            continue
        try:
            order: orders_pb2.Order = calls.orders.CreateOrder(
                orders_pb2.CreateOrderRequest(
                    request_id=run.key(f"busy-{number:02d}"),
                    account=common_pb2.ChannelAccount(channel=customer.channel, external_id=customer.account),
                    phone=customer.phone,
                    fulfilment_type=DELIVERY,
                    lines=lines,
                    delivery_location=customer.place.latlng,
                    delivery_address=customer.place.address,
                ),
                metadata=calls.channel_token(customer.channel),
                timeout=calls.deadline.left(),
            ).order
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            reason = error_reason(error)
            turned_away[reason] = turned_away.get(reason, 0) + 1
            continue
        if customer.reject or customer.exhaust:
            order = calls.reject(order, REJECT_REASONS[number % len(REJECT_REASONS)])
        rounds = 0
        while customer.exhaust and order.status == S.ORDER_STATUS_ASSIGNED and rounds < 3:
            order = calls.reject(order, REJECT_REASONS[(number + rounds + 1) % len(REJECT_REASONS)])
            rounds += 1
        if order.status == S.ORDER_STATUS_UNFULFILLABLE:
            outcomes["unfulfillable"] += 1
            edges -= 1
            story.step(f"nobody left to deliver to {customer.place.address}: unfulfillable, for ops")
            continue
        outcomes["re-routed" if order.rejected_store_ids else "assigned to the nearest store"] += 1
        calls.finish(order)
    placed = sum(outcomes.values())
    words = ", ".join(f"{count} {what}" for what, count in outcomes.items() if count)
    for reason, count in turned_away.items():
        story.step(f"{plural(count, 'order')} {_REFUSALS.get(reason, reason)}: turned away, nothing stored")
    story.step(f"→ {placed} orders: {words}; the delivered ones completed by their stores")
    story.done(placed > 0, f"6. busy hour: {placed} more orders → {words}")


# --- the command ----------------------------------------------------------------------------


def new_run_id(now: datetime) -> str:
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def _flow(story: Story, number: int, what: str, play: Callable[[], T]) -> T | None:
    """Play one flow; a refusal from a service is said in plain words and the demo goes on."""
    try:
        return play()
    except grpc.RpcError as error:
        if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED):
            raise
        story.done(False, f"{number}. {what}: {failure_words(error)}")
        return None


def play(deployment: Deployment, out: TextIO, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> int:
    """Load the chain and play the flows; 0 when every flow went as it should, 1 when one did not,
    2 when the platform could not be reached, started or used at all."""
    now = datetime.now(UTC)
    run = Run(new_run_id(now), now)
    deadline = Deadline(timeout)
    chain = build_chain()
    story = Story(out, chain)
    story.say(f"Quanyu demo, run {run.run_id}")
    channels: list[grpc.Channel] = []
    try:
        with running_platform(deployment, story.say, deadline):
            calls = Calls(deployment, channels, deadline)
            load_chain(calls, chain, story)
            order = _flow(story, 1, "delivery", lambda: play_delivery(calls, chain, run, story))
            rerouted = order and _flow(story, 2, "rejection", lambda: play_rejection(calls, order, story))
            _flow(story, 3, "night order", lambda: play_night(calls, chain, run, story))
            _flow(story, 4, "till sale", lambda: play_till(calls, chain, run, story))
            if rerouted:
                _flow(story, 5, "completion", lambda: play_completion(calls, rerouted, story))
            else:
                story.done(False, "5. completion: no delivery order left to complete")
            _flow(story, 6, "busy hour", lambda: play_busy_hour(calls, chain, run, story))
            # The campaigns' flows build on this module's calls and words, so they are imported
            # here, once this module is loaded.
            from quanyu_ops.demo.campaigns import play_birthday, play_first_purchase

            _flow(story, 7, "first-purchase campaign", lambda: play_first_purchase(calls, chain, run, story))
            _flow(story, 8, "birthday greeting", lambda: play_birthday(calls, run, story))
    except grpc.RpcError as error:
        print(f"quanyu demo: the platform failed a call: {failure_words(error)}", file=sys.stderr)
        if error.code() == grpc.StatusCode.UNAUTHENTICATED:
            print(
                f"  the demo signs its tokens with the key in {deployment.settings.var_dir} "
                "(or QUANYU_SIGNING_KEY); is the platform running from another var directory? "
                "Set QUANYU_VAR_DIR to it",
                file=sys.stderr,
            )
        return 2
    except DemoFailed as error:
        print(f"quanyu demo: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("quanyu demo: interrupted", file=sys.stderr)
        return 130
    finally:
        for channel in channels:
            channel.close()
    story.summary(run.run_id, deployment.settings)
    return 0 if all(ok for ok, _ in story.played) else 1


def main(
    deployment: Deployment, *, timeout: float = DEFAULT_TIMEOUT_SECONDS, out: TextIO | None = None
) -> int:
    """`quanyu demo`."""
    if deployment.settings.env is Environment.PRODUCTION:
        print("quanyu demo: loads a made-up chain, so it never runs against production", file=sys.stderr)
        return 2
    return play(deployment, out or sys.stdout, timeout=timeout)
