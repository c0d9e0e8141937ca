"""Marketing's promises on real processes: a grant is given once however the services fail under
it, no budget is overspent by replicas granting at once, and no message reaches a customer who has
not consented or who is in their quiet hours.

* Grants under faults: a scheduled ONCE run over a population of members, and a campaign triggered
  by the orders those members complete, while marketing or membership is killed (SIGKILL) or frozen
  (SIGSTOP) mid-run. Once every service is back and the outboxes are drained, every member the
  campaign should reach has exactly one coupon of it in membership, and marketing holds exactly
  one GRANTED decision for them: a coupon or a decision missing is lost, one beyond is doubled.
* Budgets under concurrency: many events at once spread over two marketing replicas, against
  campaigns capped by max_grants, points_budget and coupon_budget_cents: grants, points and coupon
  fen past the caps are overruns.
* Messages: customers with consent on the mini-program, without it, and having withdrawn it, reached
  by a message campaign through a replica whose quiet hours hold now and through one whose do
  not; the mini-program channel then pulls until nothing is left. A message pulled for a customer
  without consent, or for one in their quiet hours, is a breach; one owed and never pulled is lost.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from quanyu.common.v1 import common_pb2
from quanyu.marketing.v1 import marketing_pb2 as pb
from quanyu.marketing.v1 import marketing_pb2_grpc
from quanyu.orders.v1 import orders_pb2
from services.marketing.ports import Outcome as Decision
from services.marketing.storage.tables import grants as grants_table
from services.marketing.storage.tables import outbox as marketing_outbox
from services.membership.storage import coupons as coupons_table
from tests.processes import poll
from tests.reliability.deployment import Deployment
from tests.reliability.world import World, attempt, retrying

COUPON_FEN = 100
SETTLE = 240.0  # how long every grant may take to arrive once the services are back
WATCH = 60.0  # how long a test waits for a run to be under way before it strikes
FROZEN = 4.0  # how long a frozen service stays frozen: past the callers' 2 s timeout
DEADLINE = 30.0


class Signal(StrEnum):
    KILL = "killed"
    FREEZE = "frozen"


@dataclass(frozen=True)
class Fault:
    service: str
    signal: Signal
    during: str  # "run": a scheduled ONCE run; "orders": a campaign fed by completed orders

    def __str__(self) -> str:
        return f"{self.service} {self.signal.value} during {self.during}"


FAULTS = tuple(
    Fault(service, signal, during)
    for during in ("run", "orders")
    for service in ("marketing", "membership")
    for signal in (Signal.KILL, Signal.FREEZE)
)


@dataclass
class GrantFaultFigures:
    rounds: int = 0
    owed: int = 0  # members who should have a coupon, over every round
    lost: int = 0
    doubled: int = 0
    problems: list[str] = field(default_factory=list)


# --- shared --------------------------------------------------------------------------------------


def _stub(d: Deployment) -> marketing_pb2_grpc.MarketingServiceStub:
    return marketing_pb2_grpc.MarketingServiceStub(d.channel("marketing"))


def _start(
    d: Deployment,
    w: World,
    campaign: pb.Campaign,
    stub: marketing_pb2_grpc.MarketingServiceStub | None = None,
) -> str:
    stub = stub or _stub(d)
    made = stub.CreateCampaign(pb.CreateCampaignRequest(campaign=campaign), metadata=w.ops, timeout=DEADLINE)
    campaign_id = str(made.campaign.campaign_id)
    stub.StartCampaign(pb.StartCampaignRequest(campaign_id=campaign_id), metadata=w.ops, timeout=DEADLINE)
    return campaign_id


def _end(d: Deployment, w: World, campaign_id: str) -> None:
    """Ended after the check, so no later check's orders trigger it."""
    retrying(
        lambda: _stub(d).EndCampaign(
            pb.EndCampaignRequest(campaign_id=campaign_id), metadata=w.ops, timeout=DEADLINE
        )
    )


def _coupon() -> pb.Action:
    return pb.Action(issue_coupon=pb.CouponAction(discount_cents=COUPON_FEN, valid_days=30))


def _decisions(d: Deployment, campaign_id: str) -> dict[str, Counter[str]]:
    """Each member's decisions in the campaign, counted by outcome."""
    found: dict[str, Counter[str]] = {}
    with d.databases["marketing"].snapshot() as db:
        rows = db.execute(
            select(grants_table.c.member_id, grants_table.c.outcome).where(
                grants_table.c.campaign_id == campaign_id
            )
        )
        for member_id, outcome in rows:
            found.setdefault(member_id, Counter())[outcome] += 1
    return found


