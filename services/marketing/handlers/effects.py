"""What a grant does once decided: its actions recorded in the outbox toward membership, each with
the key that makes it happen once, and its messages queued under the contact policy."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from quanyu.ids import new_id
from services.marketing.domain import (
    CODE_PLACEHOLDER,
    Action,
    ActionKind,
    Campaign,
    Channel,
    Contact,
    ContactPolicy,
    Contender,
    Delivery,
    MessageAction,
    action_key,
    arbitrate,
    placeholder_values,
    render,
)
from services.marketing.domain import Outcome as DeliveryOutcome
from services.marketing.ports import GrantRecord, Message, MessageStatus, Profile, Stores

# Outbox kinds: the membership RPC each effect is delivered through.
ISSUE_COUPON = "issue_coupon"
GRANT_POINTS = "grant_points"
UPDATE_TAGS = "update_tags"


@dataclass(frozen=True)
class WantedMessage:
    """A message a grant would send, held back until the campaigns wanting the member at the same
    moment have been weighed against each other."""

    campaign: Campaign
    grant: GrantRecord
    profile: Profile
    action: MessageAction
    # The request id of the coupon the grant issues before this message, whose code it may name.
    coupon_request: str = ""


def record_effects(
    stores: Stores, campaign: Campaign, grant: GrantRecord, profile: Profile
) -> list[WantedMessage]:
    """Every action of the campaign for the grant toward membership, in the campaign's order and
    in the grant's transaction (they happen if and only if the grant does); the messages it would
    send, for the caller to arbitrate and queue."""
    effects, wanted = effects_of(campaign, grant, profile)
    for kind_name, payload in effects:
        stores.outbox.add(kind_name, payload, grant.grant_time)
    return wanted


def effects_of(
    campaign: Campaign, grant: GrantRecord, profile: Profile
) -> tuple[list[tuple[str, dict[str, object]]], list[WantedMessage]]:
    """The grant's effects on membership as (outbox kind, payload), in the campaign's order, and
    the messages it would send: apart, so a scheduled page records a whole page's effects at once."""
    effects: list[tuple[str, dict[str, object]]] = []
    wanted: list[WantedMessage] = []
    coupon_request = ""
    for index, action in enumerate(campaign.actions):
        kind = action.kind
        if kind is None:
            continue
        if kind is ActionKind.SEND_MESSAGE:
            assert action.send_message is not None
            wanted.append(WantedMessage(campaign, grant, profile, action.send_message, coupon_request))
            continue
        key = action_key(grant.grant_key, index, kind)
        if kind is ActionKind.ISSUE_COUPON:
            # A message names the code of the last coupon issued before it.
            coupon_request = key
        effects.append(_effect(action, kind, key, grant))
    return effects, wanted


def send_messages(
    stores: Stores,
    wanted: Sequence[WantedMessage],
    *,
    policy: ContactPolicy,
    new_message_id: Callable[[], str] = lambda: new_id("msg"),
) -> list[Message]:
    """The messages of grants made at one moment: for each member and channel the campaign of the
    highest priority sends, and the others are kept as suppressed and counted in their campaigns'
    results, so a member is not sent several offers at once."""
    by_channel: dict[tuple[str, Channel], list[WantedMessage]] = {}
    for want in wanted:
        by_channel.setdefault((want.grant.member_id, want.action.channel), []).append(want)
    queued: list[Message] = []
    for group in by_channel.values():
        # A campaign with two messages on one channel sends its first.
        of_campaign: dict[str, WantedMessage] = {}
        for want in group:
            of_campaign.setdefault(want.campaign.campaign_id, want)
        winner, losers = arbitrate([_contender(w.campaign) for w in of_campaign.values()])
        assert winner is not None
        for contender in (winner, *losers):
            want = of_campaign[contender.campaign_id]
            lost = contender is not winner
            message = queue_message(
                stores,
                want,
                policy=policy,
                message_id=new_message_id(),
                suppressed=DeliveryOutcome.SUPPRESSED_BY_PRIORITY if lost else None,
            )
            if lost:
                stores.budgets.count_suppressed(contender.campaign_id, 1)
            elif message.status is MessageStatus.PENDING:
                message = _against_queued(stores, message, want.campaign, policy)
            queued.append(message)
    return queued


