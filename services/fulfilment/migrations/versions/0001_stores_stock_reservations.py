"""Stores, stock, reservations keyed by order, and the record of every assignment decision.

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
        "assignment_decisions",
        sa.Column("decision_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("decide_time", UtcDateTime(), nullable=False),
        sa.Column("fulfilment_type", sa.String(length=16), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=True),
        sa.Column("longitude", sa.Float(), nullable=True),
        sa.Column("outcome_reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("decision_id", name=op.f("pk_assignment_decisions")),
    )
    op.create_index(
        op.f("ix_assignment_decisions_order_id"), "assignment_decisions", ["order_id"], unique=False
    )
    op.create_table(
        "assignments",
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("fulfilment_type", sa.String(length=16), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_assignments")),
    )
    op.create_table(
        "reservations",
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("unit_price_cents", sa.BigInteger(), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("distance_m", sa.Float(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_reservations_quantity_positive")),
        sa.PrimaryKeyConstraint("order_id", "store_id", "sku", name=op.f("pk_reservations")),
    )
    op.create_index("ix_reservations_store_id_state", "reservations", ["store_id", "state"], unique=False)
    op.create_table(
        "stock",
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("on_hand", sa.BigInteger(), nullable=False),
        sa.Column("reserved", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
        sa.CheckConstraint("on_hand >= 0", name=op.f("ck_stock_on_hand_not_negative")),
        sa.CheckConstraint("reserved <= on_hand", name=op.f("ck_stock_reserved_within_on_hand")),
        sa.CheckConstraint("reserved >= 0", name=op.f("ck_stock_reserved_not_negative")),
        sa.PrimaryKeyConstraint("store_id", "sku", name=op.f("pk_stock")),
    )
    op.create_table(
        "store_revision",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_store_revision")),
    )
    op.create_table(
        "stores",
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=False),
        sa.Column("longitude", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("delivery_radius_m", sa.Float(), nullable=False),
        sa.Column("delivery_zone_geojson", sa.Text(), nullable=False),
        sa.Column("opening_hours", sa.Text(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("max_active_orders", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("open_orders", sa.Integer(), server_default="0", nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
        sa.CheckConstraint("open_orders >= 0", name=op.f("ck_stores_open_orders_not_negative")),
        sa.PrimaryKeyConstraint("store_id", name=op.f("pk_stores")),
    )
    op.create_index(op.f("ix_stores_revision"), "stores", ["revision"], unique=False)


def downgrade() -> None:
    op.drop_table("stores")
    op.drop_table("store_revision")
    op.drop_table("stock")
    op.drop_table("reservations")
    op.drop_table("assignments")
    op.drop_table("assignment_decisions")
