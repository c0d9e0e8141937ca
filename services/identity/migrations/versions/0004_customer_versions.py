"""Each customer's version, told to orders with their state

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
    # Customers stored before start at 0: orders has heard nothing of them, and learns them from
    # identity's answers until their first change is told.
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("version", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("version")
