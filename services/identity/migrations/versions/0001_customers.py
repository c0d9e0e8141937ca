"""Customers, their phones (keyed hashes only) and their channel accounts.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from quanyu.db import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(64), nullable=False),
        sa.Column("phone_masked", sa.String(32), nullable=False),
        sa.Column("merged_into", sa.String(64), nullable=True),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merged_into"], ["customers.customer_id"], name="fk_customers_merged_into_customers"
        ),
        sa.PrimaryKeyConstraint("customer_id", name="pk_customers"),
    )
    op.create_table(
        "customer_phones",
        sa.Column("phone_hash", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("phone_masked", sa.String(32), nullable=False),
        sa.Column("link_time", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.customer_id"], name="fk_customer_phones_customer_id_customers"
        ),
        sa.PrimaryKeyConstraint("phone_hash", name="pk_customer_phones"),
    )
    op.create_index("ix_customer_phones_customer_id", "customer_phones", ["customer_id"])
    op.create_table(
        "channel_accounts",
        sa.Column("channel", sa.String(48), nullable=False),
        sa.Column("external_id", sa.String(128), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("link_time", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.customer_id"], name="fk_channel_accounts_customer_id_customers"
        ),
        sa.PrimaryKeyConstraint("channel", "external_id", name="pk_channel_accounts"),
    )
    op.create_index("ix_channel_accounts_customer_id", "channel_accounts", ["customer_id"])


def downgrade() -> None:
    op.drop_table("channel_accounts")
    op.drop_table("customer_phones")
    op.drop_table("customers")
