"""What every use case of orders works with: the unit of work over orders' stores, the services
it calls, the clock, and the relay to wake once effects are committed."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import KW_ONLY, dataclass
from datetime import datetime, timedelta

from quanyu.outbox import OutboxRelay
from quanyu.paging import PageTokens
from quanyu.quota import Quota
from quanyu.unit_of_work import Clock, Transaction, UnitOfWork
from services.orders.domain import DEFAULT_LIMITS, Effect, Limits, Order
from services.orders.ports import Downstream, Stores


@dataclass
class Behaviour:
    """How orders behaves, as bootstrap configures it."""

    fingerprint_key: bytes
    accept_window: timedelta
    limits: Limits = DEFAULT_LIMITS
    phone_lookups: Quota | None = None
    # The key of the phone hashes identity finds customers by (the deployment's phone key): with
    # it, orders finds a customer it knows by phone too.
    phone_key: bytes | None = None


@dataclass
class UseCases:
    uow: UnitOfWork[Stores]
    downstream: Downstream
    page_tokens: PageTokens
    behaviour: Behaviour
    _: KW_ONLY
    clock: Clock
    relay: OutboxRelay | None = None
    close: Callable[[], None] = lambda: None

    def _wake(self) -> None:
        if self.relay is not None:
            self.relay.wake()

    def _record(
        self,
        tx: Transaction[Stores],
        effects: Iterable[Effect],
        now: datetime,
        delay: timedelta = timedelta(0),
    ) -> None:
        """Record `effects` with the change; the relay is woken once it has committed."""
        recorded = False
        for effect in effects:
            tx.stores.outbox.add(effect, now, delay=delay)
            recorded = True
        if recorded:
            tx.after_commit(self._wake)

    def _saved(self, tx: Transaction[Stores], order: Order, effects: list[Effect], now: datetime) -> None:
        """The order's changes saved and their effects recorded, in one transaction."""
        if order.changes:
            tx.stores.orders.save(order)
        self._record(tx, effects, now)
