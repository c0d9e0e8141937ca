"""Traces as the OpenTelemetry conventions have them: the OTEL_* variables honoured, each database
statement a span of the call that ran it, and each log line of a call carrying that call's trace."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from quanyu import logs, tracing
from quanyu.clients import service_channel
from quanyu.config import Settings
from quanyu.identity.v1 import identity_pb2, identity_pb2_grpc
from quanyu.server import start_server
from services.identity import bootstrap

PHONE = "13800138000"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing("identity", exporter=exporter)
    yield exporter
    tracing.stop_tracing()


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, logs._LineWriter]]:
    """Where the process's JSON log lines go while the test runs."""
    stream = io.StringIO()
    logs.configure_logging("INFO", service="identity")
    writer = logs._LineWriter(stream)
    structlog.configure(logger_factory=logs._QueuedLoggerFactory(writer), cache_logger_on_first_use=False)
    yield stream, writer
    writer.close()
    logging.getLogger().handlers.clear()


def resolve_once(settings: Settings, database_url: str) -> None:
    settings.identity.database_url = database_url
    bootstrap.migrate(settings)
    running = start_server(bootstrap.build_app(settings), settings, port=0)
    try:
        settings.identity.target = f"127.0.0.1:{running.port}"
        stub = identity_pb2_grpc.IdentityServiceStub(service_channel(settings, "identity", caller="orders"))
        stub.ResolveCustomer(identity_pb2.ResolveCustomerRequest(phone=PHONE), timeout=10)
    finally:
        running.stop(grace=1)
    tracing.flush()


def test_each_statement_of_a_call_is_a_database_span_inside_that_call(
    spans: InMemorySpanExporter, settings: Settings, database_url: str
) -> None:
    resolve_once(settings, database_url)
    finished = spans.get_finished_spans()
    (server,) = [s for s in finished if s.kind is SpanKind.SERVER]
    scopes = {id(s): s.instrumentation_scope.name if s.instrumentation_scope else "" for s in finished}
    statements = [s for s in finished if scopes[id(s)] == "quanyu.db"]
    inside = [s for s in statements if s.context.trace_id == server.context.trace_id]
    assert inside, [s.name for s in finished]
    dialect = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    for span in inside:
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None
        assert span.attributes is not None
        assert span.attributes["db.system.name"] == dialect
        assert span.name.split(maxsplit=1)[0] == span.attributes["db.operation.name"]
        text = str(span.attributes["db.query.text"])
        assert text.split(maxsplit=1)[0].upper() == span.attributes["db.operation.name"]
        # Bound values stay out of the span: the phone (or its hash) is never in a statement's text.
        assert PHONE not in text
    assert {s.attributes["db.operation.name"] for s in inside if s.attributes} & {"SELECT", "INSERT"}
    # Each statement lies within the call's time.
    assert all(server.start_time <= s.start_time <= s.end_time <= server.end_time for s in inside)  # type: ignore[operator]


def test_every_log_line_of_a_call_carries_its_trace_id(
    spans: InMemorySpanExporter,
    captured: tuple[io.StringIO, logs._LineWriter],
    settings: Settings,
    database_url: str,
) -> None:
    stream, writer = captured
    structlog.get_logger("test").info("before the call")
    resolve_once(settings, database_url)
    writer.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    (server,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    trace_id = format(server.context.trace_id, "032x")
    of_the_call = [line for line in lines if line.get("method", "").endswith("/ResolveCustomer")]
    assert of_the_call, lines
    assert {line.get("trace_id") for line in of_the_call} == {trace_id}
    assert all(len(str(line["span_id"])) == 16 for line in of_the_call)
    # Outside any call there is no trace to name.
    assert "trace_id" not in lines[0]


@pytest.mark.parametrize(
    ("environ", "configured", "endpoint"),
    [
        ({}, "", ""),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, "", "http://collector:4317"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces:4317",
            },
            "",
            "https://traces:4317",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, "http://own:4317", "http://own:4317"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_SDK_DISABLED": "true"}, "", ""),
        ({"OTEL_TRACES_EXPORTER": "none"}, "http://own:4317", ""),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, "", ""),
    ],
)
def test_the_standard_variables_say_where_spans_go(
    environ: dict[str, str], configured: str, endpoint: str
) -> None:
    assert tracing.otlp_endpoint_from(environ, configured) == endpoint


def test_the_service_name_and_resource_come_from_the_standard_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "orders-eu")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging,k8s.pod.name=orders-7d")
    exporter = InMemorySpanExporter()
    try:
        assert tracing.configure_tracing("orders", exporter=exporter)
        assert tracing._provider is not None
        attributes = tracing._provider.resource.attributes
        assert attributes["service.name"] == "orders-eu"
        assert attributes["deployment.environment"] == "staging"
        assert attributes["k8s.pod.name"] == "orders-7d"
    finally:
        tracing.stop_tracing()
    monkeypatch.delenv("OTEL_SERVICE_NAME")
    try:
        assert tracing.configure_tracing("orders", exporter=exporter)
        assert tracing._provider is not None
        assert tracing._provider.resource.attributes["service.name"] == "quanyu-orders"
    finally:
        tracing.stop_tracing()


def test_tracing_starts_from_the_standard_endpoint_variable_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    try:
        assert tracing.configure_tracing("orders", "")
        assert tracing.enabled()
    finally:
        tracing.stop_tracing()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not tracing.configure_tracing("orders", "")
    assert not tracing.enabled()
