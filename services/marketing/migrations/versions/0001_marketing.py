"""Campaigns and their versions, budgets, grants, messages, consent, facts from events, run claims and outbox

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
        "campaign_counters",
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("grants", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("coupon_cents", sa.BigInteger(), nullable=False),
        sa.Column("messages_suppressed", sa.BigInteger(), nullable=False),
        sa.Column("exhausted_limit", sa.String(length=32), nullable=False),
        sa.Column("exhaust_time", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("campaign_id", name=op.f("pk_campaign_counters")),
    )
    op.create_table(
        "campaign_versions",
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "version", name=op.f("pk_campaign_versions")),
    )
    op.create_table(
        "campaigns",
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("request_fingerprint", sa.String(length=64), server_default="", nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("trigger_event", sa.String(length=32), nullable=False),
        sa.Column("schedule_kind", sa.String(length=32), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("start_time", UtcDateTime(), nullable=True),
        sa.Column("end_time", UtcDateTime(), nullable=True),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", name=op.f("pk_campaigns")),
        sa.UniqueConstraint("request_id", name=op.f("uq_campaigns_request_id")),
    )
    op.create_index("ix_campaigns_create_time", "campaigns", ["create_time"], unique=False)
    op.create_index("ix_campaigns_state_trigger_event", "campaigns", ["state", "trigger_event"], unique=False)
    op.create_table(
        "completed_orders",
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("total_cents", sa.BigInteger(), nullable=False),
        sa.Column("complete_time", UtcDateTime(), nullable=False),
        sa.Column("cancelled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_completed_orders")),
    )
    op.create_index(
        "ix_completed_orders_member_id_complete_time",
        "completed_orders",
        ["member_id", "complete_time"],
        unique=False,
    )
    op.create_table(
        "consents",
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("consent", sa.Boolean(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "channel", name=op.f("pk_consents")),
    )
    op.create_table(
        "grants",
        sa.Column("slot", sa.String(length=68), nullable=False),
        sa.Column("grant_key", sa.String(length=68), nullable=False),
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("holder_id", sa.String(length=64), nullable=False),
        sa.Column("occurrence_id", sa.String(length=160), nullable=False),
        sa.Column("outcome", sa.String(length=24), nullable=False),
        sa.Column("limit_name", sa.String(length=32), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("coupon_cents", sa.BigInteger(), nullable=False),
        sa.Column("grant_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("slot", name=op.f("pk_grants")),
    )
    op.create_index(
        "ix_grants_campaign_id_holder_id_outcome_grant_time",
        "grants",
        ["campaign_id", "holder_id", "outcome", "grant_time"],
        unique=False,
    )
    op.create_index(
        "ix_grants_campaign_id_outcome_member_id",
        "grants",
        ["campaign_id", "outcome", "member_id"],
        unique=False,
    )
    op.create_index("ix_grants_member_id", "grants", ["member_id"], unique=False)
    op.create_table(
        "member_profiles",
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("tier", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("home_store_id", sa.String(length=64), nullable=False),
        sa.Column("guide_id", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=128), nullable=False),
        sa.Column("points_balance", sa.BigInteger(), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("birthday", sa.String(length=5), nullable=False),
        sa.Column("accounts", sa.Text(), nullable=False),
        sa.Column("survivor_id", sa.String(length=64), nullable=False),
        sa.Column("last_order_time", UtcDateTime(), nullable=True),
        sa.Column("first_purchase_time", UtcDateTime(), nullable=True),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_member_profiles")),
    )
    op.create_index(op.f("ix_member_profiles_customer_id"), "member_profiles", ["customer_id"], unique=False)
    op.create_table(
        "member_turns",
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("holder_id", sa.String(length=64), nullable=False),
        sa.Column("turns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "holder_id", name=op.f("pk_member_turns")),
    )
    op.create_table(
        "messages",
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("grant_key", sa.String(length=68), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("account", sa.String(length=128), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("send_at", UtcDateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("lease_until", UtcDateTime(), nullable=True),
        sa.Column("pulls", sa.Integer(), nullable=False),
        sa.Column("deliver_time", UtcDateTime(), nullable=True),
        sa.Column("status_reason", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_messages")),
        sa.UniqueConstraint("grant_key", "channel", name=op.f("uq_messages_grant_key")),
    )
    op.create_index("ix_messages_campaign_id_status", "messages", ["campaign_id", "status"], unique=False)
    op.create_index(
        "ix_messages_channel_status_send_at", "messages", ["channel", "status", "send_at"], unique=False
    )
    op.create_index(
        "ix_messages_customer_id_channel_send_at",
        "messages",
        ["customer_id", "channel", "send_at"],
        unique=False,
    )
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
        "point_expiries",
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("expire_time", UtcDateTime(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("member_id", "expire_time", name=op.f("pk_point_expiries")),
    )
    op.create_table(
        "processed_events",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=48), nullable=False),
        sa.Column("process_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_processed_events")),
    )
    op.create_table(
        "run_claims",
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("run_key", sa.String(length=160), nullable=False),
        sa.Column("claimed_by", sa.String(length=128), nullable=False),
        sa.Column("lease_until", UtcDateTime(), nullable=False),
        sa.Column("cursor", sa.String(length=64), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "run_key", name=op.f("pk_run_claims")),
    )


def downgrade() -> None:
    op.drop_table("run_claims")
    op.drop_table("processed_events")
    op.drop_table("point_expiries")
    op.drop_index("ix_outbox_pending", table_name="outbox")
    op.drop_table("outbox")
    op.drop_index("ix_messages_customer_id_channel_send_at", table_name="messages")
    op.drop_index("ix_messages_channel_status_send_at", table_name="messages")
    op.drop_index("ix_messages_campaign_id_status", table_name="messages")
    op.drop_table("messages")
    op.drop_table("member_turns")
    op.drop_index(op.f("ix_member_profiles_customer_id"), table_name="member_profiles")
    op.drop_table("member_profiles")
    op.drop_index("ix_grants_member_id", table_name="grants")
    op.drop_index("ix_grants_campaign_id_outcome_member_id", table_name="grants")
    op.drop_index("ix_grants_campaign_id_holder_id_outcome_grant_time", table_name="grants")
    op.drop_table("grants")
    op.drop_table("consents")
    op.drop_index("ix_completed_orders_member_id_complete_time", table_name="completed_orders")
    op.drop_table("completed_orders")
    op.drop_index("ix_campaigns_state_trigger_event", table_name="campaigns")
    op.drop_index("ix_campaigns_create_time", table_name="campaigns")
    op.drop_table("campaigns")
    op.drop_table("campaign_versions")
    op.drop_table("campaign_counters")
