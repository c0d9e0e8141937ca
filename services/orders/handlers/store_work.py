"""The store's work on an order, and what orders does by itself: accept, reject, mark ready,
complete and cancel; re-routing a waiting order; rejecting orders left unaccepted; noting on an
order what the other services answered."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

import structlog

from quanyu.auth import Principal, Role
from quanyu.errors import FailedPrecondition, NotFound, PermissionDenied, Unavailable
from quanyu.unit_of_work import Transaction
from services.orders.domain import Effect, Order, Status, check_change
from services.orders.domain.events import Reroute
from services.orders.handlers.access import SYSTEM_PRINCIPAL, actor_of, fulfilling_store_only, visible
from services.orders.handlers.base import UseCases
from services.orders.ports import Stores

log = structlog.get_logger("quanyu.orders")

Step = Callable[[Order, datetime], list[Effect]]


class StoreWork(UseCases):
    def accept(self, principal: Principal, order_id: str) -> Order:
        return self._by_caller(principal, order_id, "", lambda o, now: o.accept(actor_of(principal), now))

    def mark_ready(self, principal: Principal, order_id: str) -> Order:
        return self._by_caller(principal, order_id, "", lambda o, now: o.mark_ready(actor_of(principal), now))

    def complete(self, principal: Principal, order_id: str) -> Order:
        return self._by_caller(principal, order_id, "", lambda o, now: o.complete(actor_of(principal), now))

    def cancel(self, principal: Principal, order_id: str, reason: str) -> Order:
        def step(order: Order, now: datetime) -> list[Effect]:
            return order.cancel(actor_of(principal), reason, now)

        # A channel or ops cancels any order it sees; a store only one it fulfils.
        return self._by_caller(principal, order_id, reason, step, cancelling=principal.role is not Role.STORE)

    def _by_caller(
        self, principal: Principal, order_id: str, reason: str, step: Step, *, cancelling: bool = False
    ) -> Order:
        check_change(order_id, reason)
        allowed = visible if cancelling else fulfilling_store_only
        return self._change(order_id, step, lambda found: allowed(principal, order_id, found))

    def _change(
        self, order_id: str, step: Step, allowed: Callable[[Order | None], Order] | None = None
    ) -> Order:
        """Load the order, ask it to make a change, save what changed with its effects."""

        def work(tx: Transaction[Stores]) -> Order:
            found = tx.stores.orders.get(order_id, lock=True)
            order = allowed(found) if allowed else found
            if order is None:
                raise NotFound("order", order_id)
            now = self.clock()
            self._saved(tx, order, step(order, now), now)
            return order

        return self.uow.run(work)

    def reject(self, principal: Principal, order_id: str, reason: str, store_id: str) -> Order | None:
        """The store turns the order down: release its stock and route the order on.

        The answer is the order after rerouting, when the caller may still read it; None when the
        order has moved on to a store that is not the caller (a till retrying its rejection
        learns only that it stood).
        """
        check_change(order_id, reason, reason_required=True, store_id=store_id)
        if principal.role is Role.STORE:
            if store_id and store_id != principal.store_id:
                raise PermissionDenied("a store rejects only for itself", reason="OTHER_STORE")
            store_id = principal.store_id

        def work(tx: Transaction[Stores]) -> list[Effect]:
            found = tx.stores.orders.get(order_id, lock=True)
            if found is not None and found.has_rejected(store_id):
                return []  # a retry, also by a store that is no longer fulfilling the order
            order = fulfilling_store_only(principal, order_id, found)
            now = self.clock()
            effects = order.reject(store_id, reason, actor_of(principal), now)
            self._saved(tx, order, effects, now)
            return effects

        self._route_on(order_id, self.uow.run(work))
        after = visible(SYSTEM_PRINCIPAL, order_id, self.uow.read(lambda tx: tx.stores.orders.get(order_id)))
        if principal.role is Role.STORE and not after.is_for_store(principal.store_id):
            return None
        return after

    def _route_on(self, order_id: str, effects: list[Effect]) -> None:
        """Re-route at once what a rejection sent back; the outbox does it later if this fails."""
        for effect in effects:
            if isinstance(effect, Reroute):
                try:
                    self.reroute(order_id, effect.release_store_id)
                except Unavailable:
                    log.warning(
                        "fulfilment unavailable; the rejected order waits for its next store",
                        order_id=order_id,
                    )

    def reroute(self, order_id: str, release_store_id: str) -> None:
        """Give a waiting order its store (after a rejection, or once fulfilment is back).

        Safe to run twice at once (the relay and a rejecting call): fulfilment answers both alike
        for one order id, and only one of them moves the order.
        """
        order = self.uow.read(lambda tx: tx.stores.orders.get(order_id))
        if order is None or order.status is not Status.PENDING_ASSIGNMENT:
            return
        if release_store_id:
            self.downstream.release(order_id, release_store_id)
        where = order.where()
        try:
            if not where.is_anywhere:
                raise FailedPrecondition("nowhere to look for a store from", reason="NO_STORE_IN_RANGE")
            placed = self.downstream.assign(
                order_id, order.lines, order.fulfilment_type, where, at=self.clock()
            )
        except FailedPrecondition as nothing:
            reason = nothing.reason

            def give_up(order: Order, now: datetime) -> list[Effect]:
                order.give_up(reason, now)
                return []

            self._change(order_id, give_up)
            return
        window = self.behaviour.accept_window
        self._change(order_id, lambda o, now: o.assign(placed[0].store_id, now, window))

    def time_out_unaccepted(self) -> int:
        """Orders a store left unaccepted past its window are rejected for it (ACCEPT_TIMEOUT)."""
        due = self.uow.read(lambda tx: tx.stores.orders.due_for_timeout(self.clock(), 100))
        for order_id, store_id in due:
            self._time_out(order_id, store_id)
        return len(due)

    def _time_out(self, order_id: str, store_id: str) -> None:
        effects: list[Effect] = []

        def time_out(order: Order, now: datetime) -> list[Effect]:
            effects[:] = order.time_out(store_id, now)
            return effects

        self._change(order_id, time_out)
        self._route_on(order_id, effects)

    # --- effects, applied back on the order ---------------------------------------------------

    def note_points_earned(self, order_id: str, points: int) -> None:
        self._note(order_id, lambda order: order.note_points_earned(points))

    def note_points_earned_many(self, earned: Mapping[str, int]) -> None:
        """The points of a batch of orders (by order id) written back in one transaction."""

        def work(tx: Transaction[Stores]) -> None:
            # Locked in one order, so two replicas writing back overlapping batches cannot deadlock.
            for order_id, points in sorted(earned.items()):
                order = tx.stores.orders.get(order_id, lock=True)
                if order is not None:
                    order.note_points_earned(points)
                    tx.stores.orders.save(order)

        self.uow.run(work)

    def note_origin_hours(self, order_id: str, was_open: bool) -> None:
        self._note(order_id, lambda order: order.note_origin_hours(was_open))

    def _note(self, order_id: str, note: Callable[[Order], None]) -> None:
        def work(tx: Transaction[Stores]) -> None:
            order = tx.stores.orders.get(order_id, lock=True)
            if order is not None:
                note(order)
                tx.stores.orders.save(order)

        self.uow.run(work)
