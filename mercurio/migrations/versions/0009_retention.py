"""Retention: clients' first-seen moments, how far history was pruned, and the indexes pruning uses.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Clients the database already knows count as seen from the start: the announcements they
# had unread before this migration stay unread.
KNOWN_SINCE = datetime(1970, 1, 1, tzinfo=UTC)


def upgrade() -> None:
    first_seen = op.create_table(
        "client_first_seen",
        sa.Column("client_id", sa.String(128), primary_key=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "prune_marks",
        sa.Column("client_id", sa.String(128), primary_key=True),
        sa.Column("pruned_through", sa.BigInteger(), nullable=False),
    )
    for column in ("deleted_at", "expires_at"):
        op.create_index(
            f"ix_notifications_{column}",
            "notifications",
            [column],
            sqlite_where=sa.text(f"{column} IS NOT NULL"),
            postgresql_where=sa.text(f"{column} IS NOT NULL"),
        )
    op.create_index(
        "ix_announcement_states_notification_id", "announcement_states", ["notification_id"]
    )
    _backfill(first_seen)


def _backfill(first_seen: sa.Table) -> None:
    """Every client with a trace in the database: a notification, a state, a preference,
    a contact or a push subscription."""
    traces: list[sa.Select[Any]] = [
        sa.select(sa.column("client_id"))
        .select_from(sa.table(name, sa.column("client_id")))
        .where(sa.column("client_id") != "*")
        for name in (
            "notifications",
            "announcement_states",
            "preferences",
            "contacts",
            "push_subscriptions",
        )
    ]
    known = sa.union(*traces).subquery()
    rows = sa.select(
        known.c.client_id, sa.literal(KNOWN_SINCE, sa.DateTime(timezone=True)).label("at")
    )
    op.execute(first_seen.insert().from_select(["client_id", "first_seen_at"], rows))


def downgrade() -> None:
    op.drop_index("ix_announcement_states_notification_id", "announcement_states")
    op.drop_index("ix_notifications_expires_at", "notifications")
    op.drop_index("ix_notifications_deleted_at", "notifications")
    op.drop_table("prune_marks")
    op.drop_table("client_first_seen")
