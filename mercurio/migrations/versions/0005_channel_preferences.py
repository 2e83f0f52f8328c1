"""Per-channel preferences: push turned off, categories muted for push or e-mail only.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Server defaults fill the rows already there: a client who chose nothing keeps every
    # channel on, as before.
    op.add_column(
        "preferences",
        sa.Column("push_off", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column(
        "preferences", sa.Column("push_muted", sa.Text(), nullable=False, server_default="[]")
    )
    op.add_column(
        "preferences", sa.Column("email_muted", sa.Text(), nullable=False, server_default="[]")
    )


def downgrade() -> None:
    # SQLite drops a column only by copying the table: batch mode does that (and plain
    # ALTER TABLE on PostgreSQL).
    with op.batch_alter_table("preferences") as batch:
        batch.drop_column("email_muted")
        batch.drop_column("push_muted")
        batch.drop_column("push_off")
