"""The coupons issued for grants, kept by code, so results count those issued and redeemed

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from quanyu.db import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "issued_coupons",
        sa.Column("code", sa.String(length=32), primary_key=True),
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("grant_key", sa.String(length=68), nullable=False),
        sa.Column("issue_time", UtcDateTime(), nullable=False),
        sa.Column("redeemed_order_id", sa.String(length=64), server_default="", nullable=False),
    )
    op.create_index("ix_issued_coupons_campaign_id", "issued_coupons", ["campaign_id"])


def downgrade() -> None:
    op.drop_index("ix_issued_coupons_campaign_id", table_name="issued_coupons")
    op.drop_table("issued_coupons")
