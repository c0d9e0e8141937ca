"""Member codes, guides, and whose source id each ledger entry is

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
        "member_codes",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("expire_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("code_hash", name=op.f("pk_member_codes")),
    )
    op.create_index(op.f("ix_member_codes_member_id"), "member_codes", ["member_id"], unique=False)
    op.create_table(
        "guides",
        sa.Column("guide_id", sa.String(length=64), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("guide_id", name=op.f("pk_guides")),
    )
    op.create_index("ix_guides_store_id_guide_id", "guides", ["store_id", "guide_id"], unique=False)
    # Every entry written so far came from the platform's own callers or from tills whose ids were
    # not yet told apart; they stay in the shared namespace, under the keys they were written with.
    with op.batch_alter_table("ledger_entries") as batch:
        batch.add_column(sa.Column("source_owner", sa.String(length=80), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_column("source_owner")
    op.drop_index("ix_guides_store_id_guide_id", table_name="guides")
    op.drop_table("guides")
    op.drop_index(op.f("ix_member_codes_member_id"), table_name="member_codes")
    op.drop_table("member_codes")
