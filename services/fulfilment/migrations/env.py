"""Alembic environment for fulfilment's tables."""

from alembic import context

from quanyu.db import run_migrations_online
from services.fulfilment.storage import metadata

run_migrations_online(context, metadata)
