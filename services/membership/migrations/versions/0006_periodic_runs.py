"""When points expiry and tier evaluation last ran, so that they run once per interval across all
replicas, and right after a start when overdue

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from quanyu.db import UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "periodic_runs",
        sa.Column("job", sa.String(length=64), nullable=False),
        sa.Column("last_run_time", UtcDateTime(), nullable=False),
        sa.Column("last_runner", sa.String(length=255), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("job", name=op.f("pk_periodic_runs")),
    )


def downgrade() -> None:
    op.drop_table("periodic_runs")
