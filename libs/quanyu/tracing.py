"""Optional OpenTelemetry tracing: with an OTLP endpoint configured, every call is a span, the
trace context travels on every service-to-service call and through the outbox, so one order can
be followed from CreateOrder to the points it earned. Without one, nothing is traced.

The standard OTEL_* variables are honoured as every OpenTelemetry SDK does: the endpoint
(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT, when QUANYU_OTLP_ENDPOINT
is unset), OTEL_SDK_DISABLED and OTEL_TRACES_EXPORTER=none to turn tracing off, OTEL_SERVICE_NAME
and OTEL_RESOURCE_ATTRIBUTES for the resource, OTEL_TRACES_SAMPLER(_ARG) for sampling,
OTEL_EXPORTER_OTLP_(TRACES_)HEADERS/CERTIFICATE/INSECURE/TIMEOUT for the exporter and OTEL_BSP_*
for batching."""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, Status, StatusCode

_provider: TracerProvider | None = None
TRACE_KEY = "_trace"


def otlp_endpoint_from(environ: Mapping[str, str], configured: str = "") -> str:
    """Where spans go: Quanyu's own setting first, then the standard variables; empty when off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ""
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return ""
    return (
        configured
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


def configure_tracing(service: str, endpoint: str = "", *, exporter: SpanExporter | None = None) -> bool:
    """Send this process's spans to `endpoint` (or `exporter`), or where the OTEL_* variables
    say; False when tracing stays off."""
    global _provider  # noqa: PLW0603 - one tracer provider per process
    if exporter is None:
        endpoint = otlp_endpoint_from(os.environ, endpoint)
        if not endpoint:
            return False
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        # Headers, certificates and timeouts come from the OTEL_EXPORTER_OTLP_* variables; an
        # http:// endpoint is clear text, https:// is TLS.
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    # OTEL_SERVICE_NAME, when set, names the service; OTEL_RESOURCE_ATTRIBUTES adds the rest
    # (deployment.environment, k8s.pod.name...), both read by Resource.create.
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": f"quanyu-{service}"}
    _provider = TracerProvider(resource=Resource.create(attributes))
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


# ---- database calls as spans


# Where the span of a statement under way is kept: on its execution context.
_SPAN = "_quanyu_span"


def trace_statements(engine: Any) -> None:
    """Make every statement the engine runs a CLIENT span under the call that runs it, named
    and described as OpenTelemetry's database conventions say. Costs nothing while tracing is off."""
    from sqlalchemy import event

    system = {"postgresql": "postgresql", "sqlite": "sqlite"}.get(engine.dialect.name, engine.dialect.name)
    server = engine.url.host or ""
    database = engine.url.database or ""

    @event.listens_for(engine, "before_cursor_execute")
    def started(*args: Any) -> None:
        # SQLAlchemy's arguments: connection, cursor, statement, parameters, context, executemany.
        statement, context = args[2], args[4]
        if _provider is None or context is None:
            return
        operation = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
        span = _provider.get_tracer("quanyu.db").start_span(
            f"{operation} {database}".strip() if system != "sqlite" else operation,
            kind=trace.SpanKind.CLIENT,
            attributes={
                "db.system.name": system,
                "db.operation.name": operation,
                # Bound parameters are never in the text: no phone number or name leaves in a span.
                "db.query.text": statement,
                **({"server.address": server} if server else {}),
                **({"db.namespace": database} if database and system != "sqlite" else {}),
            },
        )
        setattr(context, _SPAN, span)

    @event.listens_for(engine, "after_cursor_execute")
    def finished(*args: Any) -> None:
        span = _span_of(args[4])
        if span is not None:
            span.end()

    @event.listens_for(engine, "handle_error")
    def failed(exception_context: Any) -> None:
        span = _span_of(exception_context.execution_context)
        if span is not None:
            error = exception_context.original_exception
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            span.end()


def _span_of(context: Any) -> Span | None:
    if context is None:
        return None
    span: Span | None = getattr(context, _SPAN, None)
    if span is not None:
        setattr(context, _SPAN, None)
    return span
