"""Service-to-service calls: one channel factory with deadlines, retries on UNAVAILABLE only,
a service token and the request id of the call being served passed along."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from quanyu import tracing
from quanyu.auth import Principal, Role, TokenCodec
from quanyu.config import Settings
from quanyu.errors import Code, FieldViolation, QuanyuError, Unavailable, error_for
from quanyu.keys import Fetched, Revocations, Trust, issuer_keys, joined, load_public_pem, service_keys
from quanyu.logs import REQUEST_ID_HEADER
from quanyu.resolving import Resolve, ResolvingChannel, dns_addresses, split_target

SERVICE_PACKAGES = {
    "identity": "quanyu.identity.v1.IdentityService",
    "membership": "quanyu.membership.v1.MembershipService",
    "orders": "quanyu.orders.v1.OrderService",
    "fulfilment": "quanyu.fulfilment.v1.FulfilmentService",
    "marketing": "quanyu.marketing.v1.MarketingService",
}


def retry_service_config(service: str) -> str:
    """Retry only UNAVAILABLE: every other status is an answer, and a write is only retried
    because every Quanyu write is idempotent by its key."""
    return json.dumps(
        {
            # Spread calls over every address the target resolves to (a headless Service).
            "loadBalancingConfig": [{"round_robin": {}}],
            "methodConfig": [
                {
                    "name": [{"service": service}],
                    "retryPolicy": {
                        "maxAttempts": 4,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "1s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ],
        }
    )


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):  # type: ignore[misc]
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class _ServiceTokenSource:
    """A `service` token for this process, renewed well before it expires."""

    def __init__(self, codec: TokenCodec, subject: str, ttl_seconds: int = 3600) -> None:
        self._codec, self._subject, self._ttl = codec, subject, ttl_seconds
        self._lock = threading.Lock()
        self._token, self._renew_at = "", 0.0

    def __call__(self) -> str:
        with self._lock:
            if time.monotonic() >= self._renew_at:
                issued = self._codec.issue(Principal(Role.SERVICE, self._subject), self._ttl)
                self._token, self._renew_at = issued.token, time.monotonic() + self._ttl / 2
            return self._token


class _OutgoingCall(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: Callable[[], str], timeout: float) -> None:
        self._token, self._timeout = token, timeout

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        metadata = [
            (k, v) for k, v in (details.metadata or ()) if k not in ("authorization", REQUEST_ID_HEADER)
        ]
        request_id = structlog.contextvars.get_contextvars().get("request_id") or uuid.uuid4().hex
        metadata += [("authorization", f"Bearer {self._token()}"), (REQUEST_ID_HEADER, request_id)]
        return continuation(
            _CallDetails(
                method=details.method,
                timeout=details.timeout if details.timeout is not None else self._timeout,
                metadata=metadata,
                credentials=details.credentials,
                wait_for_ready=details.wait_for_ready,
                compression=details.compression,
            ),
            request,
        )


def open_channel(settings: Settings, target: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    """A channel to `target` over the transport the services themselves use: mutual TLS with this
    process's certificate when QUANYU_TLS_CERT, _KEY and _CA are set, plain text otherwise. Every
    client of the platform (services, importer, map, demo, CLI) opens its channels here, so one
    setting moves them all."""
    if settings.mutual_tls:
        chain, key, authority = settings.tls_files()
        credentials = grpc.ssl_channel_credentials(
            root_certificates=authority, private_key=key, certificate_chain=chain
        )
        return grpc.secure_channel(target, credentials, options=list(options))
    return grpc.insecure_channel(target, options=list(options))


def service_channel(
    settings: Settings, service: str, *, caller: str, resolve: Resolve = dns_addresses
) -> grpc.Channel:
    """A channel from `caller` to another Quanyu service, ready for its typed stub. A target named
    by a host name is re-resolved every `settings.resolve_seconds` with `resolve`, and calls are
    spread round-robin over every address it resolves to (quanyu.resolving)."""
    options = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", retry_service_config(SERVICE_PACKAGES[service])),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    target = settings.target(service)
    named = split_target(target)
    channel: grpc.Channel
    if named and settings.resolve_seconds:
        host, port = named
        channel = ResolvingChannel(
            host,
            port,
            lambda where, with_options: open_channel(settings, where, with_options),
            options,
            every=settings.resolve_seconds,
            drain_seconds=2 * settings.call_timeout_seconds,
            resolve=resolve,
        )
    else:
        channel = open_channel(settings, target, options)
    tokens = _ServiceTokenSource(service_codec(settings), subject=caller)
    return grpc.intercept_channel(
        tracing.traced_channel(channel), _OutgoingCall(tokens, settings.call_timeout_seconds)
    )


def service_codec(settings: Settings) -> TokenCodec:
    """What signs this process's own calls: a service key, trusted for the `service` role only."""
    return TokenCodec.local(
        settings.services_key_dir(), lifetimes=settings.lifetimes(), roles=frozenset({"service"})
    )


