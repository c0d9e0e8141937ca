"""Revoked tokens and the audit trail of privileged actions

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from quanyu.db import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "token_revocations",
        sa.Column("revocation_id", _ID, autoincrement=True, nullable=False),
        sa.Column("token_id", sa.String(length=128), nullable=False),
        sa.Column("subject", sa.String(length=128), nullable=False),
        sa.Column("issued_before", UtcDateTime(), nullable=False),
        sa.Column("revoke_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("revocation_id", name=op.f("pk_token_revocations")),
    )
    op.create_index(
        op.f("ix_token_revocations_revoke_time"), "token_revocations", ["revoke_time"], unique=False
    )
    op.create_table(
        "audit_records",
        sa.Column("record_id", _ID, autoincrement=True, nullable=False),
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
    op.drop_index(op.f("ix_token_revocations_revoke_time"), table_name="token_revocations")
    op.drop_table("token_revocations")
