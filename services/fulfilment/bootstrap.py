"""Fulfilment's composition root: settings in, a runnable service out."""

from __future__ import annotations

from pathlib import Path

from quanyu.audit import AuditLog
from quanyu.config import Settings
from quanyu.db import Database, migrate_url
from quanyu.metrics import gauge_from
from quanyu.paging import PageTokens
from quanyu.server import ServiceApp
from quanyu.unit_of_work import Clock, SqlUnitOfWork, system_clock
from services.fulfilment.config import FulfilmentSettings
from services.fulfilment.grpc_servicer import FulfilmentServicer
from services.fulfilment.handlers import FulfilmentService
from services.fulfilment.storage import CachedCatalogue, SqlStores
from services.fulfilment.storage.tables import audit_records

NAME = "fulfilment"
MIGRATIONS = Path(__file__).parent / "migrations"


def migrate(settings: Settings) -> None:
    migrate_url(settings.database_url(NAME), MIGRATIONS)


# Under contention for the same stock an assignment decides again; give it a few more goes than
# the other use cases need before answering ABORTED.
ATTEMPTS = 6


def build_app(
    settings: Settings, own: FulfilmentSettings | None = None, *, clock: Clock = system_clock
) -> ServiceApp:
    own = own or FulfilmentSettings()
    database = Database(settings.database_url(NAME), pool_size=settings.database_pool_size)
    catalogue = CachedCatalogue(database, refresh_seconds=own.catalogue_refresh_seconds)
    service = FulfilmentService(
        SqlUnitOfWork(database, SqlStores, attempts=ATTEMPTS),
        catalogue,
        PageTokens(settings.signing_key_bytes(), purpose=NAME),
        clock,
        pickup_radius_m=own.pickup_radius_m,
    )

    gauge_from("quanyu_reservations_open", "Orders holding reserved stock", service.open_reservations)
    gauge_from(
        "quanyu_reservations_oldest_seconds",
        "How long the longest-held open reservation has held its stock",
        service.oldest_reservation_seconds,
    )

    return ServiceApp.serving(
        NAME,
        FulfilmentServicer(service),
        tasks=[catalogue],
        on_stop=[database.dispose],
        audit=AuditLog(database, audit_records),
    )
