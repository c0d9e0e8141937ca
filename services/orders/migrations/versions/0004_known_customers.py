"""What orders knows of customers and members without asking identity and membership

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Empty at first: each customer is learnt from identity's and membership's answers to their
    # next order, or from the next change they tell of.
    op.create_table(
        "known_customers",
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("merged_into", sa.String(length=64), nullable=False),
        sa.Column("withheld", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_known_customers")),
    )
    op.create_table(
        "known_accounts",
        sa.Column("channel", sa.String(length=48), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("channel", "external_id", "customer_id", name=op.f("pk_known_accounts")),
    )
    op.create_index("ix_known_accounts_customer_id", "known_accounts", ["customer_id"])
    op.create_table(
        "known_phones",
        sa.Column("phone_hash", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("phone_hash", "customer_id", name=op.f("pk_known_phones")),
    )
    op.create_index("ix_known_phones_customer_id", "known_phones", ["customer_id"])
    op.create_table(
        "known_members",
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("root_member_id", sa.String(length=64), nullable=False),
        sa.Column("home_store_id", sa.String(length=64), nullable=False),
        sa.Column("guide_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_known_members")),
    )
    op.create_index(op.f("ix_known_members_customer_id"), "known_members", ["customer_id"])


def downgrade() -> None:
    for table in ("known_members", "known_phones", "known_accounts", "known_customers"):
        op.drop_table(table)
