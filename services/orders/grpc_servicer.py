"""OrderService over gRPC: messages in, use cases called, messages out. No rules live here."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

import grpc

from quanyu.auth import Principal, Role, current_principal
from quanyu.common.v1 import common_pb2
from quanyu.errors import InvalidArgument
from quanyu.orders.v1 import orders_pb2, orders_pb2_grpc
from quanyu.server import Servicer, rpc_policy
from quanyu.wire import from_timestamp, to_timestamp
from services.orders.domain import (
    MAX_STATUSES,
    CustomerRef,
    FulfilmentType,
    Line,
    Order,
    OrderRequest,
    PlaceOrder,
    Status,
)
from services.orders.domain.known import MAX_EVENTS, CustomerEvent, MemberState
from services.orders.domain.known import CustomerState as KnownState
from services.orders.handlers import OrdersService

SERVICE = orders_pb2.DESCRIPTOR.services_by_name["OrderService"]
_STORE_WORK = (Role.STORE, Role.OPS)
POLICY = rpc_policy(
    SERVICE,
    {
        "CreateOrder": (Role.CHANNEL, Role.STORE, Role.SERVICE, Role.OPS),
        "GetOrder": (Role.CHANNEL, Role.STORE, Role.SERVICE, Role.OPS),
        "ListOrders": (Role.CHANNEL, Role.STORE, Role.SERVICE, Role.OPS),
        "AcceptOrder": _STORE_WORK,
        "RejectOrder": _STORE_WORK,
        "MarkOrderReady": _STORE_WORK,
        "CompleteOrder": _STORE_WORK,
        "CancelOrder": (Role.CHANNEL, Role.STORE, Role.SERVICE, Role.OPS),
        "GetStoreReport": _STORE_WORK,
        "GetGuideReport": _STORE_WORK,
        "GetOrderHistory": _STORE_WORK,
        "GetOutboxStatus": (Role.OPS,),
        "IngestCustomerEvents": (Role.SERVICE,),
    },
)

_TYPES = {
    common_pb2.FULFILMENT_TYPE_DELIVERY: FulfilmentType.DELIVERY,
    common_pb2.FULFILMENT_TYPE_PICKUP: FulfilmentType.PICKUP,
    common_pb2.FULFILMENT_TYPE_IN_STORE: FulfilmentType.IN_STORE,
}
_TYPES_OUT = {v: k for k, v in _TYPES.items()}
_STATUSES = {status: orders_pb2.OrderStatus.Value(f"ORDER_STATUS_{status.value}") for status in Status}
_STATUSES_IN = {v: k for k, v in _STATUSES.items()}


def customer_event(message: orders_pb2.CustomerEvent, at: str, invalid: dict[str, str]) -> CustomerEvent:
    """An event's values (unchecked: the use case checks them); `invalid` gathers what cannot
    even be read, by its field path."""
    kind = message.WhichOneof("kind")
    if kind == "customer":
        told = message.customer
        accounts = []
        for index, account in enumerate(told.accounts):
            channel = ""
            if account.channel != 0 and account.channel in common_pb2.Channel.values():
                channel = common_pb2.Channel.Name(account.channel)
            else:
                invalid[f"{at}.customer.accounts[{index}].channel"] = "is not a channel"
            accounts.append((channel, account.external_id))
        customer = KnownState(
            told.customer_id,
            told.version,
            told.merged_into_customer_id,
            tuple(accounts),
            tuple(told.phone_hashes),
            told.withheld,
        )
        return CustomerEvent(message.event_id, customer=customer)
    if kind == "member":
        m = message.member
        member = MemberState(
            m.member_id, m.version, m.customer_id, m.root_member_id, m.home_store_id, m.guide_id
        )
        return CustomerEvent(message.event_id, member=member)
    return CustomerEvent(message.event_id)


def default_channel(principal: Principal) -> str:
    """The channel an order comes through when the request leaves it unspecified."""
    if principal.role is Role.CHANNEL:
        return principal.channel
    if principal.role is Role.STORE:
        return "CHANNEL_STORE_POS"
    return ""


def request_from(
    message: orders_pb2.CreateOrderRequest, *, owner: str, default_channel: str = ""
) -> OrderRequest:
    """The request's values (unchecked: the use case checks them)."""
    return placing_from(message, owner=owner, default_channel=default_channel).request


