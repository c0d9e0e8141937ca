"""Fulfilment's tables. The database is the arbiter of stock: CHECK constraints keep on-hand and
reserved sane, and every reservation is a conditional UPDATE (see reservations), so two replicas
can never reserve the same unit."""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Column, Float, Index, Integer, String, Table, Text

from quanyu.audit import audit_table
from quanyu.db import UtcDateTime, new_metadata, timestamps

metadata = new_metadata()

# Privileged actions served (see quanyu.audit).
audit_records = audit_table(metadata)

stores = Table(
    "stores",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("latitude", Float, nullable=False),
    Column("longitude", Float, nullable=False),
    Column("status", String(16), nullable=False),
    Column("delivery_radius_m", Float, nullable=False),
    Column("delivery_zone_geojson", Text, nullable=False),
    Column("opening_hours", Text, nullable=False),  # JSON [[weekday, "HH:MM", "HH:MM"], ...]
    Column("timezone", String(64), nullable=False),
    Column("max_active_orders", Integer, nullable=False),
    Column("priority", Integer, nullable=False),
    # Orders holding an active reservation here; the capacity check is a conditional update.
    Column("open_orders", Integer, nullable=False, server_default="0"),
    # Taken from store_revision in the writing transaction, so replicas refreshing their
    # catalogue read changes in commit order: "everything after revision N".
    Column("revision", BigInteger, nullable=False, index=True),
    *timestamps(),
    CheckConstraint("open_orders >= 0", name="open_orders_not_negative"),
)

store_revision = Table(
    "store_revision",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("revision", BigInteger, nullable=False),
)

stock = Table(
    "stock",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("sku", String(64), primary_key=True),
    Column("on_hand", BigInteger, nullable=False),
    Column("reserved", BigInteger, nullable=False, server_default="0"),
    Column("update_time", UtcDateTime(), nullable=False),
    CheckConstraint("on_hand >= 0", name="on_hand_not_negative"),
    CheckConstraint("reserved >= 0", name="reserved_not_negative"),
    CheckConstraint("reserved <= on_hand", name="reserved_within_on_hand"),
)

# One row per order that was ever assigned: its key serialises concurrent calls for one order.
assignments = Table(
    "assignments",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("state", String(16), nullable=False),  # ACTIVE, RELEASED, COMMITTED
    Column("fulfilment_type", String(16), nullable=False),
    *timestamps(),
)

reservations = Table(
    "reservations",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("store_id", String(64), primary_key=True),
    Column("sku", String(64), primary_key=True),
    Column("quantity", BigInteger, nullable=False),
    Column("unit_price_cents", BigInteger, nullable=False),
    Column("line_no", Integer, nullable=False),
    Column("distance_m", Float, nullable=False),
    Column("state", String(16), nullable=False),  # ACTIVE, RELEASED, COMMITTED
    Column("update_time", UtcDateTime(), nullable=False),
    Index("ix_reservations_store_id_state", "store_id", "state"),
    CheckConstraint("quantity > 0", name="quantity_positive"),
)

decisions = Table(
    "assignment_decisions",
    metadata,
    Column("decision_id", Integer, primary_key=True, autoincrement=True),
    Column("order_id", String(64), nullable=False, index=True),
    Column("decide_time", UtcDateTime(), nullable=False),
    Column("fulfilment_type", String(16), nullable=False),
    Column("latitude", Float, nullable=True),
    Column("longitude", Float, nullable=True),
    Column("outcome_reason", String(32), nullable=False),  # "" when assigned
    Column("detail", Text, nullable=False),  # JSON: assignments and verdicts
)
