"""Request ids in their caller's namespace; request fingerprints keyed

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("request_owner", sa.String(length=80), nullable=False, server_default=""))
        batch.drop_constraint("uq_orders_request_id", type_="unique")
        batch.create_unique_constraint("uq_orders_request_owner", ["request_owner", "request_id"])
    # A caller's name in the history (store:<store id>/<terminal>) outgrows the 160 characters
    # the role and subject needed.
    with op.batch_alter_table("status_changes") as batch:
        batch.alter_column(
            "actor", existing_type=sa.String(length=160), type_=sa.String(length=256), existing_nullable=False
        )
    # Fingerprints written so far are plain hashes of a payload that holds the customer's phone,
    # recoverable from its masked form in a moment: they go. A retry of such an order is answered
    # with it, unchecked (see OrdersService._existing).
    op.execute("UPDATE orders SET request_fingerprint = ''")


def downgrade() -> None:
    with op.batch_alter_table("status_changes") as batch:
        batch.alter_column(
            "actor", existing_type=sa.String(length=256), type_=sa.String(length=160), existing_nullable=False
        )
    with op.batch_alter_table("orders") as batch:
        batch.drop_constraint("uq_orders_request_owner", type_="unique")
        batch.create_unique_constraint("uq_orders_request_id", ["request_id"])
        batch.drop_column("request_owner")
