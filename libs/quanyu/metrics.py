"""Prometheus metrics: every RPC counted and timed by the server, plus the figures each service
registers about itself, served over HTTP on the service's metrics port."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

RPC_CALLS = Counter(
    "quanyu_rpc_calls", "RPCs served, by method and status code", ["service", "method", "code"]
)
RPC_SECONDS = Histogram(
    "quanyu_rpc_duration_seconds",
    "Time to serve an RPC",
    ["service", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


def observe_call(service: str, method: str, code: str, seconds: float) -> None:
    short = method.rsplit("/", 1)[-1]
    RPC_CALLS.labels(service, short, code).inc()
    RPC_SECONDS.labels(service, short).observe(seconds)


def gauge_from(name: str, documentation: str, read: Callable[[], float]) -> Gauge:
    """A gauge read when Prometheus scrapes (outbox lag, open reservations): always current,
    and nothing to keep in step between scrapes."""
    existing = REGISTRY._names_to_collectors.get(name)
    if isinstance(existing, Gauge):
        REGISTRY.unregister(existing)
    gauge = Gauge(name, documentation)
    gauge.set_function(read)
    return gauge


def labelled_gauge_from(
    name: str, documentation: str, label: str, read: Callable[[], dict[str, float]]
) -> None:
    """A gauge per label value (orders by status), read at scrape time."""
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector

    class _Collector(Collector):
        def collect(self):  # type: ignore[no-untyped-def]
            family = GaugeMetricFamily(name, documentation, labels=[label])
            for value_label, value in sorted(read().items()):
                family.add_metric([value_label], value)
            yield family

    existing = REGISTRY._names_to_collectors.get(name)
    if existing is not None:
        REGISTRY.unregister(existing)
    REGISTRY.register(_Collector())


def serve_metrics(host: str, port: int) -> None:
    if port:
        start_http_server(port, addr=host)