def _coupons(d: Deployment, campaign_id: str) -> Counter[str]:
    """Coupons membership holds of the campaign, per member."""
    with d.databases["membership"].snapshot() as db:
        rows = db.execute(
            select(coupons_table.c.member_id).where(coupons_table.c.campaign_id == campaign_id)
        ).scalars()
        return Counter(rows)


def _undelivered(d: Deployment) -> int:
    """Marketing's effects neither delivered nor refused for good."""
    with d.databases["marketing"].snapshot() as db:
        return int(
            db.execute(
                select(func.count())
                .select_from(marketing_outbox)
                .where(marketing_outbox.c.delivered_time.is_(None), marketing_outbox.c.failed == 0)
            ).scalar_one()
        )


def _settled(check: Callable[[], bool], what: str) -> bool:
    """Whether `check` came true within SETTLE (what never does is counted, not raised)."""
    try:
        poll(check, bool, what, SETTLE)
        return True
    except AssertionError:
        return False


# --- grants under faults -------------------------------------------------------------------------


def grants_under_faults(d: Deployment, *, rounds: int, members: int, buyers: int = 6) -> GrantFaultFigures:
    """`rounds` rounds, the faults taken in turn. A run round runs a ONCE campaign over the same
    `members` members; an orders round has `buyers` fresh members complete an order each."""
    figures = GrantFaultFigures()
    w = World(d)
    home = w.store("H", 0, {})
    population = _enrol(d, w, home, members)
    for number in range(rounds):
        fault = FAULTS[number % len(FAULTS)]
        try:
            if fault.during == "run":
                _run_round(d, w, home, population, fault=fault, figures=figures)
            else:
                _orders_round(d, w, number, buyers, fault=fault, figures=figures)
        except AssertionError as failure:
            figures.problems.append(f"round {number} ({fault}): {failure}")
        finally:
            d.restore()
        figures.rounds += 1
    return figures


def _enrol(d: Deployment, w: World, home: str, count: int) -> list[str]:
    """`count` members of `home`, once marketing knows every one of them."""

    def one(n: int) -> str:
        outcome, _ = retrying(lambda: w.enrolled("CHANNEL_APP", w.name(f"m{n}"), home_store_id=home))
        return str(outcome.answer().member_id)

    with ThreadPoolExecutor(8) as pool:
        enrolled = list(pool.map(one, range(count)))
    draft = _stub(d).CreateCampaign(
        pb.CreateCampaignRequest(campaign=_once(w, home, "census")), metadata=w.ops, timeout=DEADLINE
    )
    census = pb.PreviewCampaignRequest(campaign_id=draft.campaign.campaign_id)
    poll(
        lambda: _stub(d).PreviewCampaign(census, metadata=w.ops, timeout=DEADLINE).audience_size,
        lambda size: size == count,
        "marketing is told of every member enrolled",
        SETTLE,
    )
    return enrolled


def _once(w: World, home: str, name: str) -> pb.Campaign:
    return pb.Campaign(
        name=w.name(name),
        trigger=pb.Trigger(schedule=pb.Schedule(kind=pb.SCHEDULE_KIND_ONCE)),
        audience=pb.Audience(home_store_ids=[home]),
        actions=[_coupon()],
    )


def _run_round(
    d: Deployment, w: World, home: str, population: list[str], *, fault: Fault, figures: GrantFaultFigures
) -> None:
    campaign_id = _start(d, w, _once(w, home, f"once-{uuid_tail()}"))
    try:
        # Strike once the run has granted a page and has pages left, or (for membership) once
        # its coupons have begun to arrive.
        if fault.service == "marketing":
            poll(
                lambda: len(_decisions(d, campaign_id)),
                lambda n: 0 < n < len(population),
                "the run is under way",
                WATCH,
            )
        else:
            poll(lambda: sum(_coupons(d, campaign_id).values()), bool, "coupons arrive", WATCH)
        _strike(d, fault)
        d.restore()
        _settled(
            lambda: len(_decisions(d, campaign_id)) == len(population) and not _undelivered(d),
            "the run finishes and its coupons are delivered",
        )
    finally:
        _end(d, w, campaign_id)
    _count(d, campaign_id, set(population), fault, figures)


