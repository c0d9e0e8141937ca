"""Member codes, guides, and whose source id each ledger entry is

Revision ID: 0002
Revises: 0001
"""

from datetime import UTC, datetime

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
    _guides_of_members()
    # Every entry written so far came from the platform's own callers or from tills whose ids were
    # not yet told apart; they stay in the shared namespace, under the keys they were written with.
    with op.batch_alter_table("ledger_entries") as batch:
        batch.add_column(sa.Column("source_owner", sa.String(length=80), nullable=False, server_default=""))
        # A till's key, redeem@store:<64-character store id>:<128-character source id>, is longer
        # than the 200 characters the platform's own keys needed.
        batch.alter_column(
            "idempotency_key",
            existing_type=sa.String(length=200),
            type_=sa.String(length=300),
            existing_nullable=False,
        )


def _guides_of_members() -> None:
    """Guides become known with this revision, and only known guides are credited from now on:
    every guide members already name is kept, at the home store most of its members have (ties
    to the first store id). A guide named only by members of no store has no store to be kept at;
    ops register it with UpsertGuide."""
    connection = op.get_bind()
    members = sa.table("members", sa.column("guide_id"), sa.column("home_store_id"))
    counted = connection.execute(
        sa.select(members.c.guide_id, members.c.home_store_id, sa.func.count())
        .where(members.c.guide_id != "", members.c.home_store_id != "")
        .group_by(members.c.guide_id, members.c.home_store_id)
    ).all()
    chosen: dict[str, tuple[int, str]] = {}
    for guide_id, store_id, count in counted:
        best = chosen.get(guide_id)
        if best is None or (-count, store_id) < (-best[0], best[1]):
            chosen[guide_id] = (count, store_id)
    if chosen:
        now = datetime.now(UTC)
        guides = sa.table(
            "guides",
            sa.column("guide_id"),
            sa.column("store_id"),
            sa.column("name"),
            sa.column("active", sa.Boolean()),
            sa.column("create_time", UtcDateTime()),
            sa.column("update_time", UtcDateTime()),
        )
        connection.execute(
            guides.insert(),
            [
                {
                    "guide_id": g,
                    "store_id": s,
                    "name": "",
                    "active": True,
                    "create_time": now,
                    "update_time": now,
                }
                for g, (_, s) in sorted(chosen.items())
            ],
        )


def downgrade() -> None:
    with op.batch_alter_table("ledger_entries") as batch:
        batch.alter_column(
            "idempotency_key",
            existing_type=sa.String(length=300),
            type_=sa.String(length=200),
            existing_nullable=False,
        )
        batch.drop_column("source_owner")
    op.drop_index("ix_guides_store_id_guide_id", table_name="guides")
    op.drop_table("guides")
    op.drop_index(op.f("ix_member_codes_member_id"), table_name="member_codes")
    op.drop_table("member_codes")
