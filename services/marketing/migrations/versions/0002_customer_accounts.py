"""Customers' accounts per channel, as identity reports them linked

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from quanyu.db import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "customer_accounts",
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("account", sa.String(length=128), nullable=False),
        sa.Column("display_name", sa.String(length=128), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "channel", name=op.f("pk_customer_accounts")),
    )


def downgrade() -> None:
    op.drop_table("customer_accounts")
