"""Optional OpenTelemetry tracing: with an OTLP endpoint configured, every call is a span, the
trace context travels on every service-to-service call and through the outbox, so one order can
be followed from CreateOrder to the points it earned. Without one, nothing is traced."""

from __future__ import annotations

import atexit
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

_provider: TracerProvider | None = None
TRACE_KEY = "_trace"


def configure_tracing(service: str, endpoint: str = "", *, exporter: SpanExporter | None = None) -> bool:
    """Send this process's spans to `endpoint` (or `exporter`); False when tracing stays off."""
    global _provider  # noqa: PLW0603 - one tracer provider per process
    if not endpoint and exporter is None:
        return False
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    _provider = TracerProvider(resource=Resource.create({"service.name": f"quanyu-{service}"}))
    _provider.add_span_processor(BatchSpanProcessor(exporter))
    atexit.register(flush)  # the last spans of a stopping service are sent, not dropped
    return True


def enabled() -> bool:
    return _provider is not None


def server_interceptors() -> list[Any]:
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import server_interceptor

    return [server_interceptor(tracer_provider=_provider)]  # type: ignore[no-untyped-call]


def traced_channel(channel: Any) -> Any:
    """The channel, its calls made spans that carry the trace context to the server."""
    if _provider is None:
        return channel
    from opentelemetry.instrumentation.grpc import client_interceptor, grpcext

    interceptor = client_interceptor(tracer_provider=_provider)  # type: ignore[no-untyped-call]
    return grpcext.intercept_channel(channel, interceptor)  # type: ignore[no-untyped-call]


def current_context() -> dict[str, str]:
    """The trace context of the work under way, to store beside an effect it causes."""
    carrier: dict[str, str] = {}
    if _provider is not None:
        propagate.inject(carrier)
    return carrier


@contextmanager
def continued(carrier: Mapping[str, str] | None, name: str) -> Iterator[None]:
    """Run the delivery of an effect as part of the trace that caused it."""
    if _provider is None or not carrier:
        yield
        return
    token = context.attach(propagate.extract(dict(carrier)))
    try:
        with _provider.get_tracer("quanyu.outbox").start_as_current_span(name, kind=trace.SpanKind.PRODUCER):
            yield
    finally:
        context.detach(token)


def flush() -> None:
    if _provider is not None:
        _provider.force_flush()


def stop_tracing() -> None:
    """Flush and turn tracing off (a process that reconfigures, or a test that is done)."""
    global _provider  # noqa: PLW0603
    if _provider is not None:
        _provider.shutdown()
        _provider = None
