"""Marketing's message queue, consents and scheduled runs kept in memory, for MemoryStores."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from quanyu.unit_of_work import ConcurrentChange
from services.marketing.domain import CODE_PLACEHOLDER, Channel
from services.marketing.ports import IssuedCoupon, Message, MessageStatus, RunClaim


class MemoryMessages:
    def __init__(self) -> None:
        self.rows: dict[str, Message] = {}

    def add(self, message: Message) -> bool:
        if any(m.grant_key == message.grant_key and m.channel is message.channel for m in self.rows.values()):
            return False
        self.rows[message.message_id] = message
        return True

    def get(self, message_id: str) -> Message | None:
        return self.rows.get(message_id)

    def pull(self, channel: Channel, now: datetime, lease: timedelta, limit: int) -> list[Message]:
        due = sorted(
            (
                m
                for m in self.rows.values()
                if m.channel is channel
                and m.status is MessageStatus.PENDING
                and m.send_at <= now
                and not m.awaits_coupon
                and (m.lease_until is None or m.lease_until <= now)
            ),
            key=lambda m: (m.send_at, m.message_id),
        )[:limit]
        for m in due:
            self.rows[m.message_id] = replace(m, lease_until=now + lease, pulls=m.pulls + 1)
        return [self.rows[m.message_id] for m in due]

    def ack(self, channel: Channel, message_ids: Iterable[str], now: datetime) -> int:
        done = 0
        for message_id in message_ids:
            m = self.rows.get(message_id)
            if m and m.channel is channel and m.status is MessageStatus.PENDING and m.lease_until is not None:
                self.rows[message_id] = replace(m, status=MessageStatus.DELIVERED, deliver_time=now)
                done += 1
        return done

    def fill_coupon_codes(self, issued: Sequence[IssuedCoupon]) -> int:
        freed = 0
        for coupon in issued:
            for m in list(self.rows.values()):
                if m.grant_key == coupon.grant_key and m.awaits_coupon == coupon.request_id:
                    text = m.text.replace(CODE_PLACEHOLDER, coupon.code)
                    self.rows[m.message_id] = replace(m, text=text, awaits_coupon="")
                    freed += 1
        return freed

    def suppress_unpulled(self, customer_id: str, channel: Channel, reason: str) -> int:
        stopped = [
            m
            for m in self.rows.values()
            if m.customer_id == customer_id
            and m.channel is channel
            and m.status is MessageStatus.PENDING
            and m.pulls == 0
        ]
        for m in stopped:
            self.rows[m.message_id] = replace(m, status=MessageStatus.SUPPRESSED, status_reason=reason)
        return len(stopped)

    def rivals(self, message: Message, moment: timedelta) -> list[Message]:
        return [
            m
            for m in self.rows.values()
            if m.customer_id == message.customer_id
            and m.channel is message.channel
            and m.campaign_id != message.campaign_id
            and m.status is MessageStatus.PENDING
            and m.pulls == 0
            and abs(m.send_at - message.send_at) <= moment
        ]

    def suppress(self, message_ids: Sequence[str], reason: str) -> int:
        stopped = 0
        for message_id in message_ids:
            m = self.rows.get(message_id)
            if m and m.status is MessageStatus.PENDING and m.pulls == 0:
                self.rows[message_id] = replace(m, status=MessageStatus.SUPPRESSED, status_reason=reason)
                stopped += 1
        return stopped

    def sent_times(self, customer_id: str, channel: Channel, since: datetime) -> list[datetime]:
        return sorted(
            m.send_at
            for m in self.rows.values()
            if m.customer_id == customer_id
            and m.channel is channel
            and m.status is not MessageStatus.SUPPRESSED
            and m.send_at > since
        )

    def count(self, campaign_id: str, status: MessageStatus) -> int:
        return sum(1 for m in self.rows.values() if m.campaign_id == campaign_id and m.status is status)

    def of_member(self, campaign_id: str, member_id: str) -> list[Message]:
        found = (m for m in self.rows.values() if m.campaign_id == campaign_id and m.member_id == member_id)
        return sorted(found, key=lambda m: (m.create_time, m.message_id))


class MemoryConsents:
    def __init__(self) -> None:
        self._answers: dict[str, dict[Channel, bool]] = {}

    def set(self, customer_id: str, channel: Channel, consent: bool, now: datetime) -> None:
        self._answers.setdefault(customer_id, {})[channel] = consent

    def of(self, customer_id: str) -> dict[Channel, bool]:
        return dict(self._answers.get(customer_id, {}))


class MemoryRuns:
    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], RunClaim] = {}

    def claim(
        self, campaign_id: str, run_key: str, who: str, now: datetime, lease: timedelta
    ) -> RunClaim | None:
        found = self._rows.get((campaign_id, run_key))
        if found is None:
            claim = RunClaim(campaign_id, run_key, who, now + lease, "", False, 1)
        elif found.done or (found.claimed_by != who and found.lease_until > now):
            return None
        else:
            claim = replace(found, claimed_by=who, lease_until=now + lease, attempts=found.attempts + 1)
        self._rows[campaign_id, run_key] = claim
        return claim

    def advance(self, claim: RunClaim, cursor: str, now: datetime, lease: timedelta) -> RunClaim:
        self._still_held(claim)
        moved = replace(claim, cursor=cursor, lease_until=now + lease)
        self._rows[claim.campaign_id, claim.run_key] = moved
        return moved

    def finish(self, claim: RunClaim, now: datetime) -> None:
        self._still_held(claim)
        self._rows[claim.campaign_id, claim.run_key] = replace(claim, done=True)

    def get(self, campaign_id: str, run_key: str) -> RunClaim | None:
        return self._rows.get((campaign_id, run_key))

    def _still_held(self, claim: RunClaim) -> None:
        found = self._rows.get((claim.campaign_id, claim.run_key))
        if (
            found is None
            or found.done
            or (found.claimed_by, found.attempts) != (claim.claimed_by, claim.attempts)
        ):
            raise ConcurrentChange(f"run {claim.run_key} of campaign {claim.campaign_id}")