def _orders_round(
    d: Deployment, w: World, number: int, buyers: int, *, fault: Fault, figures: GrantFaultFigures
) -> None:
    sku = w.name(f"first-{number}")
    w.store(f"O{number}", 0, {sku: 10 * buyers})
    campaign = pb.Campaign(
        name=w.name(f"orders-{number}"),
        trigger=pb.Trigger(event=pb.TRIGGER_EVENT_ORDER_COMPLETED),
        audience=pb.Audience(skus=[sku]),
        actions=[_coupon()],
    )
    campaign_id = _start(d, w, campaign)
    buyers_ids = [w.name(f"buyer-{number}-{n}") for n in range(buyers)]
    owed = {str(w.member(b).member_id) for b in buyers_ids}
    completed: list[str] = []
    try:
        with ThreadPoolExecutor(1) as pool:
            flow = pool.submit(_buy_all, d, w, sku, buyers_ids, completed)
            # Strike once marketing has granted the first orders, with more to come.
            poll(lambda: len(_decisions(d, campaign_id)), bool, "the first order's grant", WATCH)
            _strike(d, fault)
            d.restore()
            flow.result(timeout=SETTLE)
        _settled(lambda: _orders_drained(d, w) and not _undelivered(d), "every effect is delivered")
    finally:
        _end(d, w, campaign_id)
    if len(completed) != buyers:
        figures.problems.append(f"only {len(completed)} of {buyers} orders completed")
    _count(d, campaign_id, owed, fault, figures)


def _buy_all(d: Deployment, w: World, sku: str, buyers: list[str], done: list[str]) -> None:
    """Each buyer places an order of `sku` and has it completed, one after the other, retrying
    with the same request id through whatever the round does to the services."""
    for buyer in buyers:
        done.append(_buy(d, w, w.delivery(w.name(f"first-{buyer}"), buyer, {sku: 1})))


def _buy(d: Deployment, w: World, request: orders_pb2.CreateOrderRequest) -> str:
    created, _ = retrying(lambda: d.orders.CreateOrder(request, metadata=w.ops, timeout=DEADLINE))
    order_id = str(created.answer().order.order_id)
    poll(
        lambda: w.order(order_id).status,
        lambda s: s != orders_pb2.ORDER_STATUS_PENDING_ASSIGNMENT,
        "the order is assigned",
        SETTLE,
    )
    steps: list[Callable[[], object]] = [
        lambda: d.orders.AcceptOrder(orders_pb2.AcceptOrderRequest(order_id=order_id), metadata=w.ops),
        lambda: d.orders.MarkOrderReady(orders_pb2.MarkOrderReadyRequest(order_id=order_id), metadata=w.ops),
        lambda: d.orders.CompleteOrder(orders_pb2.CompleteOrderRequest(order_id=order_id), metadata=w.ops),
    ]
    for step in steps:
        outcome, _ = retrying(step)
        outcome.answer()
    return order_id


def _orders_drained(d: Deployment, w: World) -> bool:
    status = attempt(
        lambda: d.orders.GetOutboxStatus(
            orders_pb2.GetOutboxStatusRequest(), metadata=w.ops, timeout=DEADLINE
        )
    )
    return status.ok and status.answer().undelivered == 0


def _strike(d: Deployment, fault: Fault) -> None:
    if fault.signal is Signal.KILL:
        d.kill(fault.service)
        return
    d.freeze(fault.service)
    # The fault is the freeze itself: callers time out against it meanwhile.
    threading.Event().wait(FROZEN)
    d.thaw(fault.service)


def _count(d: Deployment, campaign_id: str, owed: set[str], fault: Fault, figures: GrantFaultFigures) -> None:
    decided = _decisions(d, campaign_id)
    coupons = _coupons(d, campaign_id)
    figures.owed += len(owed)
    for member_id in owed | set(decided) | set(coupons):
        granted = decided.get(member_id, Counter())[Decision.GRANTED.value]
        held = coupons.get(member_id, 0)
        should = 1 if member_id in owed else 0
        lost = max(0, should - granted) + max(0, should - held)
        doubled = max(0, granted - should) + max(0, held - should)
        figures.lost += lost
        figures.doubled += doubled
        if lost or doubled:
            figures.problems.append(
                f"{fault}: member {member_id} has {held} coupons and {granted} grants of {campaign_id}"
            )


def uuid_tail() -> str:
    return f"{random.getrandbits(32):08x}"


# --- budgets under concurrency -------------------------------------------------------------------


@dataclass
class BudgetFigures:
    rounds: int = 0
    events: int = 0
    overrun: int = 0  # grants, points and coupon fen granted past a cap
    underrun: int = 0  # caps left unspent while events were turned away
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Capped:
    limits: pb.Limits
    action: pb.Action
    cost: int  # what one grant spends of the cap
    cap: int


