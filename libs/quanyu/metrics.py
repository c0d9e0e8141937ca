"""Prometheus metrics: every RPC counted and timed by the server, plus the figures each service
registers about itself, served over HTTP on the service's metrics port."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

# Every RPC under the names and labels py-grpc-prometheus and go-grpc-prometheus use, so stock
# gRPC dashboards and alerts work unchanged: grpc_service is the full service name
# (quanyu.orders.v1.OrderService), grpc_method the method, grpc_code the status code's name.
RPC_STARTED = Counter(
    "grpc_server_started",
    "RPCs started on the server",
    ["grpc_type", "grpc_service", "grpc_method"],
)
RPC_HANDLED = Counter(
    "grpc_server_handled",
    "RPCs completed on the server, by status code",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
)
RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time to serve an RPC, until the application answered",
    ["grpc_type", "grpc_service", "grpc_method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
# What a service's calls cost its database, counted as the database sees them: every statement
# sent (BEGIN, COMMIT and ROLLBACK included; on PostgreSQL each is a round trip), and the
# transactions, a BEGIN and its end. A statement PostgreSQL runs outside a transaction (a read)
# is a statement and no transaction. `python -m bench.statements` reads them per call.
DB_STATEMENTS = Counter(
    "quanyu_db_statements", "SQL statements sent to the database, BEGIN and its end included"
)
DB_TRANSACTIONS = Counter("quanyu_db_transactions", "Transactions the database saw end, by how", ["end"])
# Every Quanyu RPC is unary (the server refuses the others).
UNARY = "unary"


def _names(method: str) -> tuple[str, str]:
    """("quanyu.orders.v1.OrderService", "CreateOrder") from "/quanyu.orders.v1.OrderService/CreateOrder"."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


# The labelled series of each method (and code), found once: finding one by its labels takes the
# metric's lock and a look-up every call, and every call touches three.
_STARTED: dict[str, Any] = {}
_HANDLED: dict[tuple[str, str], Any] = {}
_SECONDS: dict[str, Any] = {}


def observe_start(method: str) -> None:
    started = _STARTED.get(method)
    if started is None:
        started = _STARTED[method] = RPC_STARTED.labels(UNARY, *_names(method))
    started.inc()


def observe_call(method: str, code: str, seconds: float) -> None:
    handled = _HANDLED.get((method, code))
    if handled is None:
        handled = _HANDLED[(method, code)] = RPC_HANDLED.labels(UNARY, *_names(method), code)
    handled.inc()
    timed = _SECONDS.get(method)
    if timed is None:
        timed = _SECONDS[method] = RPC_SECONDS.labels(UNARY, *_names(method))
    timed.observe(seconds)


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
