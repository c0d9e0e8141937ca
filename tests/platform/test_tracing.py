"""With tracing on, one trace follows a call into the services it reaches and through the outbox."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from quanyu import tracing
from quanyu.clients import service_channel
from quanyu.config import Settings
from quanyu.db import Database, new_metadata, utcnow
from quanyu.identity.v1 import identity_pb2, identity_pb2_grpc
from quanyu.outbox import OutboxRelay, add_effect, outbox_table
from quanyu.server import start_server
from services.identity import bootstrap


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing("test", exporter=exporter)
    yield exporter
    tracing.stop_tracing()


def test_a_service_call_and_the_call_it_serves_share_one_trace(
    spans: InMemorySpanExporter, settings: Settings, database_url: str
) -> None:
    settings.identity.database_url = database_url
    bootstrap.migrate(settings)
    running = start_server(bootstrap.build_app(settings), settings, port=0)
    try:
        settings.identity.target = f"127.0.0.1:{running.port}"
        stub = identity_pb2_grpc.IdentityServiceStub(service_channel(settings, "identity", caller="orders"))
        stub.ResolveCustomer(identity_pb2.ResolveCustomerRequest(phone="13800138000"), timeout=10)
    finally:
        running.stop(grace=1)
    assert tracing._provider is not None
    tracing.flush()
    finished = spans.get_finished_spans()
    # The gRPC client span; the database's statements are CLIENT spans too, of scope quanyu.db.
    client = [s for s in finished if s.kind is SpanKind.CLIENT and s.name.startswith("/")]
    server = [s for s in finished if s.kind is SpanKind.SERVER]
    assert client
    assert server
    assert server[0].context.trace_id == client[0].context.trace_id
    assert server[0].parent is not None
    assert server[0].parent.span_id == client[0].context.span_id


def test_an_effect_is_delivered_inside_the_trace_that_caused_it(
    spans: InMemorySpanExporter, tmp_path: Any
) -> None:
    metadata = new_metadata()
    table = outbox_table(metadata)
    database = Database(f"sqlite:///{tmp_path / 'outbox.db'}")
    metadata.create_all(database.engine)
    seen: list[int] = []

    def deliver(payload: dict[str, Any]) -> None:
        from opentelemetry import trace

        seen.append(trace.get_current_span().get_span_context().trace_id)

    assert tracing._provider is not None
    tracer = tracing._provider.get_tracer("test")
    with tracer.start_as_current_span("CreateOrder") as cause, database.transaction() as connection:
        add_effect(connection, table, "earn_points", {"order_id": "ord_1"}, utcnow())
    relay = OutboxRelay(database, table, {"earn_points": deliver})
    assert relay.deliver_due() == 1
    assert seen == [cause.get_span_context().trace_id]
    database.dispose()