_CAPPED = (
    _Capped(pb.Limits(max_grants=10), pb.Action(add_tag="budget-check"), 1, 10),
    _Capped(pb.Limits(points_budget=250), pb.Action(grant_points=10), 10, 250),
    _Capped(pb.Limits(coupon_budget_cents=10 * COUPON_FEN), _coupon(), COUPON_FEN, 10 * COUPON_FEN),
)


def budgets_under_concurrency(d: Deployment, *, rounds: int, events: int = 100) -> BudgetFigures:
    """Per round, `events` completed orders of distinct members at once, half through each of two
    replicas, against three campaigns each capped one way."""
    figures = BudgetFigures()
    w = World(d)
    members = [str(w.member(w.name(f"spender-{n}")).member_id) for n in range(events)]
    with d.replica("marketing") as channel:
        stubs = [_stub(d), marketing_pb2_grpc.MarketingServiceStub(channel)]
        for number in range(rounds):
            _budget_round(d, w, stubs, members, number=number, figures=figures)
    return figures


def _budget_round(
    d: Deployment,
    w: World,
    stubs: Sequence[marketing_pb2_grpc.MarketingServiceStub],
    members: list[str],
    *,
    number: int,
    figures: BudgetFigures,
) -> None:
    sku = w.name(f"capped-{number}")
    campaigns = []
    for n, capped in enumerate(_CAPPED):
        campaign = pb.Campaign(
            name=w.name(f"capped-{number}-{n}"),
            trigger=pb.Trigger(event=pb.TRIGGER_EVENT_ORDER_COMPLETED),
            audience=pb.Audience(skus=[sku]),
            actions=[capped.action],
            limits=capped.limits,
        )
        campaigns.append(_start(d, w, campaign, stubs[n % 2]))
    gate = threading.Barrier(len(members))

    def order(n: int) -> None:
        event = pb.Event(
            event_id=w.name(f"capped-{number}-{n}"),
            order_completed=pb.OrderCompleted(
                order_id=w.name(f"capped-{number}-{n}"), member_id=members[n], total_cents=5_000, skus=[sku]
            ),
        )
        gate.wait(timeout=60)
        request = pb.IngestEventsRequest(events=[event])
        outcome, _ = retrying(lambda: stubs[n % 2].IngestEvents(request, metadata=w.service, timeout=120))
        if not outcome.ok:
            figures.problems.append(f"round {number}: an event was refused: {outcome}")

    try:
        with ThreadPoolExecutor(len(members)) as pool:
            list(pool.map(order, range(len(members))))
    finally:
        for campaign_id in campaigns:
            _end(d, w, campaign_id)
    figures.rounds += 1
    figures.events += len(members)
    for campaign_id, capped in zip(campaigns, _CAPPED, strict=True):
        results = stubs[0].GetCampaignResults(
            pb.GetCampaignResultsRequest(campaign_id=campaign_id), metadata=w.ops, timeout=DEADLINE
        )
        # What the grants table holds, beside what the results say of it.
        held = sum(seen[Decision.GRANTED.value] for seen in _decisions(d, campaign_id).values())
        if held != results.grants:
            figures.problems.append(f"{campaign_id}: {held} grants stored, {results.grants} reported")
        spent, cap = held * capped.cost, capped.cap
        figures.overrun += max(0, spent - cap)
        # Each grant costs the same, and the events outnumber what the cap allows.
        figures.underrun += int(spent < cap)
        if spent != cap:
            figures.problems.append(f"{campaign_id}: {spent} spent of a cap of {cap}")


# --- consent and quiet hours ---------------------------------------------------------------------


@dataclass
class MessageFigures:
    customers: int = 0
    pulled: int = 0
    without_consent: int = 0
    in_quiet_hours: int = 0
    owed_not_pulled: int = 0
    problems: list[str] = field(default_factory=list)


MINI_CHANNEL = common_pb2.CHANNEL_WECHAT_MINI_PROGRAM
GREETING = "Hello {display_name}"
CONSENTS = ("given", "never", "withdrawn")
SHANGHAI = ZoneInfo("Asia/Shanghai")  # the zone of a member without a home store's


def _hours(now: datetime, start: timedelta, end: timedelta) -> dict[str, str]:
    local = now.astimezone(SHANGHAI)
    return {
        "QUANYU_MARKETING_QUIET_START": f"{(local + start):%H:%M}",
        "QUANYU_MARKETING_QUIET_END": f"{(local + end):%H:%M}",
    }


