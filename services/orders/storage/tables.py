"""Orders' tables: orders and their lines, the stores that rejected them, every status change,
and the outbox of effects on the other services."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Float, Index, Integer, String, Table, UniqueConstraint

from quanyu.db import SEQUENCE, UtcDateTime, new_metadata, timestamps
from quanyu.outbox import outbox_table

metadata = new_metadata()


orders = Table(
    "orders",
    metadata,
    Column("order_id", String(64), primary_key=True),
    # The caller's idempotency key, in the caller's own namespace (quanyu.auth.Principal.owner:
    # empty for the platform's callers); kept as long as the order, far beyond the 7 days promised.
    Column("request_owner", String(80), nullable=False, server_default=""),
    Column("request_id", String(128), nullable=False),
    # A keyed hash (HMAC) of the request: the payload holds the customer's phone.
    Column("request_fingerprint", String(64), nullable=False),
    Column("customer_id", String(64), nullable=False, index=True),
    Column("member_id", String(64), nullable=False),
    Column("channel", String(48), nullable=False),
    Column("fulfilment_type", String(16), nullable=False),
    Column("subtotal_cents", BigInteger, nullable=False),
    Column("discount_cents", BigInteger, nullable=False),
    Column("points_redeemed", BigInteger, nullable=False),
    Column("total_cents", BigInteger, nullable=False),
    Column("delivery_latitude", Float, nullable=True),
    Column("delivery_longitude", Float, nullable=True),
    Column("delivery_system", Integer, nullable=True),
    Column("delivery_address", String(512), nullable=False),
    # Where the customer belongs or ordered (ARCHITECTURE.md, 8): what the reports count by.
    Column("origin_store_id", String(64), nullable=False),
    # The store the customer chose for pickup; empty for other kinds.
    Column("pickup_store_id", String(64), nullable=False, server_default=""),
    Column("fulfilling_store_id", String(64), nullable=False),
    Column("guide_id", String(64), nullable=False),
    Column("status", String(24), nullable=False),
    Column("status_reason", String(256), nullable=False),
    Column("coupon_code", String(32), nullable=False),
    Column("points_earned", BigInteger, nullable=False),
    # Whether the origin store was open when the order was placed; None until fulfilment said.
    Column("origin_open", Boolean, nullable=True),
    Column("accept_deadline", UtcDateTime(), nullable=True),
    *timestamps(),
    Column("complete_time", UtcDateTime(), nullable=True),
    UniqueConstraint("request_owner", "request_id"),
    # A store's queue: its orders in a status, newest first.
    Index("ix_orders_fulfilling_store_id_status_create_time", "fulfilling_store_id", "status", "create_time"),
    Index("ix_orders_origin_store_id_create_time", "origin_store_id", "create_time"),
    Index("ix_orders_guide_id_create_time", "guide_id", "create_time"),
    Index("ix_orders_status_accept_deadline", "status", "accept_deadline"),
    Index("ix_orders_create_time", "create_time"),
)

order_lines = Table(
    "order_lines",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("sku", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price_cents", BigInteger, nullable=False),
)

order_rejections = Table(
    "order_rejections",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("store_id", String(64), primary_key=True),
    Column("reason", String(256), nullable=False),
    Column("reject_time", UtcDateTime(), nullable=False),
)

status_changes = Table(
    "status_changes",
    metadata,
    Column("change_id", SEQUENCE, primary_key=True, autoincrement=True),
    Column("order_id", String(64), nullable=False, index=True),
    Column("from_status", String(24), nullable=False),
    Column("to_status", String(24), nullable=False),
    # Who made the change: the caller's name (store:SH-001/till-3), at most 8 + 64 + 1 + 128.
    Column("actor", String(256), nullable=False),
    Column("reason", String(256), nullable=False),
    Column("store_id", String(64), nullable=False),
    Column("change_time", UtcDateTime(), nullable=False),
)

outbox = outbox_table(metadata)


# What orders knows of customers and members without asking identity and membership (see
# services.orders.domain.known): each customer's and member's newest state told, under its version
# (0: learnt from an answer, superseded by any state told).
known_customers = Table(
    "known_customers",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("version", BigInteger, nullable=False),
    # The customer this one was merged into; empty while it stands.
    Column("merged_into", String(64), nullable=False),
    # Holds more accounts or phones than identity tells: always asked of identity.
    Column("withheld", Boolean, nullable=False),
)

# A customer's accounts as last told. While a merge is half told, an account may be listed under
# both customers: orders then asks identity.
known_accounts = Table(
    "known_accounts",
    metadata,
    Column("channel", String(48), primary_key=True),
    Column("external_id", String(128), primary_key=True),
    Column("customer_id", String(64), primary_key=True),
    Index("ix_known_accounts_customer_id", "customer_id"),
)

# A customer's phones as last told, by the keyed hash identity finds them by.
known_phones = Table(
    "known_phones",
    metadata,
    Column("phone_hash", String(64), primary_key=True),
    Column("customer_id", String(64), primary_key=True),
    Index("ix_known_phones_customer_id", "customer_id"),
)

known_members = Table(
    "known_members",
    metadata,
    Column("member_id", String(64), primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("customer_id", String(64), nullable=False, index=True),
    # The member this one is part of now: its own id while it stands.
    Column("root_member_id", String(64), nullable=False),
    Column("home_store_id", String(64), nullable=False),
    Column("guide_id", String(64), nullable=False),
)