def _against_queued(stores: Stores, message: Message, campaign: Campaign, policy: ContactPolicy) -> Message:
    """The message weighed against other campaigns' messages already queued for the member on
    the channel and due at about the same time (another event's grant, another schedule, or
    quiet hours holding both): only the highest priority's goes, the others are suppressed and
    counted in their campaigns' results."""
    rivals = stores.messages.rivals(message, policy.moment)
    if not rivals:
        return message
    campaigns = {r.campaign_id: stores.campaigns.get(r.campaign_id) for r in rivals}
    contenders = [_contender(campaign)] + [_contender(c) for c in campaigns.values() if c is not None]
    winner, _ = arbitrate(contenders)
    assert winner is not None
    reason = DeliveryOutcome.SUPPRESSED_BY_PRIORITY.value
    beaten = [message] if winner.campaign_id != campaign.campaign_id else []
    beaten += [r for r in rivals if r.campaign_id != winner.campaign_id]
    stores.messages.suppress([m.message_id for m in beaten], reason)
    for lost in beaten:
        stores.budgets.count_suppressed(lost.campaign_id, 1)
    if message in beaten:
        return dataclasses.replace(message, status=MessageStatus.SUPPRESSED, status_reason=reason)
    return message


def _contender(campaign: Campaign) -> Contender:
    assert campaign.create_time is not None
    return Contender(campaign.campaign_id, campaign.priority, campaign.create_time)


def _effect(action: Action, kind: ActionKind, key: str, grant: GrantRecord) -> tuple[str, dict[str, object]]:
    base: dict[str, object] = {
        "member_id": grant.member_id,
        "campaign_id": grant.campaign_id,
        "grant_key": grant.grant_key,
    }
    if kind is ActionKind.ISSUE_COUPON:
        coupon = action.issue_coupon
        assert coupon is not None
        # Valid from the grant, not from when the outbox delivers it: a delivery delayed by an
        # outage does not hand the member a longer coupon than the campaign promised.
        expire = grant.grant_time + timedelta(days=coupon.valid_days)
        return ISSUE_COUPON, {
            **base,
            "request_id": key,
            "discount_cents": coupon.discount_cents,
            "min_spend_cents": coupon.min_spend_cents,
            "expire_time": expire.isoformat(),
        }
    if kind is ActionKind.GRANT_POINTS:
        assert action.grant_points is not None
        return GRANT_POINTS, {**base, "source_id": key, "points": action.grant_points}
    added = [action.add_tag] if action.add_tag is not None else []
    removed = [action.remove_tag] if action.remove_tag is not None else []
    return UPDATE_TAGS, {**base, "request_id": key, "add_tags": added, "remove_tags": removed}


def queue_message(
    stores: Stores,
    want: WantedMessage,
    *,
    policy: ContactPolicy,
    message_id: str,
    suppressed: DeliveryOutcome | None = None,
) -> Message:
    """The message for the member on the action's channel: pending for when it may be sent (held
    past quiet hours, not dropped), or kept as suppressed with the reason, so the member's record
    says why nothing came."""
    campaign, grant, profile, action = want.campaign, want.grant, want.profile, want.action
    now = grant.grant_time
    account = profile.accounts.get(action.channel, "")
    consent = bool(profile.customer_id) and stores.consents.of(profile.customer_id).get(action.channel, False)
    sent = (
        stores.messages.sent_times(profile.customer_id, action.channel, now - policy.window)
        if account and consent
        else []
    )
    contact = Contact(action.channel, has_account=bool(account), consent=consent, sent_times=tuple(sent))
    delivery = Delivery(suppressed) if suppressed else policy.deliver(contact, now, profile.facts.time_zone)
    # The coupon's code is membership's, known only once the coupon is issued; its placeholder is
    # left in the text for the delivery to fill in.
    values = placeholder_values(profile.facts)
    del values["coupon_code"]
    text = render(action.template, values)
    message = Message(
        message_id=message_id,
        campaign_id=campaign.campaign_id,
        grant_key=grant.grant_key,
        customer_id=profile.customer_id,
        member_id=grant.member_id,
        channel=action.channel,
        account=account,
        text=text,
        create_time=now,
        send_at=delivery.send_at or now,
        status=MessageStatus.PENDING if delivery.sent else MessageStatus.SUPPRESSED,
        status_reason=delivery.outcome.value,
        # Not pulled before the code is in: a message the member cannot use is worse than a late one.
        awaits_coupon=want.coupon_request if delivery.sent and CODE_PLACEHOLDER in text else "",
    )
    stores.messages.add(message)
    return message
