"""Identity's composition root: settings in, a runnable service out."""

from __future__ import annotations

from pathlib import Path

from quanyu.audit import AuditLog
from quanyu.auth import TokenCodec
from quanyu.clients import service_channel, store_exists
from quanyu.config import Settings
from quanyu.db import Database, migrate_url
from quanyu.events import to_marketing, to_orders
from quanyu.fulfilment.v1 import fulfilment_pb2_grpc
from quanyu.marketing.v1 import marketing_pb2_grpc
from quanyu.membership.v1 import membership_pb2_grpc
from quanyu.orders.v1 import orders_pb2_grpc
from quanyu.outbox import OutboxRelay, export_metrics
from quanyu.quota import quota_from
from quanyu.server import ServiceApp
from quanyu.unit_of_work import Clock, SqlUnitOfWork, system_clock
from services.identity.config import IdentitySettings
from services.identity.domain import MARKETING_EVENT, ORDERS_EVENT, CustomersMerged, PhoneHasher
from services.identity.effects import merge_members
from services.identity.grpc_servicer import IdentityServicer
from services.identity.handlers import IdentityService
from services.identity.storage import SqlStores, audit_records, outbox

NAME = "identity"
MIGRATIONS = Path(__file__).parent / "migrations"


def migrate(settings: Settings) -> None:
    migrate_url(settings.database_url(NAME), MIGRATIONS)


def build_app(
    settings: Settings, own: IdentitySettings | None = None, *, clock: Clock = system_clock
) -> ServiceApp:
    own = own or IdentitySettings()
    database = Database(settings.database_url(NAME), pool_size=settings.database_pool_size)
    membership = membership_pb2_grpc.MembershipServiceStub(
        service_channel(settings, "membership", caller=NAME)
    )
    fulfilment = fulfilment_pb2_grpc.FulfilmentServiceStub(
        service_channel(settings, "fulfilment", caller=NAME)
    )
    marketing = marketing_pb2_grpc.MarketingServiceStub(service_channel(settings, "marketing", caller=NAME))
    orders = orders_pb2_grpc.OrderServiceStub(service_channel(settings, "orders", caller=NAME))
    one_event, events = to_marketing(marketing)
    one_state, states = to_orders(orders)
    relay = OutboxRelay(
        database,
        outbox,
        {
            CustomersMerged.KIND: merge_members(membership),
            MARKETING_EVENT: one_event,
            ORDERS_EVENT: one_state,
        },
        batched={MARKETING_EVENT: events, ORDERS_EVENT: states},
        # Marketing down or slow never holds up the merges membership and orders must hear of.
        lanes={
            "membership": (CustomersMerged.KIND,),
            "marketing": (MARKETING_EVENT,),
            "orders": (ORDERS_EVENT,),
        },
        poll_seconds=own.outbox_poll_seconds,
    )
    service = IdentityService(
        SqlUnitOfWork(database, SqlStores),
        PhoneHasher(settings.phone_hash_key_bytes()),
        TokenCodec.local(settings.issuer_key_dir(), lifetimes=settings.lifetimes()),
        clock,
        on_effects=relay.wake,
        phone_lookups=quota_from(
            "phone look-ups", settings.phone_lookup_quota, reason="PHONE_LOOKUP_QUOTA_EXCEEDED"
        ),
        store_exists=lambda store_id: store_exists(fulfilment, store_id),
    )

    export_metrics(relay)

    # Identity is where keys and revocations live: it verifies its callers with them directly.
    return ServiceApp.serving(
        NAME,
        IdentityServicer(service),
        tasks=[relay],
        on_stop=[database.dispose],
        token_trust=service.token_trust,
        # Identity writes its records with the actions themselves (tokens, merges).
        audit=AuditLog(database, audit_records),
    )
