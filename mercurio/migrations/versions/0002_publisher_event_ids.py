"""Event ids are idempotency keys per publisher: store the publisher on every notification.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows from before the upgrade keep an empty publisher: no token identity names them.
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(
            sa.Column("publisher_id", sa.String(128), nullable=False, server_default="")
        )
        batch.drop_constraint("uq_notifications_client_event", type_="unique")
        batch.create_unique_constraint(
            "uq_notifications_client_publisher_event", ["client_id", "publisher_id", "event_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_constraint("uq_notifications_client_publisher_event", type_="unique")
        batch.create_unique_constraint("uq_notifications_client_event", ["client_id", "event_id"])
        batch.drop_column("publisher_id")
