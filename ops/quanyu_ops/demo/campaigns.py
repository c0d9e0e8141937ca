"""The demo's campaigns: a first-purchase coupon with a control group, and a birthday greeting on
the WeChat mini-program, played through marketing as an ops tool and a channel backend would.

New customers of the run place their first orders until both the members reached and the members
held out are there to compare; some come back for a second order, more of those holding a coupon
(as a coupon is meant to bring them), so the results have an uplift to show with its interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import grpc

from quanyu.auth import Role
from quanyu.common.v1 import common_pb2
from quanyu.identity.v1 import identity_pb2
from quanyu.marketing.v1 import marketing_pb2 as pb
from quanyu.membership.v1 import membership_pb2
from quanyu.orders.v1 import orders_pb2
from quanyu_ops.demo.chain import TIMEZONE, Chain
from quanyu_ops.demo.play import (
    DELIVERY,
    DELIVERY_PLACE,
    MINI,
    Calls,
    Run,
    Story,
    eventually,
    line,
    money,
    plural,
)

HOLDOUT_PERCENT = 10
COUPON_CENTS = 1_000
FIRST_BATCH = 12  # first orders placed before looking at the draw, then more a few at a time
MORE = 4
MOST_NEW_MEMBERS = 48
EVENTS_SECONDS = 20.0  # for orders' and membership's outboxes to tell marketing what happened
RUN_SECONDS = 45.0  # for a scheduled run to come due (marketing looks every 30 s)
BIRTHDAY_GUESTS = ("Chen Jing", "Wang Fang", "Zhou Lei")


def masked_account(external_id: str) -> str:
    return f"{external_id[:4]}…{external_id[-2:]}"


def percent(rate: float) -> str:
    return "n/a" if math.isnan(rate) else f"{rate * 100:.0f} %"


def points(rate: float) -> str:
    return "n/a" if math.isnan(rate) else f"{rate * 100:+.0f} pts"


@dataclass
class NewMember:
    member_id: str
    reached: bool


def _results(calls: Calls, campaign_id: str) -> pb.GetCampaignResultsResponse:
    answer: pb.GetCampaignResultsResponse = calls.marketing.GetCampaignResults(
        pb.GetCampaignResultsRequest(campaign_id=campaign_id),
        metadata=calls.ops,
        timeout=calls.deadline.left(),
    )
    return answer


def _explain(calls: Calls, campaign_id: str, member_id: str) -> list[str]:
    answer = calls.marketing.ExplainMember(
        pb.ExplainMemberRequest(campaign_id=campaign_id, member_id=member_id),
        metadata=calls.ops,
        timeout=calls.deadline.left(),
    )
    return list(answer.reasons)


def _started(calls: Calls, campaign: pb.Campaign, request_id: str) -> pb.Campaign:
    made = calls.marketing.CreateCampaign(
        pb.CreateCampaignRequest(campaign=campaign, request_id=request_id),
        metadata=calls.ops,
        timeout=calls.deadline.left(),
    ).campaign
    running: pb.Campaign = calls.marketing.StartCampaign(
        pb.StartCampaignRequest(campaign_id=made.campaign_id),
        metadata=calls.ops,
        timeout=calls.deadline.left(),
    ).campaign
    return running


def _end(calls: Calls, campaign_id: str) -> None:
    """Ended once shown, so the next run's customers are not reached by this run's campaign."""
    calls.marketing.EndCampaign(
        pb.EndCampaignRequest(campaign_id=campaign_id), metadata=calls.ops, timeout=calls.deadline.left()
    )


def _order(calls: Calls, chain: Chain, run: Run, who: str, what: str) -> orders_pb2.Order | None:
    """A mini-program delivery order of `who`, completed by its store; None when turned away."""
    staples = [p for p in chain.products if p.core]
    lines = [line(staples[len(who) % len(staples)], 2), line(staples[(len(who) + 3) % len(staples)], 1)]
    try:
        order: orders_pb2.Order = calls.orders.CreateOrder(
            orders_pb2.CreateOrderRequest(
                request_id=run.key(f"{who}-{what}"),
                account=common_pb2.ChannelAccount(channel=MINI, external_id=run.openid(who)),
                fulfilment_type=DELIVERY,
                lines=lines,
                delivery_location=DELIVERY_PLACE.latlng,
                delivery_address=DELIVERY_PLACE.address,
            ),
            metadata=calls.channel_token(MINI),
            timeout=calls.deadline.left(),
        ).order
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
            raise
        return None
    if order.status != orders_pb2.ORDER_STATUS_ASSIGNED:
        return None
    return calls.finish(order)


def play_first_purchase(calls: Calls, chain: Chain, run: Run, story: Story) -> None:
    story.say()
    story.say(
        f"7. A first-purchase campaign: {money(COUPON_CENTS)} off the next order, "
        f"{HOLDOUT_PERCENT} % held out to measure it"
    )
    campaign = _started(
        calls,
        pb.Campaign(
            name=f"First purchase, {run.run_id}",
            trigger=pb.Trigger(event=pb.TRIGGER_EVENT_FIRST_PURCHASE),
            actions=[pb.Action(issue_coupon=pb.CouponAction(discount_cents=COUPON_CENTS, valid_days=14))],
            holdout_percent=HOLDOUT_PERCENT,
        ),
        run.key("first-purchase"),
    )
    cid = campaign.campaign_id
    preview = calls.marketing.PreviewCampaign(
        pb.PreviewCampaignRequest(campaign_id=cid), metadata=calls.ops, timeout=calls.deadline.left()
    )
    story.step(
        f"campaign {cid} running; PreviewCampaign: {plural(preview.audience_size, 'member')} in the audience "
        f"today, {preview.holdout_size} of them in the control group, at most "
        f"{money(preview.max_coupon_cost_cents)} in coupons"
    )
    members: list[NewMember] = []
    placed = 0
    while placed < MOST_NEW_MEMBERS and not (
        any(m.reached for m in members) and any(not m.reached for m in members)
    ):
        batch = FIRST_BATCH if placed == 0 else MORE
        done = [_order(calls, chain, run, f"first-{placed + n}", "first") for n in range(batch)]
        placed += batch
        completed = [o for o in done if o is not None]
        expected = len(members) + len(completed)
        eventually(
            lambda: _results(calls, cid),
            lambda r, expected=expected: r.members_reached + r.members_held_out >= expected,  # type: ignore[misc]
            calls.deadline.left(EVENTS_SECONDS),
        )
        for order in completed:
            reasons = _explain(calls, cid, order.member_id)
            members.append(NewMember(order.member_id, reached=bool(reasons) and reasons[0] == "GRANTED"))
    reached = [m for m in members if m.reached]
    held = [m for m in members if not m.reached]
    story.step(
        f"{plural(len(members), 'new customer')} on the mini-program placed a first order, "
        f"delivered by their stores"
    )
    # Back for more: two in three of those holding a coupon, one in two of those held out.
    again = [m for n, m in enumerate(reached) if n % 3 != 2] + [m for n, m in enumerate(held) if n % 2 == 0]
    for m in again:
        index = next(i for i, x in enumerate(members) if x is m)
        _order(calls, chain, run, f"first-{index}", "again")
    results = eventually(
        lambda: _results(calls, cid),
        # Coupons count once membership has issued them, a moment after each grant.
        lambda r: r.reached_conversion > 0 and r.coupons_issued >= r.members_reached,
        calls.deadline.left(EVENTS_SECONDS),
    )
    story.step(f"{len(again)} of them came back for a second order")
    story.step(
        f"→ GetCampaignResults: {results.members_reached} reached, {results.members_held_out} held out; "
        f"{plural(results.coupons_issued, 'coupon')} issued ({money(results.coupons_issued * COUPON_CENTS)})"
    )
    story.step(
        f"→ conversion {percent(results.reached_conversion)} reached vs "
        f"{percent(results.holdout_conversion)} held out: uplift {points(results.uplift)} "
        f"(95 % interval {points(results.uplift_low)} to {points(results.uplift_high)})"
    )
    ok = bool(held) and bool(reached) and results.coupons_issued == results.members_reached
    if held:
        why = _explain(calls, cid, held[0].member_id)
        story.step(f"→ ExplainMember {held[0].member_id}: {', '.join(why)} (the control group gets nothing)")
        ok = ok and why[:1] == ["HELD_OUT"]
    _end(calls, cid)
    story.done(
        ok,
        f"7. first-purchase coupon → {results.members_reached} reached, {results.members_held_out} held out, "
        f"uplift {points(results.uplift)}",
    )


def _birthday_guest(calls: Calls, run: Run, name: str, birthday: str) -> tuple[str, str]:
    """A customer of the mini-program enrolled with today's birthday: (customer id, member id)."""
    service = calls.token(Role.SERVICE, subject="quanyu-demo-signup")
    customer = calls.identity.ResolveCustomer(
        identity_pb2.ResolveCustomerRequest(
            account=common_pb2.ChannelAccount(channel=MINI, external_id=run.openid(f"birthday-{name}")),
            display_name=name,
        ),
        metadata=service,
        timeout=calls.deadline.left(),
    ).customer
    member = calls.membership.Enroll(
        membership_pb2.EnrollRequest(customer_id=customer.customer_id, channel=MINI, birthday=birthday),
        metadata=service,
        timeout=calls.deadline.left(),
    ).member
    return customer.customer_id, member.member_id


