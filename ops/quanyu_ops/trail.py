"""Ops commands for tokens and the audit trail: `quanyu revoke`, `quanyu audit`, `quanyu keys new`.

They call the services as ops, with a token signed by the deployment's issuer key, over the
channel the services' own TLS settings describe.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Any

import grpc

from quanyu.auth import Role, caller
from quanyu.clients import SERVICE_PACKAGES
from quanyu.common.v1 import audit_pb2, audit_pb2_grpc
from quanyu.config import SERVICE_NAMES, Settings
from quanyu.identity.v1 import identity_pb2, identity_pb2_grpc
from quanyu.keys import write_key
from quanyu_ops.deployment import Deployment, Metadata

# The audit trail of a service that keeps none (orders) answers UNIMPLEMENTED: skipped, not failed.
AUDITING = tuple(name for name in SERVICE_NAMES if name in SERVICE_PACKAGES and name != "orders")


class _Sending(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Adds the operator's token to every call of a channel."""

    def __init__(self, metadata: Metadata) -> None:
        self._metadata = metadata

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(details._replace(metadata=[*(details.metadata or ()), *self._metadata]), request)


def ops_channel(settings: Settings, service: str, metadata: Metadata = ()) -> grpc.Channel:
    """A channel to a service as the services reach each other (mutual TLS when configured),
    every call carrying `metadata`."""
    if settings.mutual_tls:
        chain, key, authority = settings.tls_files()
        credentials = grpc.ssl_channel_credentials(
            root_certificates=authority, private_key=key, certificate_chain=chain
        )
        channel = grpc.secure_channel(settings.target(service), credentials)
    else:
        channel = grpc.insecure_channel(settings.target(service))
    return grpc.intercept_channel(channel, _Sending(metadata)) if metadata else channel


def operator_bearer(deployment: Deployment) -> Metadata:
    return deployment.bearer(caller(Role.OPS, subject=getpass.getuser() or "ops"), 600)


def revoke(deployment: Deployment, *, token_id: str, subject: str) -> int:
    request = (
        identity_pb2.RevokeTokenRequest(token_id=token_id)
        if token_id
        else identity_pb2.RevokeTokenRequest(subject=subject)
    )
    with ops_channel(deployment.settings, "identity") as channel:
        identity_pb2_grpc.IdentityServiceStub(channel).RevokeToken(
            request, metadata=operator_bearer(deployment), timeout=10
        )
    print(f"revoked {'token ' + token_id if token_id else 'every token of ' + subject} so far issued")
    return 0


def audit(deployment: Deployment, services: list[str], limit: int) -> int:
    """The newest `limit` records of each service, merged newest first, one per line."""
    rows: list[tuple[str, str, audit_pb2.AuditRecord]] = []
    metadata = operator_bearer(deployment)
    for service in services or AUDITING:
        with ops_channel(deployment.settings, service) as channel:
            answer = audit_pb2_grpc.AuditServiceStub(channel).ListAuditRecords(
                audit_pb2.ListAuditRecordsRequest(page_size=min(limit, 500)), metadata=metadata, timeout=10
            )
        rows += [(r.time.ToDatetime().isoformat() + "Z", service, r) for r in answer.records]
    for when, service, r in sorted(rows, key=lambda row: row[0], reverse=True)[:limit]:
        print("\t".join((when, service, r.actor, r.action, r.object, r.request_id, r.detail)))
    return 0


def new_key(directory: Path, kid: str | None) -> int:
    made = write_key(directory, kid)
    print(f"{directory / made}.pem (private) and {directory / made}.pub.pem (public)", file=sys.stderr)
    print(made)
    return 0
