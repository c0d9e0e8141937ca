"""`quanyu revoke`, `quanyu audit` and `quanyu keys new` against running services."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest

from quanyu.auth import Role
from quanyu.config import Settings
from quanyu.fulfilment.v1 import fulfilment_pb2, fulfilment_pb2_grpc
from quanyu.identity.v1 import identity_pb2, identity_pb2_grpc
from quanyu.keys import KeyRing, read_public_keys
from quanyu_ops import trail
from quanyu_ops.deployment import Deployment
from services.fulfilment import bootstrap as fulfilment
from services.identity import bootstrap as identity
from tests.conftest import TokenFactory, bearer, served
from tests.fulfilment.test_grpc import store
from tests.processes import poll


@pytest.fixture
def deployment(settings: Settings) -> Iterator[Deployment]:
    identity.migrate(settings)
    fulfilment.migrate(settings)
    with ExitStack() as stack:
        for name, module in (("identity", identity), ("fulfilment", fulfilment)):
            serving = stack.enter_context(served(module.build_app(settings), settings))
            settings.service(name).target = serving.target
        yield Deployment(settings, (settings.var_dir,))


def test_an_operator_revokes_a_token_and_reads_who_did_what(
    deployment: Deployment, token: TokenFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = deployment.settings
    ops = bearer(token(Role.OPS))
    with grpc.insecure_channel(settings.target("identity")) as channel:
        issued = identity_pb2_grpc.IdentityServiceStub(channel).IssueToken(
            identity_pb2.IssueTokenRequest(role=identity_pb2.ROLE_OPS, subject="contractor"), metadata=ops
        )
    with grpc.insecure_channel(settings.target("fulfilment")) as channel:
        stores = fulfilment_pb2_grpc.FulfilmentServiceStub(channel)
        stores.UpsertStore(fulfilment_pb2.UpsertStoreRequest(store=store("BJ-1", 39.9, 116.4)), metadata=ops)

        assert trail.revoke(deployment, token_id=issued.token_id, subject="") == 0

        def answer() -> grpc.StatusCode:
            try:
                stores.ListStores(fulfilment_pb2.ListStoresRequest(), metadata=bearer(issued.token))
            except grpc.RpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        poll(answer, lambda code: code is grpc.StatusCode.UNAUTHENTICATED, "revoked token refused", within=5)

    capsys.readouterr()
    assert trail.audit(deployment, ["identity", "fulfilment"], 10) == 0
    printed = capsys.readouterr().out.splitlines()
    # One record a line, seven fields; the servers of this test log to the same output.
    lines = [line.split("\t") for line in printed if line.count("\t") == 6]
    actions = [(fields[1], fields[3], fields[4]) for fields in lines]
    assert ("identity", "TOKEN_REVOKED", f"token:{issued.token_id}") in actions
    assert ("identity", "TOKEN_ISSUED", f"token:{issued.token_id}") in actions
    assert ("fulfilment", "STORE_CHANGED", "store:BJ-1") in actions
    assert [fields[0] for fields in lines] == sorted((fields[0] for fields in lines), reverse=True)


def test_a_new_key_signs_from_then_on_and_the_old_one_still_verifies(tmp_path: Path) -> None:
    directory = tmp_path / "issuer"
    trail.new_key(directory, "k1")
    trail.new_key(directory, "k2")
    ring = KeyRing(directory)
    assert ring.signer()[0] == "k2"
    assert set(read_public_keys(directory)) == {"k1", "k2"}
    (directory / "signing").write_text("k1\n")
    assert KeyRing(directory).signer()[0] == "k1"
    assert (directory / "k1.pem").stat().st_mode & 0o077 == 0
