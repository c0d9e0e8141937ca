"""Alembic environment for marketing's tables."""

from alembic import context

from quanyu.db import run_migrations_online
from services.marketing.storage import metadata

run_migrations_online(context, metadata)