def messages_against_consent(d: Deployment, *, customers: int = 30) -> MessageFigures:
    """`customers` customers of the mini-program (a third of each consent), reached half through a
    replica whose quiet hours hold now and half through one whose quiet hours are hours away."""
    figures = MessageFigures(customers=customers)
    w = World(d)
    sku = w.name("greeted")
    now = datetime.now(UTC)
    quiet = _hours(now, -timedelta(hours=1), timedelta(hours=3))
    awake = _hours(now, timedelta(hours=5), timedelta(hours=6))
    people = [(w.name(f"cus-{n}"), CONSENTS[n % 3], n % 2 == 0) for n in range(customers)]
    with d.replica("marketing", **quiet) as in_quiet, d.replica("marketing", **awake) as out_of_quiet:
        stubs = {True: marketing_pb2_grpc.MarketingServiceStub(in_quiet)}
        stubs[False] = marketing_pb2_grpc.MarketingServiceStub(out_of_quiet)
        facts = [event for customer, _, _ in people for event in _known(w, customer)]
        for start in range(0, len(facts), 500):
            _stub(d).IngestEvents(
                pb.IngestEventsRequest(events=facts[start : start + 500]), metadata=w.service, timeout=120
            )
        for customer, consent, _ in people:
            _consent(d, w, customer, consent)
        campaign_id = _start(
            d,
            w,
            pb.Campaign(
                name=w.name("greeting"),
                trigger=pb.Trigger(event=pb.TRIGGER_EVENT_ORDER_COMPLETED),
                audience=pb.Audience(skus=[sku]),
                actions=[pb.Action(send_message=pb.MessageAction(channel=MINI_CHANNEL, template=GREETING))],
            ),
        )
        try:
            for customer, _, is_quiet in people:
                event = pb.Event(
                    event_id=w.name(f"greeted-{customer}"),
                    order_completed=pb.OrderCompleted(
                        order_id=w.name(f"o-{customer}"),
                        member_id=f"mem-{customer}",
                        customer_id=customer,
                        total_cents=5_000,
                        skus=[sku],
                    ),
                )
                stubs[is_quiet].IngestEvents(
                    pb.IngestEventsRequest(events=[event]), metadata=w.service, timeout=DEADLINE
                )
        finally:
            _end(d, w, campaign_id)
        pulled = _pull_all(d, w, campaign_id)
    figures.pulled = sum(pulled.values())
    for customer, consent, is_quiet in people:
        got = pulled.get(customer, 0)
        if consent != "given":
            figures.without_consent += got
        if is_quiet:
            figures.in_quiet_hours += got
        if consent == "given" and not is_quiet and got == 0:
            figures.owed_not_pulled += 1
        if got and (consent != "given" or is_quiet):
            figures.problems.append(f"{got} pulled for a customer {consent} consent, quiet: {is_quiet}")
    return figures


def _known(w: World, customer: str) -> list[pb.Event]:
    """What identity and membership tell marketing of a customer of the mini-program."""
    return [
        pb.Event(
            event_id=w.name(f"linked-{customer}"),
            account_linked=pb.AccountLinked(
                customer_id=customer,
                account=common_pb2.ChannelAccount(channel=MINI_CHANNEL, external_id=f"openid-{customer}"),
                display_name="Lin",
            ),
        ),
        pb.Event(
            event_id=w.name(f"enrolled-{customer}"),
            member_enrolled=pb.MemberEnrolled(
                member=pb.MemberProfile(member_id=f"mem-{customer}", customer_id=customer, tier="BRONZE")
            ),
        ),
    ]


def _consent(d: Deployment, w: World, customer: str, consent: str) -> None:
    answers = {"given": [True], "never": [], "withdrawn": [True, False]}[consent]
    for answer in answers:
        _stub(d).SetContactPreferences(
            pb.SetContactPreferencesRequest(
                customer_id=customer, channel=MINI_CHANNEL, marketing_consent=answer
            ),
            metadata=w.mini,
            timeout=DEADLINE,
        )


def _pull_all(d: Deployment, w: World, campaign_id: str) -> Counter[str]:
    """The mini-program channel pulls (and acknowledges) until nothing is left: the campaign's
    messages pulled, per customer."""
    pulled: Counter[str] = Counter()
    mini = w.mini
    while True:
        answer = _stub(d).PullMessages(
            pb.PullMessagesRequest(max_messages=100), metadata=mini, timeout=DEADLINE
        )
        if not answer.messages:
            return pulled
        pulled.update(m.customer_id for m in answer.messages if m.campaign_id == campaign_id)
        _stub(d).AckMessages(
            pb.AckMessagesRequest(message_ids=[m.message_id for m in answer.messages]),
            metadata=mini,
            timeout=DEADLINE,
        )
