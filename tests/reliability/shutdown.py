"""A graceful shutdown under load: SIGTERM to orders while callers keep placing orders.

To have calls truly in flight when the signal lands, the test keeps orders' writers out of its
database for a moment: every caller's order is then past fulfilment (its stock is reserved there)
and waiting to be stored. Then the signal: health must turn NOT_SERVING while those calls are still
held, a new call must be refused with UNAVAILABLE, and once the database is free again every call
in flight must finish with its order and the process exit. No call may fail except those refused
after the signal, and those only with UNAVAILABLE; a refused call retried once orders is back
places its order.

One failure is gRPC's and not the service's: a call that reaches the server just as gRPC itself
stops, after every call in flight is done, and that no handler ever took in, is answered CANCELLED
by gRPC's core (https://github.com/grpc/grpc/issues/41785). Such calls are counted apart; that no
handler took them in is checked against the server's log, which has a line for each call it served.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2
from sqlalchemy import func, select

from quanyu.logs import REQUEST_ID_HEADER
from quanyu.orders.v1 import orders_pb2
from services.fulfilment.storage import reservations
from services.orders.grpc_servicer import request_from
from services.orders.storage import orders as orders_table
from tests.processes import health_status, poll, target
from tests.reliability.deployment import Deployment
from tests.reliability.world import Call, Load, World, attempt, retrying

WORKERS = 6  # fewer than the server's threads, so a health check always finds one free
DEADLINE = 60.0
HEALTH_WAIT = 10.0  # how long health may go on answering SERVING after the signal


@dataclass
class ShutdownFigures:
    rounds: int = 0
    calls: int = 0
    in_flight: int = 0  # calls held in flight when the signal landed
    refused: int = 0  # calls refused with UNAVAILABLE after the signal
    cancelled_by_grpc: int = 0  # calls gRPC's core dropped as it stopped, never taken in
    failed_beyond_refused: int = 0  # every other failure: the figure that must stay 0
    health_late: int = 0  # rounds where health did not say NOT_SERVING while calls were in flight
    problems: list[str] = field(default_factory=list)


def graceful_shutdown(d: Deployment, *, rounds: int) -> ShutdownFigures:
    figures = ShutdownFigures()
    for number in range(rounds):
        try:
            _one_shutdown(d, number, figures)
        finally:
            d.restore()
    return figures


def _one_shutdown(d: Deployment, number: int, figures: ShutdownFigures) -> None:
    w = World(d)
    sku = w.name("load")
    w.store("L", 0, {sku: 1_000_000})
    requests: dict[str, orders_pb2.CreateOrderRequest] = {}

    def make(worker: int, n: int) -> tuple[str, Callable[[], object]]:
        # Numbers joined by dashes could spell a phone number, which the log would mask: the key
        # is written so the server's log lines name each call as it is.
        request = w.delivery(w.name(f"load-r{number}w{worker}n{n}"), w.name(f"buyer-{worker}"), {sku: 1})
        requests[request.request_id] = request
        # The request id goes along as x-request-id, so the server's log lines name each call.
        metadata = (*w.app, (REQUEST_ID_HEADER, request.request_id))
        return request.request_id, lambda: d.orders.CreateOrder(request, metadata=metadata, timeout=DEADLINE)

    process = d.processes["orders"]
    log_start = _log_size(d)
    with Load(WORKERS, make) as load:
        poll(lambda: len(load.finished()), lambda n: n >= 3 * WORKERS, "the load is under way")
        with d.writes_held("orders", tables=["orders"]):
            held = poll(
                lambda: [c for c in load.in_flight() if _waiting_to_be_stored(d, requests[c.key])],
                lambda calls: len(calls) == WORKERS,
                "every caller's order waits to be stored",
            )
            load.mark()
            process.send_signal(signal.SIGTERM)
            status = _health_once_signalled(d)
            if status != health_pb2.HealthCheckResponse.NOT_SERVING:
                figures.health_late += 1
                figures.problems.append(f"round {number}: health answered {status} with calls in flight")
            still = {c.key for c in load.in_flight()}
            if not {c.key for c in held} <= still:
                figures.problems.append(
                    f"round {number}: calls held in the database finished before it was free"
                )
            probe = w.delivery(w.name(f"probe-{number}"), w.name("prober"), {sku: 1})
            requests[probe.request_id] = probe
            refusal = attempt(lambda: d.orders.CreateOrder(probe, metadata=w.app, timeout=DEADLINE))
            if refusal.code != grpc.StatusCode.UNAVAILABLE:
                figures.failed_beyond_refused += 1
                figures.problems.append(f"round {number}: a call after the signal got {refusal}")
        process.wait(timeout=60)
    d.processes.pop("orders")
    d.start("orders")
    served = _served(d, log_start)
    _judge(number, calls=load.calls, held={c.key for c in held}, served=served, figures=figures)
    _retry_every_call(d, w, number, requests, figures)
    figures.rounds += 1


def _judge(
    number: int,
    *,
    calls: list[Call],
    held: set[str],
    served: dict[str, str],
    figures: ShutdownFigures,
) -> None:
    figures.calls += len(calls)
    figures.in_flight += len(held)
    failures = [c for c in calls if c.outcome is not None and not c.outcome.ok]
    for call in failures:
        assert call.outcome is not None
        code = call.outcome.code
        after_signal = call.ended_after_mark and call.key not in held
        if after_signal and code == grpc.StatusCode.UNAVAILABLE:
            figures.refused += 1
        elif after_signal and code == grpc.StatusCode.CANCELLED and call.key not in served:
            figures.cancelled_by_grpc += 1
        else:
            figures.failed_beyond_refused += 1
            where = "in flight" if call.key in held else f"served {served.get(call.key, 'never')}"
            figures.problems.append(f"round {number}: {call.key} ({where}): {call.outcome}")
    for key, code in served.items():
        if code != "OK":
            figures.failed_beyond_refused += 1
            figures.problems.append(f"round {number}: the server ended {key} with {code}")
    for key in held:
        if served.get(key) != "OK":
            figures.problems.append(f"round {number}: {key} was in flight and the server never finished it")


def _retry_every_call(
    d: Deployment,
    w: World,
    number: int,
    requests: dict[str, orders_pb2.CreateOrderRequest],
    figures: ShutdownFigures,
) -> None:
    """Every call retried once orders is back answers with its order: the refused are placed now,
    the others found as they were placed."""
    for key, request in requests.items():
        retried, _ = retrying(
            lambda r=request: d.orders.CreateOrder(r, metadata=w.app, timeout=DEADLINE)  # type: ignore[misc]
        )
        if not retried.ok:
            figures.failed_beyond_refused += 1
            figures.problems.append(f"round {number}: retrying {key}: {retried}")


def _served(d: Deployment, start: int) -> dict[str, str]:
    """The calls the orders process that was stopped served, by request id, with their codes."""
    path = d.logs / f"orders.{d.starts['orders'] - 1}.log"
    served = {}
    for line in path.read_text(errors="replace")[start:].splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == "rpc" and event.get("request_id"):
                served[str(event["request_id"])] = str(event.get("code"))
    return served


def _health_once_signalled(d: Deployment) -> int | None:
    """What health answers once it stops answering SERVING (or still SERVING after a while)."""
    try:
        return poll(
            lambda: health_status(target(d.env, "orders")),
            lambda s: s != health_pb2.HealthCheckResponse.SERVING,
            "health turns NOT_SERVING",
            HEALTH_WAIT,
        )
    except AssertionError:
        return health_pb2.HealthCheckResponse.SERVING  # type: ignore[no-any-return]


def _log_size(d: Deployment) -> int:
    path = d.logs / f"orders.{d.starts['orders']}.log"
    return len(path.read_text(errors="replace")) if path.exists() else 0


def _waiting_to_be_stored(d: Deployment, request: orders_pb2.CreateOrderRequest) -> bool:
    """Orders has the order's stock reserved and has not stored it: the call is in flight there."""
    order_id = request_from(request, owner="channel:CHANNEL_APP").order_id()  # placed by the app
    with d.databases["fulfilment"].snapshot() as db:
        reserved = db.execute(
            select(func.count()).select_from(reservations).where(reservations.c.order_id == order_id)
        ).scalar_one()
    with d.databases["orders"].snapshot() as db:
        stored = db.execute(
            select(func.count()).select_from(orders_table).where(orders_table.c.order_id == order_id)
        ).scalar_one()
    return bool(reserved) and not stored
