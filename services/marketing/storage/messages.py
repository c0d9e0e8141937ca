"""Queued messages, leased to the channel backend that pulls them until it acknowledges them, and
each customer's consent per channel."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.engine import Connection

from quanyu.db import from_row
from services.marketing.domain import CODE_PLACEHOLDER, Channel
from services.marketing.ports import IssuedCoupon, Message, MessageStatus
from services.marketing.storage.sql import insert_new
from services.marketing.storage.tables import consents, messages


class MessageRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def add(self, message: Message) -> bool:
        return insert_new(
            self._db,
            messages,
            {
                "message_id": message.message_id,
                "campaign_id": message.campaign_id,
                "grant_key": message.grant_key,
                "customer_id": message.customer_id,
                "member_id": message.member_id,
                "channel": message.channel.value,
                "account": message.account,
                "text": message.text,
                "create_time": message.create_time,
                "send_at": message.send_at,
                "status": message.status.value,
                "lease_until": message.lease_until,
                "pulls": message.pulls,
                "deliver_time": message.deliver_time,
                "status_reason": message.status_reason,
                "awaits_coupon": message.awaits_coupon,
            },
        )

    def get(self, message_id: str) -> Message | None:
        row = self._db.execute(select(messages).where(messages.c.message_id == message_id)).first()
        return _message(row) if row else None

    def pull(self, channel: Channel, now: datetime, lease: timedelta, limit: int) -> list[Message]:
        c = messages.c
        free = or_(c.lease_until.is_(None), c.lease_until <= now)
        due = [
            c.channel == channel.value,
            c.status == MessageStatus.PENDING.value,
            c.send_at <= now,
            c.awaits_coupon == "",
            free,
        ]
        query = select(c.message_id).where(*due).order_by(c.send_at, c.message_id).limit(limit)
        if self._db.dialect.name == "postgresql":
            # Backends pulling at once each take different messages rather than all reaching for
            # the same first few and leaving with nothing (SQLite lets one writer in at a time).
            query = query.with_for_update(skip_locked=True)
        candidates = self._db.execute(query).scalars()
        leased = []
        for message_id in list(candidates):
            # Conditional on the lease still being free: of two backends pulling at once, one
            # leases each message and the other skips it.
            taken = self._db.execute(
                update(messages)
                .where(c.message_id == message_id, *due)
                .values(lease_until=now + lease, pulls=c.pulls + 1)
            )
            if taken.rowcount == 1:
                leased.append(message_id)
        if not leased:
            return []
        rows = self._db.execute(
            select(messages).where(c.message_id.in_(leased)).order_by(c.send_at, c.message_id)
        )
        return [_message(row) for row in rows]

    def ack(self, channel: Channel, message_ids: Iterable[str], now: datetime) -> int:
        c = messages.c
        done = self._db.execute(
            update(messages)
            .where(
                c.message_id.in_(list(message_ids)),
                c.channel == channel.value,
                c.status == MessageStatus.PENDING.value,
                c.lease_until.is_not(None),
            )
            .values(status=MessageStatus.DELIVERED.value, deliver_time=now)
        )
        return int(done.rowcount)

    def fill_coupon_codes(self, issued: Sequence[IssuedCoupon]) -> int:
        if not issued:
            return 0
        c = messages.c
        # Found by the grant's key (the lead column of an index); the code is a value of the
        # coupon alphabet, nothing a template would read as a placeholder or a phone number.
        done = self._db.execute(
            update(messages)
            .where(c.grant_key == bindparam("grant"), c.awaits_coupon == bindparam("request"))
            .values(text=func.replace(c.text, CODE_PLACEHOLDER, bindparam("code")), awaits_coupon=""),
            [{"grant": i.grant_key, "request": i.request_id, "code": i.code} for i in issued],
        )
        return int(done.rowcount)

    def suppress_unpulled(self, customer_id: str, channel: Channel, reason: str) -> int:
        c = messages.c
        # A message already pulled is in the backend's hands; only those never pulled are stopped.
        done = self._db.execute(
            update(messages)
            .where(
                c.customer_id == customer_id,
                c.channel == channel.value,
                c.status == MessageStatus.PENDING.value,
                c.pulls == 0,
            )
            .values(status=MessageStatus.SUPPRESSED.value, status_reason=reason)
        )
        return int(done.rowcount)

    def of_member(self, campaign_id: str, member_id: str) -> list[Message]:
        c = messages.c
        rows = self._db.execute(
            select(messages)
            .where(c.campaign_id == campaign_id, c.member_id == member_id)
            .order_by(c.create_time, c.message_id)
        )
        return [_message(row) for row in rows]

    def rivals(self, message: Message, moment: timedelta) -> list[Message]:
        c = messages.c
        rows = self._db.execute(
            select(messages).where(
                c.customer_id == message.customer_id,
                c.channel == message.channel.value,
                c.campaign_id != message.campaign_id,
                c.status == MessageStatus.PENDING.value,
                c.pulls == 0,
                c.send_at >= message.send_at - moment,
                c.send_at <= message.send_at + moment,
            )
        )
        return [_message(row) for row in rows]

    def suppress(self, message_ids: Sequence[str], reason: str) -> int:
        if not message_ids:
            return 0
        c = messages.c
        done = self._db.execute(
            update(messages)
            .where(c.message_id.in_(list(message_ids)), c.status == MessageStatus.PENDING.value, c.pulls == 0)
            .values(status=MessageStatus.SUPPRESSED.value, status_reason=reason)
        )
        return int(done.rowcount)

    def sent_times(self, customer_id: str, channel: Channel, since: datetime) -> list[datetime]:
        c = messages.c
        rows = self._db.execute(
            select(c.send_at)
            .where(
                c.customer_id == customer_id,
                c.channel == channel.value,
                c.status != MessageStatus.SUPPRESSED.value,
                c.send_at > since,
            )
            .order_by(c.send_at)
        )
        return list(rows.scalars())

    def count(self, campaign_id: str, status: MessageStatus) -> int:
        query = select(func.count()).where(
            messages.c.campaign_id == campaign_id, messages.c.status == status.value
        )
        return int(self._db.execute(query).scalar_one())


def _message(row: Any) -> Message:
    return from_row(Message, row, channel=Channel(row.channel), status=MessageStatus(row.status))


class ConsentRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def set(self, customer_id: str, channel: Channel, consent: bool, now: datetime) -> None:
        values = {
            "customer_id": customer_id,
            "channel": channel.value,
            "consent": consent,
            "update_time": now,
        }
        if not insert_new(self._db, consents, values):
            self._db.execute(
                update(consents)
                .where(consents.c.customer_id == customer_id, consents.c.channel == channel.value)
                .values(consent=consent, update_time=now)
            )

    def of(self, customer_id: str) -> dict[Channel, bool]:
        rows = self._db.execute(
            select(consents.c.channel, consents.c.consent).where(consents.c.customer_id == customer_id)
        )
        return {Channel(row.channel): bool(row.consent) for row in rows}
