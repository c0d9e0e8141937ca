"""Reading orders: one order, a page of a store's queue or a customer's orders, an order's
history, and the reports of stores and guides."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from quanyu.auth import Principal, Role
from quanyu.errors import InvalidArgument, PermissionDenied
from quanyu.outbox import OutboxState
from quanyu.paging import page_size
from quanyu.unit_of_work import Transaction
from services.orders.domain import Order, Status, StatusChange, check_listing, check_order_id, report_window
from services.orders.handlers.access import visible
from services.orders.handlers.base import UseCases
from services.orders.ports import GuideFigures, Page, StoreFigures, Stores


class Reading(UseCases):
    def get(self, principal: Principal, order_id: str) -> Order:
        check_order_id(order_id)
        return visible(principal, order_id, self.order(order_id))

    def order(self, order_id: str) -> Order | None:
        return self.uow.read(lambda tx: tx.stores.orders.get(order_id))

    def list_orders(
        self,
        principal: Principal,
        *,
        customer_id: str,
        store_id: str,
        statuses: Sequence[Status],
        requested: int,
        token: str,
    ) -> tuple[list[Order], str]:
        channel = ""
        if principal.role is Role.STORE:
            if store_id and store_id != principal.store_id:
                raise PermissionDenied("a store sees only its own queue", reason="OTHER_STORE")
            store_id = principal.store_id
        if principal.role is Role.CHANNEL:
            if not customer_id:
                raise InvalidArgument("customer_id", "a channel lists the orders of one customer")
            channel = principal.channel
        check_listing(customer_id, store_id)
        size = page_size(requested)
        query = {
            "customer": customer_id,
            "store": store_id,
            "channel": channel,
            "statuses": sorted(s.value for s in statuses),
        }
        caller = principal.name
        position = self.page_tokens.decode(token, query=query, caller=caller)
        before = (datetime.fromisoformat(position["time"]), str(position["order"])) if position else None
        page = Page(customer_id, store_id, channel, statuses, before, size + 1)
        found = self.uow.read(lambda tx: tx.stores.orders.page(page))
        more = len(found) > size
        found = found[:size]
        next_token = ""
        if more:
            last = found[-1]
            next_token = self.page_tokens.encode(
                {"time": last.create_time.isoformat(), "order": last.order_id}, query=query, caller=caller
            )
        return found, next_token

    def history(self, principal: Principal, order_id: str) -> list[StatusChange]:
        check_order_id(order_id)

        def read(tx: Transaction[Stores]) -> list[StatusChange]:
            visible(principal, order_id, tx.stores.orders.get(order_id))
            return tx.stores.orders.history(order_id)

        return self.uow.read(read)

    def store_report(
        self, principal: Principal, store_id: str, start: datetime | None, end: datetime | None
    ) -> StoreFigures:
        start, end = report_window("store_id", store_id, start, end, self.clock())
        principal.require_store(store_id)
        return self.uow.read(lambda tx: tx.stores.orders.store_report(store_id, start, end))

    def guide_report(
        self, principal: Principal, guide_id: str, start: datetime | None, end: datetime | None
    ) -> GuideFigures:
        start, end = report_window("guide_id", guide_id, start, end, self.clock())
        origin = principal.store_id if principal.role is Role.STORE else ""
        return self.uow.read(lambda tx: tx.stores.orders.guide_report(guide_id, start, end, origin))

    def orders_by_status(self) -> dict[str, float]:
        counts = self.uow.read(lambda tx: tx.stores.orders.count_by_status())
        return {status.value: counts.get(status.value, 0.0) for status in Status}

    def outbox_state(self) -> OutboxState:
        assert self.relay is not None
        return self.relay.state()
