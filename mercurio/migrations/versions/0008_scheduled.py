"""Scheduled notifications wait in a table of their own; collapse keys replace in place.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Not in notifications: a row there has its ledger id, and an id drawn at publish time
    # for a notification due later would be behind cursors that moved on meanwhile.
    op.create_table(
        "scheduled_notifications",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("publisher_id", sa.String(128), nullable=False),
        sa.Column("source_id", sa.String(200), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("collapse_key", sa.String(64), nullable=True),
        sa.Column("ttl", sa.Integer(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deliver_at", sa.Float(), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.UniqueConstraint(
            "client_id", "publisher_id", "event_id", name="uq_scheduled_client_publisher_event"
        ),
    )
    op.create_index(
        "ix_scheduled_notifications_deliver_at", "scheduled_notifications", ["deliver_at"]
    )
    op.create_index(
        "ix_scheduled_notifications_publisher_event",
        "scheduled_notifications",
        ["publisher_id", "event_id"],
    )
    # Nullable: notifications stored before have no key and replace nothing.
    op.add_column("notifications", sa.Column("collapse_key", sa.String(64), nullable=True))
    op.create_index(
        "ix_notifications_client_id_collapse_key",
        "notifications",
        ["client_id", "collapse_key"],
        postgresql_where=sa.text("collapse_key IS NOT NULL"),
        sqlite_where=sa.text("collapse_key IS NOT NULL"),
    )
    # Retraction finds an event's rows by publisher and event id (the unique key leads with
    # the client, which a retraction does not know).
    op.create_index(
        "ix_notifications_publisher_event", "notifications", ["publisher_id", "event_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_publisher_event", "notifications")
    op.drop_index("ix_notifications_client_id_collapse_key", "notifications")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("collapse_key")
    op.drop_table("scheduled_notifications")
