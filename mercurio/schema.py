"""The database tables. Alembic migrations under migrations/ own the real schema."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# BIGINT on PostgreSQL; SQLite needs exactly INTEGER PRIMARY KEY to alias the rowid.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(200), nullable=False),
    sa.Column("source_id", sa.String(200), nullable=False),
    sa.Column("client_id", sa.String(128), nullable=False),
    sa.Column("category", sa.String(32), nullable=False),
    sa.Column("data", sa.Text(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    # Event ids are idempotency keys of one publisher: another publisher's same id is its own.
    sa.Column("publisher_id", sa.String(128), nullable=False, server_default=""),
    sa.UniqueConstraint(
        "client_id", "publisher_id", "event_id", name="uq_notifications_client_publisher_event"
    ),
    sa.Index("ix_notifications_client_id_id", "client_id", "id"),
)

# Per-user state of announcements (client_id '*' rows), which have one row for everyone.
announcement_states = sa.Table(
    "announcement_states",
    metadata,
    sa.Column("client_id", sa.String(128), primary_key=True),
    sa.Column("notification_id", Id, primary_key=True),
    sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
)

preferences = sa.Table(
    "preferences",
    metadata,
    sa.Column("client_id", sa.String(128), primary_key=True),
    sa.Column("muted_categories", sa.Text(), nullable=False),
)

stream_tickets = sa.Table(
    "stream_tickets",
    metadata,
    sa.Column("ticket_id", sa.String(64), primary_key=True),
    sa.Column("expires_at", sa.Float(), nullable=False),
    sa.Index("ix_stream_tickets_expires_at", "expires_at"),
)

# How far each durable consumer (consumers.py) has read the ledger: the id of the last
# notification it handled. The row is also the consumer's lock: one node holds it at a time.
consumer_cursors = sa.Table(
    "consumer_cursors",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("position", sa.BigInteger(), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
