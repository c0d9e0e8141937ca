"""Alembic environment for orders's tables."""

from alembic import context

from quanyu.db import run_migrations_online
from services.orders.storage import metadata

run_migrations_online(context, metadata)
