"""Membership's composition root: settings in, a runnable service out."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from quanyu.audit import AuditLog
from quanyu.clients import service_channel
from quanyu.config import Settings
from quanyu.db import Database, migrate_url
from quanyu.identity.v1 import identity_pb2_grpc
from quanyu.marketing.v1 import marketing_pb2_grpc
from quanyu.orders.v1 import orders_pb2_grpc
from quanyu.outbox import OutboxRelay, export_metrics
from quanyu.paging import PageTokens
from quanyu.server import ServiceApp
from quanyu.tasks import Periodic, RunSchedule
from quanyu.unit_of_work import Clock, SqlUnitOfWork, system_clock
from services.membership.config import MembershipSettings
from services.membership.downstream import CustomerChannels
from services.membership.effects import LANES, deliverers
from services.membership.grpc_servicer import MembershipServicer
from services.membership.handlers import MembershipService
from services.membership.ports import Stores
from services.membership.storage import SqlStores, outbox, periodic_runs
from services.membership.storage.tables import audit_records

NAME = "membership"
MIGRATIONS = Path(__file__).parent / "migrations"


def migrate(settings: Settings) -> None:
    migrate_url(settings.database_url(NAME), MIGRATIONS)


def unit_of_work(database: Database) -> SqlUnitOfWork[Stores]:
    return SqlUnitOfWork(database, SqlStores)


def build_service(
    settings: Settings,
    own: MembershipSettings | None = None,
    *,
    clock: Clock = system_clock,
    database: Database | None = None,
) -> MembershipService:
    own = own or MembershipSettings()
    database = database or Database(settings.database_url(NAME), pool_size=settings.database_pool_size)
    identity = identity_pb2_grpc.IdentityServiceStub(service_channel(settings, "identity", caller=NAME))
    return MembershipService(
        unit_of_work(database),
        own.programme(),
        PageTokens(settings.signing_key_bytes(), purpose=NAME),
        CustomerChannels(identity),
        clock=clock,
        member_code_ttl=timedelta(seconds=own.member_code_ttl_seconds),
    )


def build_app(
    settings: Settings, own: MembershipSettings | None = None, *, clock: Clock = system_clock
) -> ServiceApp:
    own = own or MembershipSettings()
    database = Database(settings.database_url(NAME), pool_size=settings.database_pool_size)
    service = build_service(settings, own, clock=clock, database=database)
    marketing = marketing_pb2_grpc.MarketingServiceStub(service_channel(settings, "marketing", caller=NAME))
    orders = orders_pb2_grpc.OrderServiceStub(service_channel(settings, "orders", caller=NAME))
    single, batched = deliverers(marketing, orders)
    relay = OutboxRelay(database, outbox, single, lanes=LANES, batched=batched)
    service.on_effects = relay.wake
    export_metrics(relay)
    # Once per interval across the replicas, and at once after a start when overdue.
    schedule = RunSchedule(database, periodic_runs)

    return ServiceApp.serving(
        NAME,
        MembershipServicer(service),
        tasks=[
            relay,
            Periodic(
                "points-expiry", service.expire, own.expiry_interval_seconds, schedule=schedule, clock=clock
            ),
            Periodic(
                "tier-evaluation",
                service.evaluate_tiers,
                own.tier_evaluation_interval_seconds,
                schedule=schedule,
                clock=clock,
            ),
        ],
        on_stop=[service.close],
        audit=AuditLog(database, audit_records),
    )
