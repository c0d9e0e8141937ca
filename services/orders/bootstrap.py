"""Orders' composition root: settings in, a runnable service out."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

from quanyu.clients import service_channel
from quanyu.config import Settings
from quanyu.db import Database, migrate_url
from quanyu.fulfilment.v1 import fulfilment_pb2_grpc
from quanyu.identity.v1 import identity_pb2_grpc
from quanyu.marketing.v1 import marketing_pb2_grpc
from quanyu.membership.v1 import membership_pb2_grpc
from quanyu.metrics import labelled_gauge_from
from quanyu.outbox import OutboxRelay, export_metrics
from quanyu.paging import PageTokens
from quanyu.quota import quota_from
from quanyu.server import ServiceApp
from quanyu.tasks import Periodic
from quanyu.unit_of_work import Clock, SqlUnitOfWork, system_clock
from services.orders.config import OrdersSettings
from services.orders.downstream import GrpcDownstream
from services.orders.effects import LANES, batched, deliverers
from services.orders.grpc_servicer import OrderServicer
from services.orders.handlers import Behaviour, OrdersService
from services.orders.storage import SqlStores, outbox

NAME = "orders"
MIGRATIONS = Path(__file__).parent / "migrations"


def migrate(settings: Settings) -> None:
    migrate_url(settings.database_url(NAME), MIGRATIONS)


def build_app(
    settings: Settings, own: OrdersSettings | None = None, clock: Clock = system_clock
) -> ServiceApp:
    own = own or OrdersSettings()
    database = Database(settings.database_url(NAME), pool_size=settings.database_pool_size)
    downstream = GrpcDownstream(
        identity_pb2_grpc.IdentityServiceStub(service_channel(settings, "identity", caller=NAME)),
        membership_pb2_grpc.MembershipServiceStub(service_channel(settings, "membership", caller=NAME)),
        fulfilment_pb2_grpc.FulfilmentServiceStub(service_channel(settings, "fulfilment", caller=NAME)),
        marketing_pb2_grpc.MarketingServiceStub(service_channel(settings, "marketing", caller=NAME)),
        assign_timeout=own.assign_timeout_seconds,
    )
    service = OrdersService(
        SqlUnitOfWork(database, SqlStores),
        downstream,
        PageTokens(settings.signing_key_bytes(), purpose=NAME),
        Behaviour(
            fingerprint_key=hashlib.sha256(settings.phone_hash_key_bytes() + b"|order-request").digest(),
            accept_window=timedelta(seconds=own.accept_window_seconds),
            limits=own.limits(),
            phone_lookups=quota_from(
                "phone look-ups", settings.phone_lookup_quota, reason="PHONE_LOOKUP_QUOTA_EXCEEDED"
            ),
            phone_key=settings.phone_hash_key_bytes(),
        ),
        clock=clock,
        close=database.dispose,
    )
    relay = OutboxRelay(
        database, outbox, deliverers(service, downstream), lanes=LANES, batched=batched(service, downstream)
    )
    service.relay = relay

    export_metrics(relay)
    labelled_gauge_from("quanyu_orders", "Orders by status", "status", service.orders_by_status)

    return ServiceApp.serving(
        NAME,
        OrderServicer(service),
        tasks=[relay, Periodic("accept-timeout", service.time_out_unaccepted, own.accept_check_seconds)],
        on_stop=[service.close],
    )
