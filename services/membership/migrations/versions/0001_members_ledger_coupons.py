"""Members, tags, the points ledger and its lots, coupons and merges

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
        "coupons",
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("discount_cents", sa.BigInteger(), nullable=False),
        sa.Column("min_spend_cents", sa.BigInteger(), nullable=False),
        sa.Column("expire_time", UtcDateTime(), nullable=False),
        sa.Column("redeemed_order_id", sa.String(length=64), nullable=True),
        sa.Column("redeemed_store_id", sa.String(length=64), nullable=False),
        sa.Column("redeemed_time", UtcDateTime(), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("request_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.CheckConstraint("discount_cents > 0", name=op.f("ck_coupons_discount_positive")),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_coupons")),
        sa.UniqueConstraint("request_id", name=op.f("uq_coupons_request_id")),
    )
    op.create_index(op.f("ix_coupons_member_id"), "coupons", ["member_id"], unique=False)
    op.create_table(
        "ledger_entries",
        sa.Column(
            "seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("entry_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("source_id", sa.String(length=128), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("expire_time", UtcDateTime(), nullable=True),
        sa.Column("spend_cents", sa.BigInteger(), nullable=False),
        sa.Column("spend_time", UtcDateTime(), nullable=True),
        sa.Column("reverses_entry_id", sa.String(length=64), nullable=True),
        sa.Column("shortfall_points", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_ledger_entries")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_ledger_entries_entry_id")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_ledger_entries_idempotency_key")),
    )
    op.create_index("ix_ledger_entries_member_id_seq", "ledger_entries", ["member_id", "seq"], unique=False)
    op.create_index(op.f("ix_ledger_entries_source_id"), "ledger_entries", ["source_id"], unique=False)
    op.create_table(
        "lot_draws",
        sa.Column("entry_id", sa.String(length=64), nullable=False),
        sa.Column("lot_id", sa.String(length=64), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("entry_id", "lot_id", name=op.f("pk_lot_draws")),
    )
    op.create_table(
        "member_customers",
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_member_customers")),
    )
    op.create_index(op.f("ix_member_customers_member_id"), "member_customers", ["member_id"], unique=False)
    op.create_table(
        "member_merges",
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("survivor_customer_id", sa.String(length=64), nullable=False),
        sa.Column("merged_customer_id", sa.String(length=64), nullable=False),
        sa.Column("survivor_member_id", sa.String(length=64), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_member_merges")),
    )
    op.create_table(
        "member_tags",
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("member_id", "tag", name=op.f("pk_member_tags")),
    )
    op.create_index("ix_member_tags_tag_member_id", "member_tags", ["tag", "member_id"], unique=False)
    op.create_table(
        "members",
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("root_member_id", sa.String(length=64), nullable=False),
        sa.Column("tier", sa.String(length=32), nullable=False),
        sa.Column("home_store_id", sa.String(length=64), nullable=False),
        sa.Column("guide_id", sa.String(length=64), nullable=False),
        sa.Column("enrolled_channel", sa.String(length=48), nullable=False),
        sa.Column("enroll_time", UtcDateTime(), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("interest_time", UtcDateTime(), nullable=True),
        sa.Column("purchase_time", UtcDateTime(), nullable=True),
        sa.Column("loyalty_time", UtcDateTime(), nullable=True),
        sa.Column("last_purchase_time", UtcDateTime(), nullable=True),
        sa.Column("referrer_member_id", sa.String(length=64), nullable=False),
        sa.Column("points_balance", sa.BigInteger(), nullable=False),
        sa.Column("lifetime_spend_cents", sa.BigInteger(), nullable=False),
        sa.Column("merged", sa.Boolean(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
        sa.CheckConstraint("points_balance >= 0", name=op.f("ck_members_balance_not_negative")),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_members")),
    )
    op.create_index("ix_members_guide_id_member_id", "members", ["guide_id", "member_id"], unique=False)
    op.create_index(
        "ix_members_home_store_id_member_id", "members", ["home_store_id", "member_id"], unique=False
    )
    op.create_index(op.f("ix_members_root_member_id"), "members", ["root_member_id"], unique=False)
    op.create_index("ix_members_stage_member_id", "members", ["stage", "member_id"], unique=False)
    op.create_index("ix_members_tier_member_id", "members", ["tier", "member_id"], unique=False)
    op.create_table(
        "point_lots",
        sa.Column("lot_id", sa.String(length=64), nullable=False),
        sa.Column("root_member_id", sa.String(length=64), nullable=False),
        sa.Column("expire_time", UtcDateTime(), nullable=False),
        sa.Column("original", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("remaining <= original", name=op.f("ck_point_lots_remaining_within_original")),
        sa.CheckConstraint("remaining >= 0", name=op.f("ck_point_lots_remaining_not_negative")),
        sa.PrimaryKeyConstraint("lot_id", name=op.f("pk_point_lots")),
    )
    op.create_index("ix_point_lots_expire_time", "point_lots", ["expire_time"], unique=False)
    op.create_index(
        "ix_point_lots_root_member_id_expire_time",
        "point_lots",
        ["root_member_id", "expire_time"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_point_lots_root_member_id_expire_time", table_name="point_lots")
    op.drop_index("ix_point_lots_expire_time", table_name="point_lots")
    op.drop_table("point_lots")
    op.drop_index("ix_members_tier_member_id", table_name="members")
    op.drop_index("ix_members_stage_member_id", table_name="members")
    op.drop_index(op.f("ix_members_root_member_id"), table_name="members")
    op.drop_index("ix_members_home_store_id_member_id", table_name="members")
    op.drop_index("ix_members_guide_id_member_id", table_name="members")
    op.drop_table("members")
    op.drop_index("ix_member_tags_tag_member_id", table_name="member_tags")
    op.drop_table("member_tags")
    op.drop_table("member_merges")
    op.drop_index(op.f("ix_member_customers_member_id"), table_name="member_customers")
    op.drop_table("member_customers")
    op.drop_table("lot_draws")
    op.drop_index(op.f("ix_ledger_entries_source_id"), table_name="ledger_entries")
    op.drop_index("ix_ledger_entries_member_id_seq", table_name="ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_index(op.f("ix_coupons_member_id"), table_name="coupons")
    op.drop_table("coupons")
