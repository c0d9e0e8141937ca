"""Marketing hears of members' orders across processes: orders, identity, membership and
fulfilment run as real processes, marketing is a gRPC server of this test recording what it is
told. With marketing down, orders are placed, completed and cancelled as ever, their other
effects arrive, and marketing's events (orders', and identity's and membership's of the same
customers) arrive once it is up."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from quanyu.auth import Role
from quanyu.common.v1 import common_pb2
from quanyu.marketing.v1 import marketing_pb2
from quanyu.orders.v1 import orders_pb2
from tests.orders.platform import Platform, platform
from tests.orders.test_outages import PROMPTLY, delivery, eventually, open_store, order_of, ready_order
from tests.processes import target


class Marketing:
    """MarketingService's IngestEvents, recording every event it is told in the order told."""

    def __init__(self) -> None:
        self.events: list[marketing_pb2.Event] = []
        self._lock = threading.Lock()

    def ingest_events(
        self, request: marketing_pb2.IngestEventsRequest, context: grpc.ServicerContext
    ) -> marketing_pb2.IngestEventsResponse:
        with self._lock:
            self.events.extend(request.events)
        return marketing_pb2.IngestEventsResponse(accepted=len(request.events))

    def heard(self) -> dict[str, marketing_pb2.Event]:
        with self._lock:
            return {event.event_id: event for event in self.events}


def serve(marketing: Marketing, address: str) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    ingest = grpc.unary_unary_rpc_method_handler(
        marketing.ingest_events,
        request_deserializer=marketing_pb2.IngestEventsRequest.FromString,
        response_serializer=marketing_pb2.IngestEventsResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "quanyu.marketing.v1.MarketingService", {"IngestEvents": ingest}
            ),
        )
    )
    server.add_insecure_port(address)
    server.start()
    return server


@pytest.fixture(scope="module")
def p(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with platform(
        tmp_path_factory.mktemp("marketing"),
        services=("identity", "membership", "fulfilment", "orders"),
        QUANYU_ORDERS_ACCEPT_WINDOW_SECONDS="3600",
    ) as running:
        yield running


def test_orders_go_on_while_marketing_is_down_and_it_hears_of_them_once_it_is_up(
    p: Platform, tmp_path: Path
) -> None:
    ops = p.token(Role.OPS)
    open_store(p, ops, "MK-1", "TEA", 100)
    orders = p.orders

    # Marketing is down: nothing listens at its address. Nothing here waits on it.
    completing = ready_order(p, ops, delivery("mk-complete", "mk-ext-1", "TEA", 2))
    completed = orders.CompleteOrder(
        orders_pb2.CompleteOrderRequest(order_id=completing.order_id), metadata=ops, timeout=PROMPTLY
    ).order
    assert completed.status == orders_pb2.ORDER_STATUS_COMPLETED
    placed = orders.CreateOrder(
        delivery("mk-cancel", "mk-ext-2", "TEA", 1), metadata=ops, timeout=PROMPTLY
    ).order
    cancelled = orders.CancelOrder(
        orders_pb2.CancelOrderRequest(order_id=placed.order_id, reason="changed my mind"),
        metadata=ops,
        timeout=PROMPTLY,
    ).order
    assert cancelled.status == orders_pb2.ORDER_STATUS_CANCELLED
    # Membership's own lane is not held up behind marketing's: the points arrive meanwhile.
    earned = eventually(
        order_of(p, ops, completed.order_id), lambda o: o.points_earned > 0, "the points arrive"
    )

    marketing = Marketing()
    server = serve(marketing, target(p.env, "marketing"))
    try:
        completed_id = f"orders/{completed.order_id}/completed"
        cancelled_id = f"orders/{placed.order_id}/cancelled"
        enrolled_id = f"membership/{completed.member_id}/enrolled"
        heard = eventually(
            marketing.heard,
            lambda h: (
                {completed_id, cancelled_id, enrolled_id} <= set(h)
                and any(e.WhichOneof("kind") == "account_linked" for e in h.values())
                and any(e.WhichOneof("kind") == "member_changed" for e in h.values())
            ),
            "marketing hears of both orders, and of what identity and membership did for them",
        )
    finally:
        server.stop(grace=None)

    told = heard[completed_id]
    assert told.WhichOneof("kind") == "order_completed"
    assert told.occur_time == completed.update_time  # when it completed
    assert told.order_completed == marketing_pb2.OrderCompleted(
        order_id=completed.order_id,
        member_id=completed.member_id,
        customer_id=completed.customer_id,
        total_cents=completed.total_cents,
        store_id="MK-1",
        skus=["TEA"],
        channel=common_pb2.CHANNEL_APP,
    )
    assert heard[cancelled_id].occur_time == cancelled.update_time
    assert heard[cancelled_id].order_cancelled == marketing_pb2.OrderCancelled(
        order_id=placed.order_id, member_id=placed.member_id, customer_id=placed.customer_id
    )
    # Of orders' events it heard only these two: the placing and packing told it nothing.
    assert {event_id for event_id in heard if event_id.startswith("orders/")} == {completed_id, cancelled_id}
    # Identity and membership told it of the customer and member the first order made, and of the
    # points that order earned.
    linked = [e.account_linked for e in heard.values() if e.WhichOneof("kind") == "account_linked"]
    assert common_pb2.ChannelAccount(channel=common_pb2.CHANNEL_APP, external_id="mk-ext-1") in [
        a.account for a in linked if a.customer_id == completed.customer_id
    ]
    assert heard[enrolled_id].member_enrolled.member.customer_id == completed.customer_id
    changed = [e.member_changed.member for e in heard.values() if e.WhichOneof("kind") == "member_changed"]
    assert earned.points_earned in [m.points_balance for m in changed if m.member_id == completed.member_id]
