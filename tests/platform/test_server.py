"""The shared server and client plumbing: request ids, error mapping, roles, retries and a
graceful shutdown, exercised through a real server on a free port."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from sqlalchemy.exc import OperationalError

from quanyu.auth import Role
from quanyu.clients import error_reason, field_violations, service_channel
from quanyu.config import RateConfig, Settings
from quanyu.errors import FailedPrecondition
from quanyu.identity.v1 import identity_pb2, identity_pb2_grpc
from quanyu.logs import REQUEST_ID_HEADER
from quanyu.server import RunningServer, ServiceApp, rpc_policy, start_server
from tests.conftest import TokenFactory, bearer

PROBE = "quanyu.test.Probe"


def probe_app(behaviours: dict[str, Callable[[bytes, Any], bytes]], roles: frozenset[Role]) -> ServiceApp:
    """A service of raw-bytes methods, so the plumbing is tested apart from any real service."""

    def register(server: grpc.Server) -> None:
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    PROBE, {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in behaviours.items()}
                ),
            )
        )

    return ServiceApp(
        name="identity",
        service_names=[PROBE],
        register=register,
        policy={f"/{PROBE}/{name}": roles for name in behaviours},
    )


@pytest.fixture
def serve(settings: Settings) -> Iterator[Callable[[ServiceApp], tuple[RunningServer, grpc.Channel]]]:
    opened: list[tuple[RunningServer, grpc.Channel]] = []

    def start(app: ServiceApp) -> tuple[RunningServer, grpc.Channel]:
        server = start_server(app, settings, port=0)
        opened.append((server, grpc.insecure_channel(f"127.0.0.1:{server.port}")))
        return opened[-1]

    yield start
    for server, channel in opened:
        channel.close()
        server.stop(grace=0)


def call(channel: grpc.Channel, method: str, token: str, **kwargs: Any) -> Any:
    return channel.unary_unary(f"/{PROBE}/{method}")(b"", metadata=bearer(token), **kwargs)


def test_the_request_id_is_taken_from_the_caller_or_made_and_sent_back(
    serve: Any, token: TokenFactory
) -> None:
    _, channel = serve(probe_app({"Echo": lambda request, context: request}, frozenset(Role)))
    method = channel.unary_unary(f"/{PROBE}/Echo")
    _, given = method.with_call(b"", metadata=(*bearer(token(Role.OPS)), (REQUEST_ID_HEADER, "req-42")))
    assert dict(given.trailing_metadata())[REQUEST_ID_HEADER] == "req-42"
    _, made = method.with_call(b"", metadata=bearer(token(Role.OPS)))
    assert len(dict(made.trailing_metadata())[REQUEST_ID_HEADER]) == 32


def test_a_domain_error_keeps_its_code_and_reason(serve: Any, token: TokenFactory) -> None:
    def refuse(request: bytes, context: Any) -> bytes:
        raise FailedPrecondition("not enough stock", reason="INSUFFICIENT_STOCK")

    _, channel = serve(probe_app({"Refuse": refuse}, frozenset(Role)))
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, "Refuse", token(Role.OPS))
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(caught.value) == "INSUFFICIENT_STOCK"
    assert REQUEST_ID_HEADER in dict(caught.value.trailing_metadata() or ())


def test_a_bug_is_internal_and_says_nothing_of_its_insides(serve: Any, token: TokenFactory) -> None:
    def crash(request: bytes, context: Any) -> bytes:
        raise KeyError("secret-table-name")

    _, channel = serve(probe_app({"Crash": crash}, frozenset(Role)))
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, "Crash", token(Role.OPS))
    assert caught.value.code() is grpc.StatusCode.INTERNAL
    assert "secret" not in (caught.value.details() or "")


def test_an_unreachable_database_is_unavailable_not_internal(serve: Any, token: TokenFactory) -> None:
    def lose_database(request: bytes, context: Any) -> bytes:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    _, channel = serve(probe_app({"Query": lose_database}, frozenset(Role)))
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, "Query", token(Role.OPS))
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


def test_a_method_without_a_policy_admits_nobody(serve: Any, token: TokenFactory) -> None:
    app = probe_app({"Echo": lambda request, context: request}, frozenset(Role))
    app.policy = {}
    _, channel = serve(app)
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, "Echo", token(Role.OPS))
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_a_policy_must_name_every_rpc_of_the_service() -> None:
    service = identity_pb2.DESCRIPTOR.services_by_name["IdentityService"]
    with pytest.raises(ValueError, match="IssueToken"):
        rpc_policy(service, {"ResolveCustomer": [Role.OPS]})


def test_health_and_reflection_need_no_token(serve: Any) -> None:
    _, channel = serve(probe_app({}, frozenset(Role)))
    answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=PROBE))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_shutdown_turns_health_off_lets_calls_in_flight_finish_and_refuses_new_ones(
    serve: Any, token: TokenFactory
) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(request: bytes, context: Any) -> bytes:
        entered.set()
        release.wait(10)
        return b"done"

    server, channel = serve(probe_app({"Slow": slow, "Echo": lambda r, c: r}, frozenset(Role)))
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=PROBE))
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    with ThreadPoolExecutor(2) as pool:
        in_flight = pool.submit(call, channel, "Slow", token(Role.OPS))
        assert entered.wait(10)
        stopping = pool.submit(server.stop, 10)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        # Calls that reach the server before it stops listening are still served; the first
        # one refused after that must be refused as UNAVAILABLE, so clients retry elsewhere.
        refused = None
        for _ in range(1000):
            try:
                call(channel, "Echo", token(Role.OPS), timeout=5)
            except grpc.RpcError as error:
                refused = error
                break
        assert refused is not None
        assert refused.code() is grpc.StatusCode.UNAVAILABLE
        release.set()
        assert in_flight.result(10) == b"done"
        stopping.result(10)


def test_service_calls_carry_a_token_the_request_id_and_retry_only_unavailable(
    serve: Any, settings: Settings
) -> None:
    seen: list[dict[str, str]] = []

    def flaky(request: identity_pb2.GetCustomerRequest, context: grpc.ServicerContext) -> Any:
        seen.append(dict(context.invocation_metadata()))
        if len(seen) < 3:
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        return identity_pb2.GetCustomerResponse(
            customer=identity_pb2.Customer(customer_id=request.customer_id)
        )

    handler = grpc.unary_unary_rpc_method_handler(
        flaky,
        request_deserializer=identity_pb2.GetCustomerRequest.FromString,
        response_serializer=identity_pb2.GetCustomerResponse.SerializeToString,
    )
    app = ServiceApp(
        name="identity",
        service_names=["quanyu.identity.v1.IdentityService"],
        register=lambda server: server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "quanyu.identity.v1.IdentityService", {"GetCustomer": handler}
                ),
            )
        ),
        policy={"/quanyu.identity.v1.IdentityService/GetCustomer": frozenset({Role.SERVICE})},
    )
    server, _ = serve(app)
    settings.identity.target = f"127.0.0.1:{server.port}"
    stub = identity_pb2_grpc.IdentityServiceStub(service_channel(settings, "identity", caller="orders"))
    answer = stub.GetCustomer(identity_pb2.GetCustomerRequest(customer_id="cus_1"))
    assert answer.customer.customer_id == "cus_1"
    assert len(seen) == 3
    assert all(m["authorization"].startswith("Bearer ") for m in seen)
    assert len({m[REQUEST_ID_HEADER] for m in seen}) == 1


def test_bytes_that_are_no_message_of_the_method_are_invalid_argument_once_the_caller_is_known(
    serve: Any, token: TokenFactory
) -> None:
    reached: list[object] = []

    def get(request: identity_pb2.GetCustomerRequest, context: Any) -> identity_pb2.GetCustomerResponse:
        reached.append(request)
        return identity_pb2.GetCustomerResponse()

    def register(server: grpc.Server) -> None:
        handler = grpc.unary_unary_rpc_method_handler(
            get,
            request_deserializer=identity_pb2.GetCustomerRequest.FromString,
            response_serializer=identity_pb2.GetCustomerResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(PROBE, {"Get": handler}),))

    app = ServiceApp("identity", [PROBE], register, {f"/{PROBE}/Get": frozenset(Role)})
    _, channel = serve(app)
    raw = channel.unary_unary(f"/{PROBE}/Get")
    with pytest.raises(grpc.RpcError) as caught:
        raw(b"\xff\xff\xff\xff\x0f", metadata=bearer(token(Role.OPS)))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [name for name, _ in field_violations(caught.value)] == ["request"]
    with pytest.raises(grpc.RpcError) as anonymous:
        raw(b"\xff\xff\xff\xff\x0f")
    assert anonymous.value.code() is grpc.StatusCode.UNAUTHENTICATED  # strangers learn nothing more
    assert reached == []


def test_a_caller_over_its_quota_is_resource_exhausted_with_when_to_retry_and_others_are_not(
    settings: Settings, serve: Any, token: TokenFactory
) -> None:
    settings.call_quota.store = RateConfig(per_second=0.1, burst=2)
    _, channel = serve(probe_app({"Echo": lambda request, context: request}, frozenset(Role)))
    till = token(Role.STORE, store_id="A", subject="till-1")
    call(channel, "Echo", till)
    call(channel, "Echo", till)
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, "Echo", till)
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(caught.value) == "QUOTA_EXCEEDED"
    status = rpc_status.from_call(caught.value)
    assert status is not None
    delays = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    assert len(delays) == 1
    info = error_details_pb2.RetryInfo()
    delays[0].Unpack(info)
    assert 0 < info.retry_delay.ToTimedelta().total_seconds() <= 10
    # Another till of the store, and ops, have quotas of their own.
    call(channel, "Echo", token(Role.STORE, store_id="A", subject="till-2"))
    call(channel, "Echo", token(Role.OPS))


def test_a_statement_sqlite_calls_an_error_is_a_bug_not_a_reason_to_retry(
    serve: Any, token: TokenFactory
) -> None:
    def too_many_variables(request: bytes, context: Any) -> bytes:
        error = sqlite3.OperationalError("too many SQL variables")
        error.sqlite_errorcode = sqlite3.SQLITE_ERROR
        raise OperationalError("SELECT ?", {}, error)

    _, channel = serve(probe_app({"Query": too_many_variables}, frozenset(Role)))
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, "Query", token(Role.OPS))
    assert caught.value.code() is grpc.StatusCode.INTERNAL
