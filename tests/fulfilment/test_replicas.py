"""Two fulfilment replicas on one database, as production runs them: no oversold stock, and a
store written through one replica is soon chosen by the other."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest

from quanyu.auth import Principal, Role, TokenCodec
from quanyu.clients import error_reason
from quanyu.common.v1 import common_pb2
from quanyu.fulfilment.v1 import fulfilment_pb2, fulfilment_pb2_grpc
from tests.conftest import bearer
from tests.processes import free_port, platform_env, started, wait_serving

Stub = fulfilment_pb2_grpc.FulfilmentServiceStub
SQUARE = common_pb2.LatLng(latitude=31.2304, longitude=121.4737)


@pytest.fixture
def replicas(tmp_path: Path, database_url: str) -> Iterator[tuple[list[Stub], tuple[tuple[str, str]]]]:
    """Two `quanyu serve fulfilment` processes sharing one database and one signing key."""
    var = tmp_path / "var"
    with ExitStack() as stack:
        stubs = []
        for name in ("a", "b"):
            port = free_port()
            env = platform_env(
                var, QUANYU_FULFILMENT__PORT=str(port), QUANYU_FULFILMENT__DATABASE_URL=database_url
            )
            process = stack.enter_context(started(["serve", "fulfilment"], env, tmp_path / f"{name}.log"))
            wait_serving(f"127.0.0.1:{port}", process)
            channel = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{port}"))
            stubs.append(Stub(channel))
        yield stubs, bearer(TokenCodec.local(var / "token-keys").issue(Principal(Role.OPS, "ops")).token)


def store(store_id: str, latitude: float, longitude: float) -> fulfilment_pb2.Store:
    return fulfilment_pb2.Store(
        store_id=store_id,
        name=store_id,
        location=common_pb2.LatLng(latitude=latitude, longitude=longitude),
        delivery_radius_m=5000,
    )


def test_two_replicas_hammering_one_scarce_sku_never_oversell(
    replicas: tuple[list[Stub], tuple[tuple[str, str]]],
) -> None:
    stubs, ops = replicas
    stubs[0].UpsertStore(
        fulfilment_pb2.UpsertStoreRequest(store=store("only", 31.2310, 121.4740)), metadata=ops
    )
    stubs[0].SetStock(
        fulfilment_pb2.SetStockRequest(
            store_id="only", levels=[fulfilment_pb2.SkuQuantity(sku="rare", on_hand=10)]
        ),
        metadata=ops,
    )
    # The second replica learns of the store through the database before the rush starts.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = stubs[1].FindNearestStores(
            fulfilment_pb2.FindNearestStoresRequest(location=SQUARE), metadata=ops
        )
        if found.matches:
            break
    orders = 60

    def order(index: int) -> str:
        request = fulfilment_pb2.AssignStoreRequest(
            order_id=f"order-{index}",
            location=SQUARE,
            lines=[common_pb2.Line(sku="rare", quantity=1)],
            fulfilment_type=common_pb2.FULFILMENT_TYPE_DELIVERY,
        )
        try:
            stubs[index % 2].AssignStore(request, metadata=ops, timeout=60)
        except grpc.RpcError as error:
            return f"{error.code().name}:{error_reason(error)}"
        return "reserved"

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(order, range(orders)))
    assert outcomes.count("reserved") == 10
    assert set(outcomes) == {"reserved", "FAILED_PRECONDITION:INSUFFICIENT_STOCK"}
    level = stubs[1].GetStock(fulfilment_pb2.GetStockRequest(store_id="only"), metadata=ops).levels[0]
    assert (level.on_hand, level.reserved, level.available) == (10, 10, 0)
    # Retrying every order, on the other replica this time, reserves nothing more.
    retried = [
        stubs[(i + 1) % 2]
        .AssignStore(
            fulfilment_pb2.AssignStoreRequest(
                order_id=f"order-{i}",
                location=SQUARE,
                lines=[common_pb2.Line(sku="rare", quantity=1)],
                fulfilment_type=common_pb2.FULFILMENT_TYPE_DELIVERY,
            ),
            metadata=ops,
        )
        .assignments[0]
        .store_id
        for i, outcome in enumerate(outcomes)
        if outcome == "reserved"
    ]
    assert retried == ["only"] * 10
    level = stubs[0].GetStock(fulfilment_pb2.GetStockRequest(store_id="only"), metadata=ops).levels[0]
    assert level.reserved == 10


def test_a_store_added_through_one_replica_is_chosen_by_the_other(
    replicas: tuple[list[Stub], tuple[tuple[str, str]]],
) -> None:
    stubs, ops = replicas
    stubs[0].UpsertStore(
        fulfilment_pb2.UpsertStoreRequest(store=store("new", 31.2310, 121.4740)), metadata=ops
    )
    stubs[0].SetStock(
        fulfilment_pb2.SetStockRequest(
            store_id="new", levels=[fulfilment_pb2.SkuQuantity(sku="tea", on_hand=3)]
        ),
        metadata=ops,
    )
    request = fulfilment_pb2.AssignStoreRequest(
        order_id="o-1",
        location=SQUARE,
        lines=[common_pb2.Line(sku="tea", quantity=1)],
        fulfilment_type=common_pb2.FULFILMENT_TYPE_DELIVERY,
    )
    # Poll the other replica until its catalogue has caught up; it refreshes twice a second.
    deadline = time.monotonic() + 10
    placed = None
    refusals: set[str] = set()
    while placed is None and time.monotonic() < deadline:
        try:
            placed = stubs[1].AssignStore(request, metadata=ops)
        except grpc.RpcError as error:
            refusals.add(error_reason(error))
    assert placed is not None
    assert [a.store_id for a in placed.assignments] == ["new"]
    # Until it caught up, the other replica knew of no store there, and said so.
    assert refusals <= {"NO_STORE_IN_RANGE"}
