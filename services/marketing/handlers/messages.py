"""Use cases of messages: a customer's consent per channel, and the channel backends pulling their
own channel's due messages and confirming them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import timedelta

from quanyu.paging import page_size
from quanyu.unit_of_work import Clock, Transaction, UnitOfWork
from services.marketing.domain import Channel
from services.marketing.ports import IssuedCoupon, Message, Stores

Tx = Transaction[Stores]

# Long enough for a backend to hand a batch on and confirm it; short enough that a backend that
# died holding one does not delay its messages by much.
DEFAULT_LEASE = timedelta(seconds=60)
CONSENT_WITHDRAWN = "CONSENT_WITHDRAWN"


@dataclass
class MessageCases:
    uow: UnitOfWork[Stores]
    _: KW_ONLY
    clock: Clock
    lease: timedelta = DEFAULT_LEASE

    def set_contact_preferences(
        self, customer_id: str, consents: Mapping[Channel, bool]
    ) -> dict[Channel, bool]:
        """The customer's answers recorded; withdrawing consent on a channel stops what is queued
        there and not yet pulled, in the same transaction. Their answers on every channel."""

        def work(tx: Tx) -> dict[Channel, bool]:
            now = self.clock()
            for channel, consent in sorted(consents.items()):
                tx.stores.consents.set(customer_id, channel, consent, now)
                if not consent:
                    tx.stores.messages.suppress_unpulled(customer_id, channel, CONSENT_WITHDRAWN)
            return tx.stores.consents.of(customer_id)

        return self.uow.run(work)

    def backlog(self) -> dict[str, tuple[int, float]]:
        """Per channel, messages due and not acknowledged and the seconds the oldest has waited:
        a backlog that grows means the channel's backend stopped pulling (a gauge for ops)."""
        now = self.clock()
        found = self.uow.read(lambda tx: tx.stores.messages.backlog(now))
        return {
            channel.value: (due, max(0.0, (now - oldest).total_seconds()))
            for channel, (due, oldest) in found.items()
        }

    def pull_messages(self, channel: Channel, requested: int = 0) -> list[Message]:
        """Due messages of the channel, leased to this caller: one not acknowledged before the
        lease ends is pulled again (at least once; the message id lets the receiver drop it)."""
        size = page_size(requested)
        return self.uow.run(lambda tx: tx.stores.messages.pull(channel, self.clock(), self.lease, size))

    def coupons_issued(self, issued: Sequence[IssuedCoupon]) -> int:
        """Coupons membership has issued for grants: kept for the results, and their codes put
        into the messages of their grants that name them, which may then be pulled; how many
        messages were freed. Called by the delivery of the coupons, once per batch."""

        return self.uow.run(lambda tx: self.keep_coupons(tx.stores, issued))

    def keep_coupons(self, stores: Stores, issued: Sequence[IssuedCoupon]) -> int:
        """coupons_issued in a transaction the caller holds: the outbox's, marking the batch of
        coupons delivered, so that a batch takes one write rather than two."""
        stores.coupons.add_issued(issued, self.clock())
        return stores.messages.fill_coupon_codes(issued)

    def ack_messages(self, channel: Channel, message_ids: Sequence[str]) -> int:
        """Pulled messages of the channel confirmed delivered; how many were still pending."""
        return self.uow.run(lambda tx: tx.stores.messages.ack(channel, message_ids, self.clock()))
