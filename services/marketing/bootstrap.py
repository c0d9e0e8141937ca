"""Marketing's composition root: settings in, a runnable service out."""

from __future__ import annotations

from pathlib import Path

from quanyu.clients import service_channel
from quanyu.config import Settings
from quanyu.db import Database, migrate_url
from quanyu.membership.v1 import membership_pb2_grpc
from quanyu.outbox import OutboxRelay, export_metrics
from quanyu.paging import PageTokens
from quanyu.server import ServiceApp
from quanyu.unit_of_work import Clock, SqlUnitOfWork, system_clock
from services.marketing.config import MarketingSettings
from services.marketing.downstream import LANES, batched, deliverers
from services.marketing.grpc_servicer import MarketingServicer
from services.marketing.handlers import (
    CampaignCases,
    InsightCases,
    MessageCases,
    ResultCases,
    TriggerCases,
)
from services.marketing.handlers.service import MarketingService
from services.marketing.ports import Stores
from services.marketing.storage import SqlStores
from services.marketing.storage.tables import outbox

NAME = "marketing"
MIGRATIONS = Path(__file__).parent / "migrations"


def migrate(settings: Settings) -> None:
    migrate_url(settings.database_url(NAME), MIGRATIONS)


def unit_of_work(database: Database) -> SqlUnitOfWork[Stores]:
    return SqlUnitOfWork(database, SqlStores)


def build_service(
    settings: Settings, own: MarketingSettings | None = None, *, clock: Clock = system_clock
) -> tuple[MarketingService, Database]:
    own = own or MarketingSettings()
    database = Database(settings.database_url(NAME), pool_size=settings.database_pool_size)
    uow = unit_of_work(database)
    service = MarketingService(
        CampaignCases(uow, own.known_tiers(), clock=clock),
        TriggerCases(uow, clock=clock, policy=own.contact_policy()),
        MessageCases(uow, clock=clock, lease=own.ack_deadline),
        ResultCases(uow, conversion_days=own.conversion_window_days),
        InsightCases(uow, clock=clock),
        PageTokens(settings.signing_key_bytes(), purpose=NAME),
        close=database.dispose,
    )
    return service, database


def build_app(
    settings: Settings, own: MarketingSettings | None = None, *, clock: Clock = system_clock
) -> ServiceApp:
    service, database = build_service(settings, own, clock=clock)
    membership = membership_pb2_grpc.MembershipServiceStub(
        service_channel(settings, "membership", caller=NAME)
    )
    fill_codes = service.messages.fill_coupon_codes
    relay = OutboxRelay(
        database,
        outbox,
        deliverers(membership, fill_codes),
        lanes=LANES,
        batched=batched(membership, fill_codes),
    )
    # Grants leave their effects in the outbox; the relay takes them as soon as they are committed.
    service.wake = relay.wake
    export_metrics(relay)

    return ServiceApp.serving(NAME, MarketingServicer(service), tasks=[relay], on_stop=[service.close])