def _consent(calls: Calls, customer_id: str) -> bool:
    """Consent given on the mini-program, once marketing has heard of the customer's account."""

    def give() -> bool:
        try:
            calls.marketing.SetContactPreferences(
                pb.SetContactPreferencesRequest(
                    customer_id=customer_id, channel=MINI, marketing_consent=True
                ),
                metadata=calls.channel_token(MINI),
                timeout=calls.deadline.left(),
            )
            return True
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return False

    return eventually(give, bool, calls.deadline.left(EVENTS_SECONDS))


def play_birthday(calls: Calls, run: Run, story: Story) -> None:
    story.say()
    local = datetime.now(UTC).astimezone(ZoneInfo(TIMEZONE))
    story.say(f"8. A birthday greeting on the mini-program, at {local:%H:%M} Shanghai time")
    birthday = f"{local:%m-%d}"
    guests = [(name, *_birthday_guest(calls, run, name, birthday)) for name in BIRTHDAY_GUESTS]
    # The last guest never answers the consent question: the greeting is not sent to them.
    consenting = [(name, cid, mid) for name, cid, mid in guests[:-1] if _consent(calls, cid)]
    story.step(
        f"{plural(len(guests), 'member')} born on {birthday} joined; {len(consenting)} said yes to "
        "marketing on the mini-program"
    )
    campaign = pb.Campaign(
        name=f"Birthday greeting, {run.run_id}",
        trigger=pb.Trigger(schedule=pb.Schedule(kind=pb.SCHEDULE_KIND_BIRTHDAY, local_time=f"{local:%H:%M}")),
        actions=[
            pb.Action(
                send_message=pb.MessageAction(
                    channel=MINI, template="Happy birthday, {display_name}! A treat waits for you in store."
                )
            )
        ],
    )
    draft = calls.marketing.CreateCampaign(
        pb.CreateCampaignRequest(campaign=campaign, request_id=run.key("birthday")),
        metadata=calls.ops,
        timeout=calls.deadline.left(),
    ).campaign
    cid = draft.campaign_id
    # Started once marketing knows every guest, so today's run finds them all.
    eventually(
        lambda: all(_explain(calls, cid, mid)[:1] != ["UNKNOWN_MEMBER"] for _, _, mid in guests),
        bool,
        calls.deadline.left(EVENTS_SECONDS),
    )
    calls.marketing.StartCampaign(
        pb.StartCampaignRequest(campaign_id=cid), metadata=calls.ops, timeout=calls.deadline.left()
    )
    story.step(
        f"campaign {cid}: BIRTHDAY at {local:%H:%M} in each member's own zone, a message on the mini-program"
    )
    ours = {mid for _, _, mid in guests}
    eventually(
        lambda: all(_explain(calls, cid, mid)[:1] == ["GRANTED"] for mid in ours),
        bool,
        calls.deadline.left(RUN_SECONDS),
    )
    pulled = calls.marketing.PullMessages(
        pb.PullMessagesRequest(max_messages=100),
        metadata=calls.channel_token(MINI),
        timeout=calls.deadline.left(),
    ).messages
    # Earlier runs' guests born today are greeted too; the story follows this run's.
    greetings = [m for m in pulled if m.campaign_id == cid and m.customer_id in {c for _, c, _ in guests}]
    for message in greetings:
        story.step(
            f'→ pulled for WeChat openid {masked_account(message.account.external_id)}: "{message.text}"'
        )
    if pulled:
        calls.marketing.AckMessages(
            pb.AckMessagesRequest(message_ids=[m.message_id for m in pulled]),
            metadata=calls.channel_token(MINI),
            timeout=calls.deadline.left(),
        )
    reasons = {mid: _explain(calls, cid, mid) for _, _, mid in guests}
    _end(calls, cid)
    quiet = [mid for mid, why in reasons.items() if "DEFERRED_QUIET_HOURS" in why]
    if quiet:
        story.step(
            f"→ {plural(len(quiet), 'greeting')} held: {local:%H:%M} is in Shanghai's quiet hours "
            "(QUANYU_MARKETING_QUIET_START/END, 21:00-09:00 by default); pulled once they end"
        )
    name, _, mid = guests[-1]
    story.step(f"→ ExplainMember for {name} ({mid}), who gave no consent: {', '.join(reasons[mid])}")
    ok = "NO_CONSENT" in reasons[mid] and len(greetings) + len(quiet) == len(consenting)
    story.done(
        ok,
        f"8. birthday greeting → {plural(len(greetings), 'message')} pulled"
        + (f", {len(quiet)} held for quiet hours" if quiet else "")
        + ", none without consent",
    )
