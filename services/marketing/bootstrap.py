"""Marketing's composition root: settings in, a runnable service out."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.engine import Connection

from quanyu.audit import AuditLog
from quanyu.clients import service_channel
from quanyu.config import Settings
from quanyu.db import Database, migrate_url
from quanyu.fulfilment.v1 import fulfilment_pb2_grpc
from quanyu.membership.v1 import membership_pb2_grpc
from quanyu.metrics import labelled_gauge_from
from quanyu.outbox import OutboxRelay, export_metrics
from quanyu.paging import PageTokens
from quanyu.server import BackgroundTask, ServiceApp
from quanyu.tasks import Periodic
from quanyu.unit_of_work import Clock, SqlUnitOfWork, system_clock
from services.marketing.config import MarketingSettings
from services.marketing.downstream import LANES, StoreZones, batched, deliverers
from services.marketing.grpc_servicer import MarketingServicer
from services.marketing.handlers import (
    CampaignCases,
    InsightCases,
    MessageCases,
    ResultCases,
    RunCases,
    TriggerCases,
)
from services.marketing.handlers.service import MarketingService
from services.marketing.ports import IssuedCoupon, Stores
from services.marketing.storage import SqlStores
from services.marketing.storage.tables import audit_records, outbox

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


def outbox_relay(
    database: Database, membership: membership_pb2_grpc.MembershipServiceStub, messages: MessageCases
) -> OutboxRelay:
    """The relay of marketing's effects to membership: in batches, each batch's coupon codes kept
    in the transaction that marks it delivered."""

    def keep_issued(connection: Connection, issued: Sequence[IssuedCoupon]) -> int:
        return messages.keep_coupons(SqlStores(connection), issued)

    return OutboxRelay(
        database,
        outbox,
        deliverers(membership, messages.coupons_issued),
        lanes=LANES,
        batched=batched(membership, keep_issued),
    )


def build_app(
    settings: Settings, own: MarketingSettings | None = None, *, clock: Clock = system_clock
) -> ServiceApp:
    own = own or MarketingSettings()
    service, database = build_service(settings, own, clock=clock)
    membership = membership_pb2_grpc.MembershipServiceStub(
        service_channel(settings, "membership", caller=NAME)
    )
    relay = outbox_relay(database, membership, service.messages)
    # Grants leave their effects in the outbox; the relay takes them as soon as they are committed.
    service.wake = relay.wake
    export_metrics(relay)
    labelled_gauge_from(
        "quanyu_marketing_messages_due",
        "Messages due and not acknowledged by their channel's backend",
        "channel",
        lambda: {channel: due for channel, (due, _) in service.messages.backlog().items()},
    )
    labelled_gauge_from(
        "quanyu_marketing_message_backlog_seconds",
        "How long the oldest due message of the channel has waited to be acknowledged",
        "channel",
        lambda: {channel: waited for channel, (_, waited) in service.messages.backlog().items()},
    )

    zones = StoreZones(
        fulfilment_pb2_grpc.FulfilmentServiceStub(service_channel(settings, "fulfilment", caller=NAME))
    )
    runs = RunCases(
        unit_of_work(database),
        clock=clock,
        runner=f"{socket.gethostname()}:{os.getpid()}",
        store_zone=zones.zone,
        store_zones=zones.zones,
        policy=own.contact_policy(),
        page_size=own.run_page_size,
        lease=own.run_lease,
        wake=relay.wake,
    )

    def scheduled_pass() -> int:
        # Not before the stores' zones are known: a member whose zone is their home store's would
        # otherwise be taken for Asia/Shanghai and reached at Shanghai's hour. Fulfilment not
        # answering yet fails the pass, which the next period tries again.
        if not zones.loaded:
            zones.refresh()
        return runs.run_due()

    tasks: list[BackgroundTask] = [
        relay,
        Periodic("store-zones", zones.refresh, own.store_zone_refresh_seconds),
        Periodic("scheduled-runs", scheduled_pass, own.run_interval_seconds),
    ]
    return ServiceApp.serving(
        NAME,
        MarketingServicer(service),
        tasks=tasks,
        on_stop=[service.close],
        audit=AuditLog(database, audit_records),
    )
