"""Notifications, announcement state, preferences and stream tickets.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("source_id", sa.String(200), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("client_id", "event_id", name="uq_notifications_client_event"),
    )
    op.create_index("ix_notifications_client_id_id", "notifications", ["client_id", "id"])
    op.create_table(
        "announcement_states",
        sa.Column("client_id", sa.String(128), primary_key=True),
        sa.Column("notification_id", Id, primary_key=True),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "preferences",
        sa.Column("client_id", sa.String(128), primary_key=True),
        sa.Column("muted_categories", sa.Text(), nullable=False),
    )
    op.create_table(
        "stream_tickets",
        sa.Column("ticket_id", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_stream_tickets_expires_at", "stream_tickets", ["expires_at"])


def downgrade() -> None:
    op.drop_table("stream_tickets")
    op.drop_table("preferences")
    op.drop_table("announcement_states")
    op.drop_table("notifications")
