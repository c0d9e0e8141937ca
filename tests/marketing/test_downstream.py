"""The zones of fulfilment's stores, read from a real fulfilment server over gRPC as marketing's
own service identity: every page of ListStores, kept until the next refresh succeeds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from quanyu.auth import Role
from quanyu.clients import service_channel
from quanyu.common.v1 import common_pb2
from quanyu.config import Settings
from quanyu.errors import Unavailable
from quanyu.fulfilment.v1 import fulfilment_pb2, fulfilment_pb2_grpc
from services.fulfilment import bootstrap
from services.marketing.downstream import StoreZones
from tests.conftest import TokenFactory, bearer, served
from tests.processes import free_port


def store(store_id: str, timezone: str) -> fulfilment_pb2.Store:
    return fulfilment_pb2.Store(
        store_id=store_id,
        name=f"Store {store_id}",
        location=common_pb2.LatLng(latitude=43.8, longitude=87.6, system=common_pb2.COORDINATE_SYSTEM_WGS84),
        timezone=timezone,
    )


@pytest.fixture
def fulfilment(settings: Settings, database_url: str, token: TokenFactory) -> Iterator[Settings]:
    settings.fulfilment.database_url = database_url
    bootstrap.migrate(settings)
    with served(bootstrap.build_app(settings), settings) as serving:
        settings.service("fulfilment").target = serving.target
        stub = fulfilment_pb2_grpc.FulfilmentServiceStub(serving.channel)
        for one in (store("sto_1", ""), store("sto_kashgar", "Asia/Urumqi"), store("sto_3", "Asia/Shanghai")):
            stub.UpsertStore(fulfilment_pb2.UpsertStoreRequest(store=one), metadata=bearer(token(Role.OPS)))
        yield settings


def zones_from(settings: Settings) -> StoreZones:
    channel = service_channel(settings, "fulfilment", caller="marketing")
    return StoreZones(fulfilment_pb2_grpc.FulfilmentServiceStub(channel), page_size=2, timeout=5)


def test_every_stores_zone_is_read_across_pages(fulfilment: Settings) -> None:
    zones = zones_from(fulfilment)
    assert (zones.loaded, zones.zone("sto_kashgar")) == (False, "")  # nothing before a refresh

    assert zones.refresh() == 3
    assert zones.loaded

    assert (zones.zone("sto_kashgar"), zones.zone("sto_3")) == ("Asia/Urumqi", "Asia/Shanghai")
    # A store stored without a zone is answered as Asia/Shanghai; one fulfilment does not list is
    # unknown, and its members get the default.
    assert (zones.zone("sto_1"), zones.zone("sto_unknown")) == ("Asia/Shanghai", "")
    assert zones.zones() == {"Asia/Urumqi", "Asia/Shanghai"}


def test_a_refresh_that_fails_keeps_the_zones_read_before(fulfilment: Settings) -> None:
    zones = zones_from(fulfilment)
    zones.refresh()
    fulfilment.service("fulfilment").target = f"127.0.0.1:{free_port()}"
    unreachable = zones_from(fulfilment)

    with pytest.raises(Unavailable):
        unreachable.refresh()

    assert (unreachable.loaded, unreachable.zone("sto_kashgar")) == (False, "")
    assert zones.zone("sto_kashgar") == "Asia/Urumqi"
