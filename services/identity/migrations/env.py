"""Alembic environment for identity's tables."""

from alembic import context

from quanyu.db import run_migrations_online
from services.identity.storage import metadata

run_migrations_online(context, metadata)
