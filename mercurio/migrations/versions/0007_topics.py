"""Topics: who is subscribed to which topic, as intervals of notification ids.

A topic notification itself is one notifications row under the client id "#<topic>" (no new
column: every existing query by client id leaves it out); per-user read and delete state goes
to announcement_states, as for announcements.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "topic_subscriptions",
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("topic", sa.String(64), nullable=False),
        sa.Column("since_id", sa.BigInteger(), nullable=False),
        sa.Column("until_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "topic", "since_id"),
    )
    op.create_index("ix_topic_subscriptions_topic", "topic_subscriptions", ["topic", "until_id"])


def downgrade() -> None:
    op.drop_index("ix_topic_subscriptions_topic", table_name="topic_subscriptions")
    op.drop_table("topic_subscriptions")
