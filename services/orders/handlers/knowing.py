"""Keeping what orders knows of customers and members: the states identity and membership tell
of each change, through their outboxes, kept only when newer than what is kept."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from quanyu.unit_of_work import Transaction
from services.orders.domain.known import CustomerEvent, check_events
from services.orders.handlers.base import UseCases
from services.orders.ports import Stores


class Knowing(UseCases):
    def ingest_customer_events(
        self, events: Sequence[CustomerEvent], invalid: Mapping[str, str] | None = None
    ) -> tuple[int, int]:
        """Keep each event's state if newer than the one kept, all in one transaction (a batch
        of the relay's, applied together or not at all): (applied, ignored)."""
        check_events(list(events), dict(invalid or {}))

        def work(tx: Transaction[Stores]) -> int:
            known = tx.stores.known
            applied = 0
            for event in events:
                if event.customer is not None:
                    applied += known.apply_customer(event.customer)
                elif event.member is not None:
                    applied += known.apply_member(event.member)
            return applied

        applied = self.uow.run(work)
        return applied, len(events) - applied