def placing_from(
    message: orders_pb2.CreateOrderRequest, *, owner: str, default_channel: str = ""
) -> PlaceOrder:
    channel_known = message.channel in common_pb2.Channel.values() and message.channel != 0
    channel = common_pb2.Channel.Name(message.channel) if channel_known else ""
    if message.channel == 0 and default_channel:
        channel, channel_known = default_channel, True
    kind = _TYPES.get(message.fulfilment_type)
    account_channel = ""
    if message.HasField("account"):
        value = message.account.channel
        account_channel = (
            common_pb2.Channel.Name(common_pb2.Channel.ValueType(value))
            if value in common_pb2.Channel.values() and value != 0
            else ""
        )
    location = None
    if message.HasField("delivery_location"):
        where = message.delivery_location
        if where.system not in common_pb2.CoordinateSystem.values():
            raise InvalidArgument("delivery_location.system", "is not a known coordinate system")
        location = (where.latitude, where.longitude, int(where.system))
    request = OrderRequest(
        request_id=message.request_id,
        owner=owner,
        customer=CustomerRef(
            customer_id=message.customer_id,
            account_channel=account_channel,
            account_external_id=message.account.external_id if message.HasField("account") else "",
            phone=message.phone,
        ),
        channel=channel,
        fulfilment_type=kind or FulfilmentType.DELIVERY,
        lines=tuple(Line(ln.sku, ln.quantity, ln.unit_price_cents) for ln in message.lines),
        delivery_location=location,
        delivery_address=message.delivery_address,
        origin_store_id=message.origin_store_id,
        guide_id=message.guide_id,
        coupon_code=message.coupon_code,
        points_to_redeem=message.points_to_redeem,
        member_code=message.member_code,
    )
    return PlaceOrder(request, channel_known=channel_known, type_known=kind is not None)


def order_message(order: Order) -> orders_pb2.Order:
    message = orders_pb2.Order(
        order_id=order.order_id,
        request_id=order.request_id,
        customer_id=order.customer_id,
        member_id=order.member_id,
        channel=common_pb2.Channel.Value(order.channel),
        fulfilment_type=_TYPES_OUT[order.fulfilment_type],
        lines=[
            common_pb2.Line(sku=ln.sku, quantity=ln.quantity, unit_price_cents=ln.unit_price_cents)
            for ln in order.lines
        ],
        subtotal_cents=order.price.subtotal_cents,
        discount_cents=order.price.discount_cents,
        points_redeemed=order.price.points_redeemed,
        total_cents=order.price.total_cents,
        delivery_address=order.delivery_address,
        origin_store_id=order.origin_store_id,
        fulfilling_store_id=order.fulfilling_store_id,
        guide_id=order.guide_id,
        status=_STATUSES[order.status],
        rejected_store_ids=order.rejected_store_ids,
        coupon_code=order.coupon_code,
        points_earned=order.points_earned,
        create_time=to_timestamp(order.create_time),
        update_time=to_timestamp(order.update_time),
        status_reason=order.status_reason,
    )
    if order.delivery_location is not None:
        lat, lng, system = order.delivery_location
        message.delivery_location.CopyFrom(
            common_pb2.LatLng(
                latitude=lat, longitude=lng, system=common_pb2.CoordinateSystem.ValueType(system)
            )
        )
    return message


def _window(
    request: orders_pb2.GetStoreReportRequest | orders_pb2.GetGuideReportRequest,
) -> tuple[datetime | None, datetime | None]:
    return (
        from_timestamp(request.start_time, field_name="start_time", present=request.HasField("start_time")),
        from_timestamp(request.end_time, field_name="end_time", present=request.HasField("end_time")),
    )