def caller_trust(settings: Settings, fetch: Callable[[], Fetched] | None) -> Trust:
    """What a service trusts to verify its callers: the issuer's mounted public keys and the
    service keys, and what `fetch` (identity) says of new keys and revoked tokens."""
    return Trust(
        joined(issuer_keys(settings.public_key_dir()), service_keys(settings.services_key_dir())),
        fetch,
        refresh_seconds=settings.token_trust_refresh_seconds,
    )


def identity_trust(settings: Settings, *, caller: str) -> Callable[[], Fetched]:
    """Asks identity for its public keys and the tokens revoked (GetTokenTrust)."""
    from quanyu.identity.v1 import identity_pb2, identity_pb2_grpc

    stub = identity_pb2_grpc.IdentityServiceStub(service_channel(settings, "identity", caller=caller))
    timeout = min(settings.call_timeout_seconds, settings.token_trust_refresh_seconds * 2)

    def fetch() -> Fetched:
        answer = stub.GetTokenTrust(identity_pb2.GetTokenTrustRequest(), timeout=timeout)
        return Fetched(
            {key.kid: load_public_pem(key.public_key_pem.encode()) for key in answer.keys},
            Revocations(
                frozenset(answer.revoked_token_ids),
                {subject.subject: subject.issued_before.seconds for subject in answer.revoked_subjects},
            ),
        )

    return fetch


def store_exists(fulfilment: Any, store_id: str) -> bool:
    """Whether the chain has the store, as fulfilment (which keeps the stores) says; Unavailable
    when it cannot say."""
    from quanyu.fulfilment.v1 import fulfilment_pb2

    try:
        fulfilment.GetStore(fulfilment_pb2.GetStoreRequest(store_id=store_id))
    except grpc.RpcError as error:
        if error.code() is grpc.StatusCode.NOT_FOUND:
            return False
        raise Unavailable(
            f"cannot tell whether store {store_id!r} exists: fulfilment answered {error.code().name}",
            reason="FULFILMENT_UNAVAILABLE",
        ) from error
    return True


def error_reason(error: grpc.RpcError) -> str:
    """The ErrorInfo reason a Quanyu service attached to a failed call, or ''."""
    info = error_info(error)
    return info.reason if info else ""


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    status = rpc_status.from_call(error)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """(field, description) pairs of a BadRequest a service attached to a failed call."""
    status = rpc_status.from_call(error)
    found: list[tuple[str, str]] = []
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            request = error_details_pb2.BadRequest()
            detail.Unpack(request)
            found += [(v.field, v.description) for v in request.field_violations]
    return found


# Statuses that mean the other service did not answer the request (down, too slow, overloaded,
# or failing inside): the same request may succeed later.
_UNANSWERED = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        # Our own token refused: a deployment fault (keys out of step), not the request's.
        grpc.StatusCode.UNAUTHENTICATED,
    }
)
# PERMISSION_DENIED for the role of our own token is the same deployment fault; a refusal with
# another reason (a member code a till passed on, say) is an answer about the request.
_ROLE_REFUSED = "PERMISSION_DENIED"


def is_unanswered(error: grpc.RpcError) -> bool:
    """True when `error` says the call went unanswered rather than that the request was refused."""
    code = error.code()
    if code in _UNANSWERED:
        return True
    if code is grpc.StatusCode.PERMISSION_DENIED:
        info = error_info(error)
        return info is None or info.reason == _ROLE_REFUSED
    return False


def failure_of(service: str, error: grpc.RpcError) -> QuanyuError:
    """Another service's failed answer as a domain error, the one classifier every caller and
    every outbox uses: Unavailable when the call went unanswered (retry later), otherwise the
    refusal with its code, reason, metadata and field violations, so the caller hears exactly
    what `service` said."""
    code = error.code()
    if is_unanswered(error):
        return Unavailable(
            f"{service} is unavailable ({code.name}); retry with the same request id",
            reason=f"{service.upper()}_UNAVAILABLE",
        )
    info = error_info(error)
    violations = tuple(FieldViolation(f, d) for f, d in field_violations(error))
    try:
        ours = Code(code.name)
    except ValueError:
        ours = Code.FAILED_PRECONDITION
    return error_for(
        ours,
        f"{service}: {error.details() or code.name}",
        reason=info.reason if info else code.name,
        metadata=dict(info.metadata) if info else None,
        violations=violations,
    )
