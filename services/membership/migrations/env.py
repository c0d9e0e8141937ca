"""Alembic environment for membership's tables."""

from alembic import context

from quanyu.db import run_migrations_online
from services.membership.storage import metadata

run_migrations_online(context, metadata)
