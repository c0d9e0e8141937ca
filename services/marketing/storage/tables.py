"""Marketing's tables: campaigns and every version of them, the counters their budgets are taken
from, grants (one per member and occurrence), messages and consent, the facts kept from other
services' events, the claims on scheduled runs, and the outbox of effects on membership."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text, UniqueConstraint

from quanyu.db import UtcDateTime, new_metadata, timestamps
from quanyu.outbox import outbox_table

metadata = new_metadata()


campaigns = Table(
    "campaigns",
    metadata,
    Column("campaign_id", String(64), primary_key=True),
    # CreateCampaign's idempotency key; NULL for none, so campaigns made without one never clash.
    Column("request_id", String(128), nullable=True, unique=True),
    Column("request_fingerprint", String(64), nullable=False, server_default=""),
    Column("name", String(256), nullable=False),
    Column("state", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    # Copied out of the definition so a trigger finds the campaigns it concerns without reading it.
    Column("trigger_event", String(32), nullable=False),
    Column("schedule_kind", String(32), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("start_time", UtcDateTime(), nullable=True),
    Column("end_time", UtcDateTime(), nullable=True),
    *timestamps(),
    Index("ix_campaigns_state_trigger_event", "state", "trigger_event"),
    Index("ix_campaigns_create_time", "create_time"),
)

# Every version a campaign has had, whole: a grant names the version it was made under, and the
# results and explanations read that version, not whatever the campaign has become since.
campaign_versions = Table(
    "campaign_versions",
    metadata,
    Column("campaign_id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("definition", Text, nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
)

# What a campaign has given, changed only by conditional updates that keep each figure within its
# cap, so concurrent triggers on any replica never overspend.
campaign_counters = Table(
    "campaign_counters",
    metadata,
    Column("campaign_id", String(64), primary_key=True),
    Column("grants", BigInteger, nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("coupon_cents", BigInteger, nullable=False),
    Column("messages_suppressed", BigInteger, nullable=False),
    # The first limit that refused a grant, and when: the results say the budget ran out.
    Column("exhausted_limit", String(32), nullable=False),
    Column("exhaust_time", UtcDateTime(), nullable=True),
)

# One row per member and campaign that a grant is being decided for: updating it locks the member
# for the rest of the transaction, so two triggers for one member count their grants one at a time.
member_turns = Table(
    "member_turns",
    metadata,
    Column("campaign_id", String(64), primary_key=True),
    Column("holder_id", String(64), primary_key=True),
    Column("turns", BigInteger, nullable=False),
)

grants = Table(
    "grants",
    metadata,
    # domain.occurrence_slot: one decision per member and occurrence, whatever the version.
    Column("slot", String(68), primary_key=True),
    Column("grant_key", String(68), nullable=False),
    Column("campaign_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("member_id", String(64), nullable=False),
    # Whose limits it counted against: the member a merge folded this one into.
    Column("holder_id", String(64), nullable=False),
    Column("occurrence_id", String(160), nullable=False),
    # GRANTED, HELD_OUT, or the verdict that refused it (LIMIT_REACHED, BUDGET_EXHAUSTED).
    Column("outcome", String(24), nullable=False),
    Column("limit_name", String(32), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("coupon_cents", BigInteger, nullable=False),
    Column("grant_time", UtcDateTime(), nullable=False),
    Index(
        "ix_grants_campaign_id_holder_id_outcome_grant_time",
        "campaign_id",
        "holder_id",
        "outcome",
        "grant_time",
    ),
    Index("ix_grants_campaign_id_outcome_member_id", "campaign_id", "outcome", "member_id"),
    Index("ix_grants_member_id", "member_id"),
)

messages = Table(
    "messages",
    metadata,
    Column("message_id", String(64), primary_key=True),
    Column("campaign_id", String(64), nullable=False),
    Column("grant_key", String(68), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("member_id", String(64), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("account", String(128), nullable=False),
    # Rendered and masked: no phone number in clear.
    Column("text", Text, nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    # Not before: later than asked when quiet hours held it.
    Column("send_at", UtcDateTime(), nullable=False),
    Column("status", String(16), nullable=False),
    # Until when the backend that pulled it has it; NULL while never pulled.
    Column("lease_until", UtcDateTime(), nullable=True),
    Column("pulls", Integer, nullable=False),
    Column("deliver_time", UtcDateTime(), nullable=True),
    Column("status_reason", String(64), nullable=False),
    # The request id of the coupon whose code the text still lacks; empty when it lacks none. A
    # message awaiting one is not pulled: the delivery fills the code in and frees it.
    Column("awaits_coupon", String(128), nullable=False, server_default=""),
    UniqueConstraint("grant_key", "channel"),
    Index("ix_messages_channel_status_send_at", "channel", "status", "send_at"),
    Index("ix_messages_customer_id_channel_send_at", "customer_id", "channel", "send_at"),
    Index("ix_messages_campaign_id_status", "campaign_id", "status"),
)

consents = Table(
    "consents",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("channel", String(32), primary_key=True),
    Column("consent", Boolean, nullable=False),
    Column("update_time", UtcDateTime(), nullable=False),
)

# Events already acted on, by id: one delivered again finds its row and is skipped.
processed_events = Table(
    "processed_events",
    metadata,
    Column("event_id", String(128), primary_key=True),
    Column("kind", String(48), nullable=False),
    Column("process_time", UtcDateTime(), nullable=False),
)

# What membership's events said of each member, as of the newest event seen.
member_profiles = Table(
    "member_profiles",
    metadata,
    Column("member_id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False, index=True),
    Column("tier", String(64), nullable=False),
    Column("stage", String(16), nullable=False),
    # Space-separated: tags are single words on membership's side.
    Column("tags", Text, nullable=False),
    Column("home_store_id", String(64), nullable=False),
    Column("guide_id", String(64), nullable=False),
    Column("display_name", String(128), nullable=False),
    Column("points_balance", BigInteger, nullable=False),
    Column("time_zone", String(64), nullable=False),
    Column("birthday", String(5), nullable=False),
    # The customer's account on each channel, as JSON {channel: account}: where a message goes.
    Column("accounts", Text, nullable=False),
    # The member a merge folded this one into; empty while it stands on its own.
    Column("survivor_id", String(64), nullable=False),
    Column("last_order_time", UtcDateTime(), nullable=True),
    Column("first_purchase_time", UtcDateTime(), nullable=True),
    *timestamps(),
)

# The accounts identity reported each customer holding, one per channel: where a message to any of
# the customer's members is addressed, and which customers a channel may set consent for. Kept by
# customer, not by member, since an account can be linked before the customer enrols or after.
customer_accounts = Table(
    "customer_accounts",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("channel", String(32), primary_key=True),
    Column("account", String(128), nullable=False),
    Column("display_name", String(128), nullable=False),
    *timestamps(),
)

point_expiries = Table(
    "point_expiries",
    metadata,
    Column("member_id", String(64), primary_key=True),
    Column("expire_time", UtcDateTime(), primary_key=True),
    Column("points", BigInteger, nullable=False),
)

# Completed orders, for conversion: whether a member reached or held out ordered afterwards.
completed_orders = Table(
    "completed_orders",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("member_id", String(64), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("store_id", String(64), nullable=False),
    Column("total_cents", BigInteger, nullable=False),
    Column("complete_time", UtcDateTime(), nullable=False),
    Column("cancelled", Boolean, nullable=False),
    Index("ix_completed_orders_member_id_complete_time", "member_id", "complete_time"),
)

run_claims = Table(
    "run_claims",
    metadata,
    Column("campaign_id", String(64), primary_key=True),
    Column("run_key", String(160), primary_key=True),
    Column("claimed_by", String(128), nullable=False),
    Column("lease_until", UtcDateTime(), nullable=False),
    # The last member id the run has finished with; a run taken over starts after it.
    Column("cursor", String(64), nullable=False),
    Column("done", Boolean, nullable=False),
    Column("attempts", Integer, nullable=False),
    *timestamps(),
)

outbox = outbox_table(metadata)

# The coupons membership issued for grants, by code: the results count them, and count those an
# order redeemed (orders name the coupon in the completed order's event).
issued_coupons = Table(
    "issued_coupons",
    metadata,
    Column("code", String(32), primary_key=True),
    Column("campaign_id", String(64), nullable=False),
    Column("member_id", String(64), nullable=False),
    Column("grant_key", String(68), nullable=False),
    Column("issue_time", UtcDateTime(), nullable=False),
    Column("redeemed_order_id", String(64), nullable=False, server_default=""),
    Index("ix_issued_coupons_campaign_id", "campaign_id"),
)
