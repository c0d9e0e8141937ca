"""The audit trail: privileged actions kept with who, when, the request id and the object, durable
in the service's database and readable by ops only; a record commits with its action, so an
action whose record cannot be kept is not kept either."""

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


def test_a_change_commits_with_its_audit_record_or_not_at_all(
    channel: grpc.Channel, token: TokenFactory, settings: Settings
) -> None:
    stores = fulfilment_pb2_grpc.FulfilmentServiceStub(channel)
    ops = bearer(token(Role.OPS))
    # A refused action leaves no record.
    with pytest.raises(grpc.RpcError) as caught:
        stores.SetStock(stock_of("SH-404"), metadata=ops)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    engine = create_engine(settings.database_url("fulfilment"))
    with engine.begin() as connection:
        assert connection.execute(text("SELECT count(*) FROM audit_records")).scalar() == 0
        connection.execute(text("DROP TABLE audit_records"))
    engine.dispose()
    # With no trail to write to, the store is not kept either: never a change without its record.
    with pytest.raises(grpc.RpcError) as caught:
        stores.UpsertStore(
            fulfilment_pb2.UpsertStoreRequest(store=store("SH-2", 31.23, 121.47)), metadata=ops
        )
    assert caught.value.code() is not grpc.StatusCode.OK
    with pytest.raises(grpc.RpcError) as caught:
        stores.GetStore(fulfilment_pb2.GetStoreRequest(store_id="SH-2"), metadata=ops)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
