"""Keys and revocations across services, each a process of its own: identity signs, other services
verify by kid with keys mounted or fetched from identity; a revoked token is refused by every
replica within 5 s; the signing key of a running platform is rotated under load with no call
refused."""

from __future__ import annotations

import functools
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import jwt
import pytest

from quanyu.auth import Principal, Role, TokenCodec
from quanyu.common.v1 import audit_pb2, audit_pb2_grpc
from quanyu.fulfilment.v1 import fulfilment_pb2, fulfilment_pb2_grpc
from quanyu.identity.v1 import identity_pb2, identity_pb2_grpc
from quanyu.keys import PUBLIC_SUFFIX, ensure_local_keys, write_key
from tests.conftest import bearer
from tests.processes import free_port, platform_env, poll, started, target, wait_serving


@dataclass
class Platform:
    identity: identity_pb2_grpc.IdentityServiceStub
    audit: audit_pb2_grpc.AuditServiceStub
    replicas: list[fulfilment_pb2_grpc.FulfilmentServiceStub]
    issuer_keys: Path
    ops: str


@pytest.fixture
def platform(tmp_path: Path, database_url: str) -> Iterator[Platform]:
    """`quanyu serve identity`, and two `quanyu serve fulfilment` replicas on one database that
    mount only the public keys there were at the start: a key added later reaches them only by
    asking identity."""
    var = tmp_path / "var"
    issuer_keys = var / "token-keys"
    ensure_local_keys(issuer_keys, "k")
    mounted = tmp_path / "mounted-public-keys"
    mounted.mkdir()
    for public in issuer_keys.glob(f"*{PUBLIC_SUFFIX}"):
        shutil.copy(public, mounted / public.name)
    env = platform_env(var, QUANYU_LOG_LEVEL="WARNING", QUANYU_FULFILMENT__DATABASE_URL=database_url)
    with ExitStack() as stack:
        identity = stack.enter_context(started(["serve", "identity"], env, tmp_path / "identity.log"))
        wait_serving(target(env, "identity"), identity)
        channel = stack.enter_context(grpc.insecure_channel(target(env, "identity")))
        replicas = []
        for name in ("a", "b"):
            port = free_port()
            replica_env = {
                **env,
                "QUANYU_TOKEN_PUBLIC_KEY_DIR": str(mounted),
                "QUANYU_FULFILMENT__PORT": str(port),
                "QUANYU_FULFILMENT__METRICS_PORT": str(free_port()),
            }
            process = stack.enter_context(
                started(["serve", "fulfilment"], replica_env, tmp_path / f"fulfilment-{name}.log")
            )
            wait_serving(f"127.0.0.1:{port}", process)
            replica = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{port}"))
            replicas.append(fulfilment_pb2_grpc.FulfilmentServiceStub(replica))
        yield Platform(
            identity_pb2_grpc.IdentityServiceStub(channel),
            audit_pb2_grpc.AuditServiceStub(channel),
            replicas,
            issuer_keys,
            TokenCodec.local(issuer_keys).issue(Principal(Role.OPS, "ops")).token,
        )


def issue(platform: Platform, subject: str) -> identity_pb2.IssueTokenResponse:
    answer: identity_pb2.IssueTokenResponse = platform.identity.IssueToken(
        identity_pb2.IssueTokenRequest(role=identity_pb2.ROLE_OPS, subject=subject),
        metadata=bearer(platform.ops),
    )
    return answer


def answer_of(replica: fulfilment_pb2_grpc.FulfilmentServiceStub, token: str) -> grpc.StatusCode:
    try:
        replica.ListStores(fulfilment_pb2.ListStoresRequest(), metadata=bearer(token), timeout=5)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_a_revoked_token_is_refused_by_every_replica_within_five_seconds(platform: Platform) -> None:
    lost = issue(platform, "laptop-lost")
    kept = issue(platform, "laptop-kept")
    till = issue(platform, "till-stolen")
    assert lost.token_id
    assert jwt.decode(lost.token, options={"verify_signature": False})["jti"] == lost.token_id
    for replica in platform.replicas:
        assert answer_of(replica, lost.token) is grpc.StatusCode.OK

    platform.identity.RevokeToken(
        identity_pb2.RevokeTokenRequest(token_id=lost.token_id), metadata=bearer(platform.ops)
    )
    platform.identity.RevokeToken(
        identity_pb2.RevokeTokenRequest(subject="ops/till-stolen"), metadata=bearer(platform.ops)
    )
    revoked_at = time.monotonic()
    for replica in platform.replicas:
        for gone in (lost.token, till.token):
            poll(
                functools.partial(answer_of, replica, gone),
                lambda code: code is grpc.StatusCode.UNAUTHENTICATED,
                "revoked token refused",
                within=5.0,
            )
    assert time.monotonic() - revoked_at < 5.0
    # Identity refuses it too; the token not revoked, and one issued to the subject afterwards, work.
    with pytest.raises(grpc.RpcError) as caught:
        platform.identity.GetTokenTrust(identity_pb2.GetTokenTrustRequest(), metadata=bearer(lost.token))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    # Token times are whole seconds: a subject's revocation covers every token issued in its
    # second, so the next token is asked for in the next one.
    time.sleep(1.0)
    again = issue(platform, "till-stolen")
    for replica in platform.replicas:
        assert answer_of(replica, kept.token) is grpc.StatusCode.OK
        assert answer_of(replica, again.token) is grpc.StatusCode.OK

    # Who did it is on the record.
    records = platform.audit.ListAuditRecords(
        audit_pb2.ListAuditRecordsRequest(), metadata=bearer(platform.ops)
    ).records
    actions = [(r.action, r.object) for r in records]
    assert ("TOKEN_REVOKED", f"token:{lost.token_id}") in actions
    assert ("TOKEN_REVOKED", "subject:ops/till-stolen") in actions
    assert ("TOKEN_ISSUED", f"token:{lost.token_id}") in actions
    assert all(r.actor == "ops" and r.request_id for r in records)


def test_the_signing_key_is_rotated_under_load_with_no_call_refused(platform: Platform) -> None:
    refused: list[grpc.StatusCode] = []
    kids: set[str] = set()
    calls = 0
    stop = threading.Event()
    before = issue(platform, "before-rotation")

    def load() -> None:
        nonlocal calls
        while not stop.is_set():
            fresh = issue(platform, "under-load")
            kids.add(jwt.get_unverified_header(fresh.token)["kid"])
            for replica in platform.replicas:
                for token in (fresh.token, before.token):
                    code = answer_of(replica, token)
                    calls += 1
                    if code is not grpc.StatusCode.OK:
                        refused.append(code)

    workers = [threading.Thread(target=load) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        poll(lambda: calls, lambda n: n > 20, "calls before the rotation", within=30)
        new_kid = write_key(platform.issuer_keys, "k9999-rotated")
        poll(lambda: set(kids), lambda seen: new_kid in seen, "tokens signed with the new key", within=10)
        seen = calls
        poll(lambda: calls, lambda n: n > seen + 20, "calls after the rotation", within=30)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
    assert refused == []
    # The old key retired once its last token expired: identity signs on with the new one alone.
    for old in [p for p in platform.issuer_keys.iterdir() if not p.name.startswith(new_kid)]:
        old.unlink()
    assert jwt.get_unverified_header(issue(platform, "after").token)["kid"] == new_kid