class OrderServicer(
    Servicer[OrdersService], orders_pb2_grpc.OrderServiceServicer, service=SERVICE, policy=POLICY
):
    def CreateOrder(
        self, request: orders_pb2.CreateOrderRequest, context: grpc.ServicerContext
    ) -> orders_pb2.CreateOrderResponse:
        principal = current_principal()
        order = self._service.create(
            principal,
            placing_from(request, owner=principal.owner, default_channel=default_channel(principal)),
        )
        return orders_pb2.CreateOrderResponse(order=order_message(order))

    def GetOrder(
        self, request: orders_pb2.GetOrderRequest, context: grpc.ServicerContext
    ) -> orders_pb2.GetOrderResponse:
        return orders_pb2.GetOrderResponse(
            order=order_message(self._service.get(current_principal(), request.order_id))
        )

    def ListOrders(
        self, request: orders_pb2.ListOrdersRequest, context: grpc.ServicerContext
    ) -> orders_pb2.ListOrdersResponse:
        if len(request.statuses) > MAX_STATUSES:
            raise InvalidArgument("statuses", f"at most {MAX_STATUSES} statuses")
        statuses = []
        for index, value in enumerate(request.statuses):
            if value not in _STATUSES_IN:
                raise InvalidArgument(f"statuses[{index}]", "is not an order status")
            statuses.append(_STATUSES_IN[value])
        found, token = self._service.list_orders(
            current_principal(),
            customer_id=request.customer_id,
            store_id=request.store_id,
            statuses=statuses,
            requested=request.page_size,
            token=request.page_token,
        )
        return orders_pb2.ListOrdersResponse(orders=[order_message(o) for o in found], next_page_token=token)

    def AcceptOrder(
        self, request: orders_pb2.AcceptOrderRequest, context: grpc.ServicerContext
    ) -> orders_pb2.AcceptOrderResponse:
        order = self._service.accept(current_principal(), request.order_id)
        return orders_pb2.AcceptOrderResponse(order=order_message(order))

    def RejectOrder(
        self, request: orders_pb2.RejectOrderRequest, context: grpc.ServicerContext
    ) -> orders_pb2.RejectOrderResponse:
        order = self._service.reject(current_principal(), request.order_id, request.reason, request.store_id)
        if order is None:
            # The order went on to another store: the till that rejected it learns that it stood.
            return orders_pb2.RejectOrderResponse(order=orders_pb2.Order(order_id=request.order_id))
        return orders_pb2.RejectOrderResponse(order=order_message(order))

    def MarkOrderReady(
        self, request: orders_pb2.MarkOrderReadyRequest, context: grpc.ServicerContext
    ) -> orders_pb2.MarkOrderReadyResponse:
        order = self._service.mark_ready(current_principal(), request.order_id)
        return orders_pb2.MarkOrderReadyResponse(order=order_message(order))

    def CompleteOrder(
        self, request: orders_pb2.CompleteOrderRequest, context: grpc.ServicerContext
    ) -> orders_pb2.CompleteOrderResponse:
        order = self._service.complete(current_principal(), request.order_id)
        return orders_pb2.CompleteOrderResponse(order=order_message(order))

    def CancelOrder(
        self, request: orders_pb2.CancelOrderRequest, context: grpc.ServicerContext
    ) -> orders_pb2.CancelOrderResponse:
        order = self._service.cancel(current_principal(), request.order_id, request.reason)
        return orders_pb2.CancelOrderResponse(order=order_message(order))

    def GetStoreReport(
        self, request: orders_pb2.GetStoreReportRequest, context: grpc.ServicerContext
    ) -> orders_pb2.GetStoreReportResponse:
        report = self._service.store_report(current_principal(), request.store_id, *_window(request))
        return orders_pb2.GetStoreReportResponse(**asdict(report))

    def GetGuideReport(
        self, request: orders_pb2.GetGuideReportRequest, context: grpc.ServicerContext
    ) -> orders_pb2.GetGuideReportResponse:
        figures = self._service.guide_report(current_principal(), request.guide_id, *_window(request))
        return orders_pb2.GetGuideReportResponse(**asdict(figures))

    def GetOrderHistory(
        self, request: orders_pb2.GetOrderHistoryRequest, context: grpc.ServicerContext
    ) -> orders_pb2.GetOrderHistoryResponse:
        changes = self._service.history(current_principal(), request.order_id)
        return orders_pb2.GetOrderHistoryResponse(
            changes=[
                orders_pb2.StatusChange(
                    from_status=_STATUSES[Status(c.from_status)]
                    if c.from_status
                    else orders_pb2.ORDER_STATUS_UNSPECIFIED,
                    to_status=_STATUSES[Status(c.to_status)],
                    actor=c.actor,
                    reason=c.reason,
                    store_id=c.store_id,
                    change_time=to_timestamp(c.change_time),
                )
                for c in changes
            ]
        )

    def IngestCustomerEvents(
        self, request: orders_pb2.IngestCustomerEventsRequest, context: grpc.ServicerContext
    ) -> orders_pb2.IngestCustomerEventsResponse:
        invalid: dict[str, str] = {}
        # Past the cap the use case refuses the request as a whole: nothing to read beyond it.
        events = [
            customer_event(e, f"events[{i}]", invalid) for i, e in enumerate(request.events[:MAX_EVENTS])
        ]
        events += [CustomerEvent("")] * max(0, len(request.events) - MAX_EVENTS)
        applied, ignored = self._service.ingest_customer_events(events, invalid)
        return orders_pb2.IngestCustomerEventsResponse(applied=applied, ignored=ignored)

    def GetOutboxStatus(
        self, request: orders_pb2.GetOutboxStatusRequest, context: grpc.ServicerContext
    ) -> orders_pb2.GetOutboxStatusResponse:
        state = self._service.outbox_state()
        return orders_pb2.GetOutboxStatusResponse(
            undelivered=state.undelivered,
            failed=state.failed,
            oldest_undelivered_time=to_timestamp(state.oldest_undelivered),
            lag_seconds=state.lag_seconds(self._service.clock()),
        )
