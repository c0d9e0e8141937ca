"""Membership's composition root: settings in, a runnable service out.

Its RPCs are not served yet: the server answers health and reflection, and UNIMPLEMENTED for
the rest of its contract.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from quanyu.config import Settings
from quanyu.db import migrate_url
from quanyu.server import ServiceApp

NAME = "membership"
MIGRATIONS = Path(__file__).parent / "migrations"


def migrate(settings: Settings) -> None:
    migrate_url(settings.database_url(NAME), MIGRATIONS)


def build_app(settings: Settings) -> ServiceApp:
    def register(server: grpc.Server) -> None:
        return None

    return ServiceApp(name=NAME, service_names=[], register=register, policy={})
