"""The audit trail of the privileged actions this service serves (see quanyu.audit)

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from quanyu.db import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_records",
        sa.Column(
            "record_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("time", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=160), nullable=False),
        sa.Column("action", sa.String(length=48), nullable=False),
        sa.Column("object", sa.String(length=200), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("record_id", name=op.f("pk_audit_records")),
    )


def downgrade() -> None:
    op.drop_table("audit_records")
