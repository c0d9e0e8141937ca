"""The store a customer chose for pickup, apart from the origin store

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(
            sa.Column("pickup_store_id", sa.String(length=64), nullable=False, server_default="")
        )
    # Pickup orders placed before kept the chosen store only where the member had no home store
    # (in origin_store_id). The store that first took the order is the chosen one whenever it
    # could serve, else the nearest to the customer: the best reference point left to re-route
    # such an order from.
    op.execute(
        "UPDATE orders SET pickup_store_id = COALESCE(("
        " SELECT sc.store_id FROM status_changes sc"
        " WHERE sc.order_id = orders.order_id AND sc.to_status = 'ASSIGNED'"
        " ORDER BY sc.change_id LIMIT 1), '')"
        " WHERE fulfilment_type = 'PICKUP'"
    )


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("pickup_store_id")
