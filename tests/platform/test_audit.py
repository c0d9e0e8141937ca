"""The audit trail: privileged actions kept with who, when, the request id and the object, durable
in the service's database and readable by ops only; an action whose record cannot be kept is
answered UNAVAILABLE, never OK."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy import create_engine, text

from quanyu.auth import Role
from quanyu.common.v1 import audit_pb2, audit_pb2_grpc
from quanyu.config import Settings
from quanyu.fulfilment.v1 import fulfilment_pb2, fulfilment_pb2_grpc
from services.fulfilment import bootstrap as fulfilment
from services.fulfilment import grpc_servicer as fulfilment_servicer
from services.marketing import grpc_servicer as marketing_servicer
from services.membership import grpc_servicer as membership_servicer
from tests.conftest import TokenFactory, bearer, running
from tests.fulfilment.test_grpc import store


@pytest.fixture
def channel(settings: Settings, database_url: str) -> Iterator[grpc.Channel]:
    settings.fulfilment.database_url = database_url
    fulfilment.migrate(settings)
    with running(fulfilment.build_app(settings), settings) as serving:
        yield serving


def stock_of(store_id: str) -> fulfilment_pb2.SetStockRequest:
    return fulfilment_pb2.SetStockRequest(
        store_id=store_id, levels=[fulfilment_pb2.SkuQuantity(sku="tea", on_hand=5)]
    )


def test_privileged_actions_are_kept_with_who_when_request_and_object(
    channel: grpc.Channel, token: TokenFactory
) -> None:
    stores, trail = (
        fulfilment_pb2_grpc.FulfilmentServiceStub(channel),
        audit_pb2_grpc.AuditServiceStub(channel),
    )
    ops = bearer(token(Role.OPS, subject="alice"))
    stores.UpsertStore(
        fulfilment_pb2.UpsertStoreRequest(store=store("SH-1", 31.23, 121.47)),
        metadata=(*ops, ("x-request-id", "req-upsert-1")),
    )
    stores.SetStock(stock_of("SH-1"), metadata=ops)
    # A till counting its own stock is its daily work, not a privileged action.
    stores.SetStock(stock_of("SH-1"), metadata=bearer(token(Role.STORE, store_id="SH-1")))

    records = trail.ListAuditRecords(audit_pb2.ListAuditRecordsRequest(), metadata=ops).records
    assert [(r.action, r.object, r.actor) for r in records] == [
        ("STOCK_SET", "store:SH-1", "ops/alice"),
        ("STORE_CHANGED", "store:SH-1", "ops/alice"),
    ]
    assert records[1].request_id == "req-upsert-1"
    assert records[0].request_id
    assert records[0].time.seconds > 0
    first = trail.ListAuditRecords(audit_pb2.ListAuditRecordsRequest(page_size=1), metadata=ops)
    rest = trail.ListAuditRecords(
        audit_pb2.ListAuditRecordsRequest(page_size=1, page_token=first.next_page_token), metadata=ops
    )
    assert [r.record_id for r in (*first.records, *rest.records)] == [r.record_id for r in records]
    assert first.next_page_token
    assert not rest.next_page_token

    for role in (Role.SERVICE, Role.STORE, Role.CHANNEL):
        with pytest.raises(grpc.RpcError) as caught:
            trail.ListAuditRecords(
                audit_pb2.ListAuditRecordsRequest(),
                metadata=bearer(
                    token(
                        role,
                        store_id="SH-1" if role is Role.STORE else "",
                        channel="CHANNEL_APP" if role is Role.CHANNEL else "",
                    )
                ),
            )
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as caught:
        trail.ListAuditRecords(audit_pb2.ListAuditRecordsRequest(page_token="nonsense"), metadata=ops)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_an_action_whose_record_cannot_be_kept_is_not_answered_ok(
    channel: grpc.Channel, token: TokenFactory, settings: Settings
) -> None:
    engine = create_engine(settings.database_url("fulfilment"))
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE audit_records"))
    engine.dispose()
    with pytest.raises(grpc.RpcError) as caught:
        fulfilment_pb2_grpc.FulfilmentServiceStub(channel).UpsertStore(
            fulfilment_pb2.UpsertStoreRequest(store=store("SH-2", 31.23, 121.47)),
            metadata=bearer(token(Role.OPS)),
        )
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    "servicer", [fulfilment_servicer, membership_servicer, marketing_servicer], ids=lambda m: m.__name__
)
def test_every_audited_rpc_is_one_the_service_serves_to_ops(servicer: object) -> None:
    audited, policy = servicer.AUDITED, servicer.POLICY  # type: ignore[attr-defined]
    service = servicer.SERVICE.full_name  # type: ignore[attr-defined]
    for name in audited:
        assert Role.OPS in policy[f"/{service}/{name}"]
