"""Membership's tables: members (with the customers that lead to them), tags, the append-only
points ledger with the lots it draws from, coupons and merges.

A member merged into another keeps its row and its ledger entries; `root_member_id` names the
survivor every lookup and balance goes to. The survivor's balance is the sum of the entries of
every member whose root it is, and equals the points remaining in its lots.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Index,
    Integer,
    String,
    Table,
)

from quanyu.audit import audit_table
from quanyu.db import SEQUENCE, UtcDateTime, new_metadata, timestamps
from quanyu.outbox import outbox_table
from quanyu.tasks import periodic_runs_table

metadata = new_metadata()

# Privileged actions served (see quanyu.audit).
audit_records = audit_table(metadata)


members = Table(
    "members",
    metadata,
    Column("member_id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("root_member_id", String(64), nullable=False, index=True),
    Column("tier", String(32), nullable=False),
    Column("home_store_id", String(64), nullable=False),
    Column("guide_id", String(64), nullable=False),
    Column("enrolled_channel", String(48), nullable=False),
    Column("enroll_time", UtcDateTime(), nullable=False),
    Column("stage", Integer, nullable=False),
    Column("interest_time", UtcDateTime(), nullable=True),
    Column("purchase_time", UtcDateTime(), nullable=True),
    Column("loyalty_time", UtcDateTime(), nullable=True),
    Column("last_purchase_time", UtcDateTime(), nullable=True),
    Column("referrer_member_id", String(64), nullable=False),
    Column("points_balance", BigInteger, nullable=False),
    Column("lifetime_spend_cents", BigInteger, nullable=False),
    Column("merged", Boolean, nullable=False),
    Column("update_time", UtcDateTime(), nullable=False),
    # "MM-DD"; empty when unknown.
    Column("birthday", String(5), nullable=False, server_default=""),
    # Grows with every change orders is told of (enrolment, merge): orders keeps the newest state
    # it has heard of, whatever order its events arrive in.
    Column("version", BigInteger, nullable=False, server_default="0"),
    CheckConstraint("points_balance >= 0", name="balance_not_negative"),
    # Segments page through members in id order within one filter, each from its own index.
    Index("ix_members_tier_member_id", "tier", "member_id"),
    Index("ix_members_stage_member_id", "stage", "member_id"),
    Index("ix_members_home_store_id_member_id", "home_store_id", "member_id"),
    Index("ix_members_guide_id_member_id", "guide_id", "member_id"),
)

# Every customer id that leads to a member: its own, and those of customers merged into it. The
# primary key is what makes enrolment "one member per customer" under concurrency.
member_customers = Table(
    "member_customers",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("member_id", String(64), nullable=False, index=True),
)

member_tags = Table(
    "member_tags",
    metadata,
    Column("member_id", String(64), primary_key=True),
    Column("tag", String(64), primary_key=True),
    Index("ix_member_tags_tag_member_id", "tag", "member_id"),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("seq", SEQUENCE, primary_key=True, autoincrement=True),
    Column("entry_id", String(64), nullable=False, unique=True),
    Column("member_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("source_id", String(128), nullable=False, index=True),
    # Whose source id it is (quanyu.auth.Principal.owner): empty for the platform's own callers,
    # `store:<id>` or `channel:<name>` for a till's or a channel's, so one caller's ids are never
    # another's.
    Column("source_owner", String(80), nullable=False, server_default=""),
    Column("store_id", String(64), nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("expire_time", UtcDateTime(), nullable=True),
    # Spend this entry adds to the member's (negative on a reversal), and the moment it counts at
    # for the rolling 12-month tier spend: a reversal counts at the earn it undoes.
    Column("spend_cents", BigInteger, nullable=False),
    Column("spend_time", UtcDateTime(), nullable=True),
    Column("reverses_entry_id", String(64), nullable=True),
    # Points a reversal could not take back because they were already spent or expired.
    Column("shortfall_points", BigInteger, nullable=False),
    # What makes a write happen once: earn:<source>, redeem:<source> (redeem@<owner>:<source> for a
    # till's or a channel's), reverse:<entry>, expire:<lot>, referral:<member>.
    Column("idempotency_key", String(300), nullable=False, unique=True),
    Index("ix_ledger_entries_member_id_seq", "member_id", "seq"),
)

point_lots = Table(
    "point_lots",
    metadata,
    Column("lot_id", String(64), primary_key=True),  # the entry that credited the points
    Column("root_member_id", String(64), nullable=False),
    Column("expire_time", UtcDateTime(), nullable=False),
    Column("original", BigInteger, nullable=False),
    Column("remaining", BigInteger, nullable=False),
    CheckConstraint("remaining >= 0", name="remaining_not_negative"),
    CheckConstraint("remaining <= original", name="remaining_within_original"),
    Index("ix_point_lots_root_member_id_expire_time", "root_member_id", "expire_time"),
    Index("ix_point_lots_expire_time", "expire_time"),
)

# Which lots paid for a redemption, so that giving it back restores their expiry dates.
lot_draws = Table(
    "lot_draws",
    metadata,
    Column("entry_id", String(64), primary_key=True),
    Column("lot_id", String(64), primary_key=True),
    Column("points", BigInteger, nullable=False),
)

coupons = Table(
    "coupons",
    metadata,
    Column("code", String(32), primary_key=True),
    Column("member_id", String(64), nullable=False, index=True),
    Column("discount_cents", BigInteger, nullable=False),
    Column("min_spend_cents", BigInteger, nullable=False),
    Column("expire_time", UtcDateTime(), nullable=False),
    Column("redeemed_order_id", String(64), nullable=True),
    Column("redeemed_store_id", String(64), nullable=False),
    Column("redeemed_time", UtcDateTime(), nullable=True),
    Column("request_id", String(128), nullable=False, unique=True),
    Column("request_fingerprint", String(64), nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    # The campaign that issued it; empty for none.
    Column("campaign_id", String(64), nullable=False, server_default=""),
    CheckConstraint("discount_cents > 0", name="discount_positive"),
    # A member's coupons are listed newest first.
    Index("ix_coupons_member_id_create_time", "member_id", "create_time"),
)

# Member codes (会员码) a member's app shows at a till, kept as a hash only: a code is as good as
# the member's wallet for a few minutes.
member_codes = Table(
    "member_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("member_id", String(64), nullable=False, index=True),
    # The store the code was first shown at: it works there alone from then on.
    Column("store_id", String(64), nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("expire_time", UtcDateTime(), nullable=False),
)

# Guides (导购), each of one store: enrolments and orders are credited only to a guide of the
# store they belong to.
guides = Table(
    "guides",
    metadata,
    Column("guide_id", String(64), primary_key=True),
    Column("store_id", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("active", Boolean, nullable=False),
    *timestamps(),
    Index("ix_guides_store_id_guide_id", "store_id", "guide_id"),
)

member_merges = Table(
    "member_merges",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("survivor_customer_id", String(64), nullable=False),
    Column("merged_customer_id", String(64), nullable=False),
    Column("survivor_member_id", String(64), nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
)


# What marketing is told of members, written with the change that has it (see quanyu.outbox).
outbox = outbox_table(metadata)

# When points expiry and tier evaluation last ran, shared by every replica (see quanyu.tasks).
periodic_runs = periodic_runs_table(metadata)
