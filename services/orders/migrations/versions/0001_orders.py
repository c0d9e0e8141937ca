"""Orders, their lines, rejections, status history and outbox

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
        "order_lines",
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_price_cents", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", "line_no", name=op.f("pk_order_lines")),
    )
    op.create_table(
        "order_rejections",
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=False),
        sa.Column("reject_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", "store_id", name=op.f("pk_order_rejections")),
    )
    op.create_table(
        "orders",
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("request_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=48), nullable=False),
        sa.Column("fulfilment_type", sa.String(length=16), nullable=False),
        sa.Column("subtotal_cents", sa.BigInteger(), nullable=False),
        sa.Column("discount_cents", sa.BigInteger(), nullable=False),
        sa.Column("points_redeemed", sa.BigInteger(), nullable=False),
        sa.Column("total_cents", sa.BigInteger(), nullable=False),
        sa.Column("delivery_latitude", sa.Float(), nullable=True),
        sa.Column("delivery_longitude", sa.Float(), nullable=True),
        sa.Column("delivery_system", sa.Integer(), nullable=True),
        sa.Column("delivery_address", sa.String(length=512), nullable=False),
        sa.Column("origin_store_id", sa.String(length=64), nullable=False),
        sa.Column("fulfilling_store_id", sa.String(length=64), nullable=False),
        sa.Column("guide_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("status_reason", sa.String(length=256), nullable=False),
        sa.Column("coupon_code", sa.String(length=32), nullable=False),
        sa.Column("points_earned", sa.BigInteger(), nullable=False),
        sa.Column("origin_open", sa.Boolean(), nullable=True),
        sa.Column("accept_deadline", UtcDateTime(), nullable=True),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
        sa.Column("complete_time", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_orders")),
        sa.UniqueConstraint("request_id", name=op.f("uq_orders_request_id")),
    )
    op.create_index("ix_orders_create_time", "orders", ["create_time"], unique=False)
    op.create_index(op.f("ix_orders_customer_id"), "orders", ["customer_id"], unique=False)
    op.create_index(
        "ix_orders_fulfilling_store_id_status_create_time",
        "orders",
        ["fulfilling_store_id", "status", "create_time"],
        unique=False,
    )
    op.create_index("ix_orders_guide_id_create_time", "orders", ["guide_id", "create_time"], unique=False)
    op.create_index(
        "ix_orders_origin_store_id_create_time", "orders", ["origin_store_id", "create_time"], unique=False
    )
    op.create_index("ix_orders_status_accept_deadline", "orders", ["status", "accept_deadline"], unique=False)
    op.create_table(
        "outbox",
        sa.Column(
            "effect_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_time", UtcDateTime(), nullable=False),
        sa.Column("lease_until", UtcDateTime(), nullable=True),
        sa.Column("delivered_time", UtcDateTime(), nullable=True),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("effect_id", name=op.f("pk_outbox")),
    )
    op.create_index(
        "ix_outbox_pending", "outbox", ["delivered_time", "failed", "next_attempt_time"], unique=False
    )
    op.create_table(
        "status_changes",
        sa.Column(
            "change_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("from_status", sa.String(length=24), nullable=False),
        sa.Column("to_status", sa.String(length=24), nullable=False),
        sa.Column("actor", sa.String(length=160), nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("change_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("change_id", name=op.f("pk_status_changes")),
    )
    op.create_index(op.f("ix_status_changes_order_id"), "status_changes", ["order_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_status_changes_order_id"), table_name="status_changes")
    op.drop_table("status_changes")
    op.drop_index("ix_outbox_pending", table_name="outbox")
    op.drop_table("outbox")
    op.drop_index("ix_orders_status_accept_deadline", table_name="orders")
    op.drop_index("ix_orders_origin_store_id_create_time", table_name="orders")
    op.drop_index("ix_orders_guide_id_create_time", table_name="orders")
    op.drop_index("ix_orders_fulfilling_store_id_status_create_time", table_name="orders")
    op.drop_index(op.f("ix_orders_customer_id"), table_name="orders")
    op.drop_index("ix_orders_create_time", table_name="orders")
    op.drop_table("orders")
    op.drop_table("order_rejections")
    op.drop_table("order_lines")
