"""A member's birthday and the campaign that issued a coupon

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Members enrolled before birthdays were asked have none known, and coupons issued before
    # campaigns were issued by none: both are the empty string the default gives existing rows.
    with op.batch_alter_table("members") as batch:
        batch.add_column(sa.Column("birthday", sa.String(length=5), server_default="", nullable=False))
    with op.batch_alter_table("coupons") as batch:
        batch.add_column(sa.Column("campaign_id", sa.String(length=64), server_default="", nullable=False))
    # A member's coupons are listed newest first.
    op.create_index("ix_coupons_member_id_create_time", "coupons", ["member_id", "create_time"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_coupons_member_id_create_time", table_name="coupons")
    with op.batch_alter_table("coupons") as batch:
        batch.drop_column("campaign_id")
    with op.batch_alter_table("members") as batch:
        batch.drop_column("birthday")
