"""The one way a Quanyu service runs: a gRPC server with health, reflection, the call interceptor
(request id, authentication, authorisation, error mapping, one log line per call) and a graceful
shutdown on SIGTERM or SIGINT."""

from __future__ import annotations

import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import grpc
import structlog
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from quanyu import tracing
from quanyu.audit import AUDIT_SERVICE, AuditLog, AuditServicer
from quanyu.audit_record import Actor
from quanyu.auth import Principal, Role, TokenCodec, acting_as, bearer_token, current_principal
from quanyu.clients import caller_trust, identity_trust
from quanyu.config import Settings
from quanyu.db import is_unavailable
from quanyu.errors import Code, InvalidArgument, PermissionDenied, QuanyuError
from quanyu.keys import Fetched, Trust
from quanyu.logs import REQUEST_ID_HEADER, MadeHere
from quanyu.metrics import observe_call, observe_start, serve_metrics
from quanyu.quota import Quota, quota_from

log = structlog.get_logger("quanyu.server")

# How long answers already on their way out get to reach their callers once a drain is over.
LAST_ANSWERS_SECONDS = 1.0
# Health and reflection answer anybody: probes and grpcurl carry no token.
OPEN_SERVICES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

_STATUS_CODES: Mapping[Code, tuple[grpc.StatusCode, int]] = {
    Code.INVALID_ARGUMENT: (grpc.StatusCode.INVALID_ARGUMENT, code_pb2.INVALID_ARGUMENT),
    Code.NOT_FOUND: (grpc.StatusCode.NOT_FOUND, code_pb2.NOT_FOUND),
    Code.ALREADY_EXISTS: (grpc.StatusCode.ALREADY_EXISTS, code_pb2.ALREADY_EXISTS),
    Code.FAILED_PRECONDITION: (grpc.StatusCode.FAILED_PRECONDITION, code_pb2.FAILED_PRECONDITION),
    Code.PERMISSION_DENIED: (grpc.StatusCode.PERMISSION_DENIED, code_pb2.PERMISSION_DENIED),
    Code.UNAUTHENTICATED: (grpc.StatusCode.UNAUTHENTICATED, code_pb2.UNAUTHENTICATED),
    Code.UNAVAILABLE: (grpc.StatusCode.UNAVAILABLE, code_pb2.UNAVAILABLE),
    Code.ABORTED: (grpc.StatusCode.ABORTED, code_pb2.ABORTED),
    Code.RESOURCE_EXHAUSTED: (grpc.StatusCode.RESOURCE_EXHAUSTED, code_pb2.RESOURCE_EXHAUSTED),
}

Policy = Mapping[str, frozenset[Role]]


def rpc_policy(service: Any, roles: Mapping[str, Iterable[Role]]) -> dict[str, frozenset[Role]]:
    """Who may call each RPC of a service, keyed by full method name.

    Every method the proto declares must be named, so a new RPC is never open by omission.
    """
    methods = {method.name for method in service.methods}
    missing, unknown = methods - roles.keys(), roles.keys() - methods
    if missing or unknown:
        raise ValueError(
            f"{service.full_name}: roles missing for {sorted(missing)}, unknown {sorted(unknown)}"
        )
    return {f"/{service.full_name}/{name}": frozenset(allowed) for name, allowed in roles.items()}


def status_for(error: QuanyuError, domain: str) -> status_pb2.Status:
    """The rich status (Google API error model) that stands for a domain error on the wire.

    It travels in trailing metadata, which a client refuses beyond 8-16 kB (and then cannot read
    the error at all): the message, metadata values and field violations are cut to fit, however
    many violations a request had or however long the values it sent that an error repeats.
    """
    _, numeric = _STATUS_CODES[error.code]
    metadata = {key: _clip(value, 100) for key, value in error.metadata.items()}
    details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=domain, metadata=metadata))]
    if error.violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=_clip(v.field, 100), description=_clip(v.description, 200)
                        )
                        for v in error.violations[:_MAX_VIOLATIONS]
                    ]
                )
            )
        )
    if error.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(code=numeric, message=_clip(error.message, 500), details=details)


