"""Messages that name the code of a coupon their grant issues wait for membership to issue it

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
    # Messages queued before hold nothing back: they await no coupon.
    op.add_column(
        "messages", sa.Column("awaits_coupon", sa.String(length=128), server_default="", nullable=False)
    )


def downgrade() -> None:
    op.drop_column("messages", "awaits_coupon")
