"""The idempotency key leads with the event, so it also finds an event's rows: one b-tree fewer.

Revision ID: 0010
Revises: 0009

Every stored row wrote four b-trees: the table, the unique key (client, publisher, event), the
client's list index and (publisher, event) for retraction and scheduled look-ups. Ordered
(publisher, event, client), the unique key serves those look-ups, and a broadcast's rows land
side by side in it instead of at a thousand random places. SQLite cannot alter a table's
constraint, so there the table is rebuilt (a batch copy, indexes recreated).
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

OLD_KEY = ("uq_notifications_client_publisher_event", ["client_id", "publisher_id", "event_id"])
NEW_KEY = ("uq_notifications_publisher_event_client", ["publisher_id", "event_id", "client_id"])
EVENT_INDEX = ("ix_notifications_publisher_event", ["publisher_id", "event_id"])


def upgrade() -> None:
    with op.batch_alter_table("notifications", recreate="auto") as batch:
        batch.drop_index(EVENT_INDEX[0])
        batch.drop_constraint(OLD_KEY[0], type_="unique")
        batch.create_unique_constraint(*NEW_KEY)


def downgrade() -> None:
    with op.batch_alter_table("notifications", recreate="auto") as batch:
        batch.drop_constraint(NEW_KEY[0], type_="unique")
        batch.create_unique_constraint(*OLD_KEY)
        batch.create_index(*EVENT_INDEX)