_MAX_VIOLATIONS = 10


def _clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, marked with an ellipsis where cut."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode(errors="ignore") + "…"


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


class Drain:
    """Counts calls in flight so a shutdown can refuse new ones and wait for the rest.

    gRPC's own stop() cancels late arrivals with CANCELLED, which clients do not retry; a call
    refused here gets UNAVAILABLE, which every client retries on another replica.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._in_flight = 0
        self._draining = False

    def enter(self) -> bool:
        with self._changed:
            if self._draining:
                return False
            self._in_flight += 1
            return True

    def leave(self) -> None:
        with self._changed:
            self._in_flight -= 1
            # Only a drain waits on the count; before one, waking nobody costs a call nothing.
            if self._draining:
                self._changed.notify_all()

    def drain(self, timeout: float | None) -> bool:
        """Refuse new calls from now on; True when those in flight finished within `timeout`."""
        with self._changed:
            self._draining = True
            return self._changed.wait_for(lambda: self._in_flight == 0, timeout)


class CallInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Wraps every unary call of a service: the cross-cutting concerns, written once."""

    def __init__(
        self,
        *,
        service: str,
        domain: str,
        policy: Policy,
        tokens: TokenCodec,
        drain: Drain,
        quota: Quota | None = None,
    ) -> None:
        self._service = service
        self._domain = domain
        self._policy = policy
        self._tokens = tokens
        self._drain = drain
        self._quota = quota
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        method: str = details.method
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        if handler.unary_unary is None:
            # Every Quanyu RPC is unary; a streaming method that is not open has no policy.
            return None
        # gRPC asks for the handler on every call: the wrapped one is made once per method.
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._wrap(method, self._policy.get(method), handler.unary_unary),
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, roles: frozenset[Role] | None, behaviour: Callable[..., Any]) -> Any:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            if not self._drain.enter():
                context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; retry")
            try:
                return serve(request, context)
            finally:
                self._drain.leave()

        def serve(request: Any, context: grpc.ServicerContext) -> Any:
            metadata = dict(context.invocation_metadata())
            sent = metadata.get(REQUEST_ID_HEADER)
            request_id = str(sent)[:128] if sent else new_request_id()
            structlog.contextvars.bind_contextvars(request_id=request_id, method=method)
            # Sent back as trailing metadata: initial metadata would commit the call and stop
            # clients from retrying an UNAVAILABLE answer.
            context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
            started = time.perf_counter()
            observe_start(method)
            status = grpc.StatusCode.OK
            principal: Principal | None = None
            try:
                principal = self._tokens.verify(bearer_token(metadata.get("authorization")))
                if roles is None or principal.role not in roles:
                    raise PermissionDenied(
                        f"role {principal.role.value!r} may not call {method.rsplit('/', 1)[-1]}"
                    )
                if self._quota is not None:
                    self._quota.take(principal)
                if isinstance(request, _Malformed):
                    raise InvalidArgument("request", f"is not a valid message: {request.problem}")
                with acting_as(principal):
                    return behaviour(request, context)
            except QuanyuError as error:
                status = _STATUS_CODES[error.code][0]
                rich = rpc_status.to_status(status_for(error, self._domain))
                context.abort_with_status(
                    _Status(
                        rich.code, rich.details, (*rich.trailing_metadata, (REQUEST_ID_HEADER, request_id))
                    )
                )
            except Exception as error:
                if context.code() not in (None, grpc.StatusCode.OK):
                    status = context.code()
                    raise
                if is_unavailable(error):
                    status = grpc.StatusCode.UNAVAILABLE
                    log.warning("database unavailable", error=str(error).splitlines()[0])
                    context.abort(status, "the service's database is unavailable; retry shortly")
                status = grpc.StatusCode.INTERNAL
                log.exception("unexpected error")
                context.abort(status, "internal error")
            finally:
                elapsed = time.perf_counter() - started
                observe_call(method, status.name, elapsed)
                log.info(
                    "rpc",
                    code=status.name,
                    duration_ms=round(elapsed * 1000, 3),
                    role=principal.role.value if principal else None,
                    caller=principal.name if principal else None,
                )
                structlog.contextvars.clear_contextvars()

        return call


