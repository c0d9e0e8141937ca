"""Identity, membership and orders as real processes: a returning customer's order calls
neither identity nor membership (their own call counters say so), and once identity's and
membership's merges have reached orders through their outboxes, the next order of the merged
customer lands on the survivor and its member."""

from __future__ import annotations

import itertools
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, select

from quanyu.auth import Role
from quanyu.common.v1 import common_pb2
from quanyu.identity.v1 import identity_pb2
from quanyu.orders.v1 import orders_pb2
from services.orders.storage.tables import known_customers, known_members
from tests.orders.platform import Metadata, Platform, platform
from tests.processes import poll

_REQUESTS = itertools.count()


# What orders asks of identity and membership about a customer (the services also ask identity
# for its token keys every few seconds, which has nothing to do with orders).
ASKED = {"identity": {"ResolveCustomer", "GetCustomer"}, "membership": {"Enroll"}}


def calls(running: Platform, service: str) -> float:
    """The calls orders makes about customers, as the service's own metrics count them."""
    port = running.env[f"QUANYU_{service.upper()}__METRICS_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "grpc_server_handled_total" and sample.labels["grpc_method"] in ASKED[service]
    )


def order(running: Platform, caller: Metadata, customer: Mapping[str, object]) -> orders_pb2.Order:
    placed: orders_pb2.Order = running.orders.CreateOrder(
        orders_pb2.CreateOrderRequest(
            request_id=f"known-{next(_REQUESTS)}",
            channel=common_pb2.CHANNEL_APP,
            fulfilment_type=common_pb2.FULFILMENT_TYPE_DELIVERY,
            lines=[common_pb2.Line(sku="tea", quantity=1, unit_price_cents=1_000)],
            delivery_location=common_pb2.LatLng(latitude=31.23, longitude=121.47),
            delivery_address="People's Square",
            **customer,  # type: ignore[arg-type]
        ),
        metadata=caller,
        timeout=30,
    ).order
    return placed


def app(external_id: str) -> Mapping[str, object]:
    return {"account": common_pb2.ChannelAccount(channel=common_pb2.CHANNEL_APP, external_id=external_id)}


def test_a_returning_customer_costs_no_call_and_a_merge_moves_the_next_order_to_the_survivor(
    tmp_path: Path,
) -> None:
    # Fulfilment and marketing stay down: orders wait for a store, and marketing's events wait.
    with platform(tmp_path, ("identity", "membership", "orders")) as running:
        channel = running.token(Role.CHANNEL, channel="CHANNEL_APP")
        ops = running.token(Role.OPS)
        first = order(running, channel, app("app-1"))
        other = order(running, channel, app("app-2"))
        assert first.customer_id != other.customer_id

        before = calls(running, "identity"), calls(running, "membership")
        assert before == (2, 2)
        again = order(running, channel, app("app-1"))
        by_id = order(running, channel, {"customer_id": first.customer_id})
        assert (again.customer_id, again.member_id) == (first.customer_id, first.member_id)
        assert (by_id.customer_id, by_id.member_id) == (first.customer_id, first.member_id)
        assert (calls(running, "identity"), calls(running, "membership")) == before

        # Ops merge the first customer into the other; identity tells orders and membership,
        # membership merges the members and tells orders.
        running.identity.MergeCustomers(
            identity_pb2.MergeCustomersRequest(
                survivor_customer_id=other.customer_id, merged_customer_id=first.customer_id
            ),
            metadata=ops,
        )
        engine = create_engine(f"sqlite:///{running.var / 'orders.db'}")
        try:

            def told() -> tuple[str | None, str | None]:
                with engine.connect() as connection:
                    merged_into = connection.execute(
                        select(known_customers.c.merged_into).where(
                            known_customers.c.customer_id == first.customer_id
                        )
                    ).scalar_one_or_none()
                    root = connection.execute(
                        select(known_members.c.root_member_id).where(
                            known_members.c.member_id == first.member_id
                        )
                    ).scalar_one_or_none()
                return merged_into, root

            poll(told, lambda now: now == (other.customer_id, other.member_id), "the merges reached orders")
        finally:
            engine.dispose()

        before = calls(running, "identity"), calls(running, "membership")
        named_by: list[Mapping[str, object]] = [app("app-1"), {"customer_id": first.customer_id}]
        for customer in named_by:
            placed = order(running, channel, customer)
            assert (placed.customer_id, placed.member_id) == (other.customer_id, other.member_id)
        assert (calls(running, "identity"), calls(running, "membership")) == before