def current_actor() -> Actor:
    """Who makes the call being served, and its request id: what an audit record names."""
    request_id = structlog.contextvars.get_contextvars().get("request_id", "")
    return Actor(current_principal().name, str(request_id))


def new_request_id() -> str:
    """32 hex digits naming a call that came without an id. It only ties log lines together, so
    it needs no secure randomness: os.urandom, behind uuid4, is a system call that gives up the
    interpreter lock, and on a busy server each call then waited to have it back. Made here, it
    is logged unmasked (a run of its digits may look like a phone number; it is none)."""
    return MadeHere(f"{random.getrandbits(128):032x}")


@dataclass(frozen=True)
class _Malformed:
    """Bytes that do not parse as the method's request: answered INVALID_ARGUMENT once the caller
    is known, instead of the INTERNAL gRPC gives a deserializer that raises."""

    problem: str


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except (DecodeError, ValueError, TypeError, RecursionError) as error:
            return _Malformed(str(error)[:200] or type(error).__name__)

    return parse


@dataclass(frozen=True)
class _Status(grpc.Status):  # type: ignore[misc]
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


class BackgroundTask(Protocol):
    """Work a service runs beside its server (an outbox relay, a periodic job)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


U = TypeVar("U")


class Servicer(Generic[U]):
    """The base of every service's servicer, beside the generated one: it holds the service's
    use cases and names what the server needs, given as class arguments (`service=` the
    descriptor, `policy=` who may call each RPC). The registration is the generated
    `add_<Name>Servicer_to_server` of the generated base."""

    SERVICE: ClassVar[Any]
    POLICY: ClassVar[Policy]

    def __init_subclass__(cls, *, service: Any, policy: Policy, **rest: Any) -> None:
        super().__init_subclass__(**rest)
        cls.SERVICE, cls.POLICY = service, policy

    def __init__(self, service: U) -> None:
        self._service = service

    def add_to(self, server: grpc.Server) -> None:
        generated = next(base for base in type(self).__mro__ if base.__module__.endswith("_pb2_grpc"))
        add = getattr(sys.modules[generated.__module__], f"add_{generated.__name__}_to_server")
        add(self, server)


@dataclass
class ServiceApp:
    """What a service brings to the shared server: its servicers, policy and background work."""

    name: str
    service_names: Sequence[str]
    register: Callable[[grpc.Server], None]
    policy: Policy
    tasks: list[BackgroundTask] = field(default_factory=list)
    on_stop: list[Callable[[], None]] = field(default_factory=list)
    # Where the server learns new token keys and revoked tokens; None: from identity.
    token_trust: Callable[[], Fetched] | None = None
    # The service's audit trail, served to ops (its use cases write it).
    audit: AuditLog | None = None

    @classmethod
    def serving(
        cls,
        name: str,
        servicer: Servicer[Any],
        *,
        tasks: Sequence[BackgroundTask] = (),
        on_stop: Sequence[Callable[[], None]] = (),
        token_trust: Callable[[], Fetched] | None = None,
        audit: AuditLog | None = None,
    ) -> ServiceApp:
        """A service's app from its servicer and its background work: what every bootstrap ends
        with."""
        return cls(
            name=name,
            service_names=[servicer.SERVICE.full_name],
            register=servicer.add_to,
            policy=servicer.POLICY,
            tasks=list(tasks),
            on_stop=list(on_stop),
            token_trust=token_trust,
            audit=audit,
        )


@dataclass
class RunningServer:
    app: ServiceApp
    server: grpc.Server
    port: int
    health: health.HealthServicer
    drain: Drain
    probes: grpc.Server | None = None
    trust: Trust | None = None

    def stop(self, grace: float | None) -> None:
        """Graceful: report NOT_SERVING, refuse new calls, let calls in flight finish."""
        self.health.enter_graceful_shutdown()
        if not self.drain.drain(grace):
            log.warning("calls still in flight after the grace period", grace_s=grace)
        for task in self.app.tasks:
            task.stop()
        if self.trust is not None:
            self.trust.stop()
        # The drain counts a call done when its handler returns, before its answer is sent: answers
        # on their way out (and refusals) get a moment; whatever is left then (a health Watch
        # stream, a call past its grace) is cut short.
        self.server.stop(LAST_ANSWERS_SECONDS).wait()
        if self.probes is not None:
            self.probes.stop(0).wait()
        for hook in self.app.on_stop:
            hook()


def start_server(app: ServiceApp, settings: Settings, *, port: int | None = None) -> RunningServer:
    drain = Drain()
    trust = caller_trust(settings, app.token_trust or identity_trust(settings, caller=app.name))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.server_workers, thread_name_prefix=app.name),
        interceptors=[
            *tracing.server_interceptors(),
            CallInterceptor(
                service=app.name,
                domain=f"quanyu.{app.name}.v1",
                policy={**app.policy, **AuditServicer.POLICY} if app.audit else app.policy,
                tokens=TokenCodec(trust, lifetimes=settings.lifetimes()),
                drain=drain,
                quota=quota_from("calls", settings.call_quota),
            ),
        ],
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            # Clients reconnect every few minutes, so new replicas behind a Service get traffic.
            ("grpc.max_connection_age_ms", 300_000),
            ("grpc.max_connection_age_grace_ms", 30_000),
        ],
    )
    app.register(server)
    audit_names: tuple[str, ...] = ()
    if app.audit is not None:
        AuditServicer(app.audit).add_to(server)
        audit_names = (AUDIT_SERVICE.full_name,)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            *app.service_names,
            *audit_names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    listen = settings.service(app.name).port if port is None else port
    address = f"{settings.host}:{listen}"
    if settings.mutual_tls:
        chain, key, authority = settings.tls_files()
        credentials = grpc.ssl_server_credentials(
            [(key, chain)], root_certificates=authority, require_client_auth=True
        )
        bound = server.add_secure_port(address, credentials)
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"{app.name} could not listen on {address}")
    server.start()
    for name in ("", *app.service_names):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    probes = (
        _plain_health(health_servicer, settings) if settings.mutual_tls and settings.health_port else None
    )
    trust.start()
    for task in app.tasks:
        task.start()
    return RunningServer(app, server, bound, health_servicer, drain, probes, trust)


def _plain_health(servicer: health.HealthServicer, settings: Settings) -> grpc.Server:
    """Health alone, in plain text, for probes that cannot do mutual TLS; it shares the state
    of the main server's health, so it turns NOT_SERVING with it."""
    probes = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, probes)
    if probes.add_insecure_port(f"{settings.host}:{settings.health_port}") == 0:
        raise OSError(f"could not listen for health probes on port {settings.health_port}")
    probes.start()
    return probes


# How long a thread keeps the interpreter while another waits for it. A busy thread (a run's
# pages, calls being served) holds it for up to this long at a time; an outbox relay beside it
# gives it up at every row SQLite steps through and waits that long to have it back, so at the
# default 5 ms reading a batch of 500 due effects took seconds and effects lagged their orders.
SWITCH_INTERVAL_S = 0.0005


def serve_until_signalled(app: ServiceApp, settings: Settings) -> None:
    """Run a service in the foreground until SIGTERM or SIGINT, then shut down gracefully."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    stopping = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        log.info("shutdown requested", signal=signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    running = start_server(app, settings)
    metrics_port = settings.service(app.name).metrics_port
    serve_metrics(settings.host, metrics_port)
    log.info(
        "serving", service=app.name, address=f"{settings.host}:{running.port}", metrics_port=metrics_port
    )
    # Any thread may take the signal, and Python runs the handler only once the main thread runs
    # again: a main thread blocked for good in wait() could leave a SIGTERM unhandled.
    while not stopping.wait(timeout=0.1):
        pass
    running.stop(settings.grace_seconds)
    log.info("stopped", service=app.name)
