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
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    # Event ids are idempotency keys of one publisher: another publisher's same id is its own.
    sa.Column("publisher_id", sa.String(128), nullable=False, server_default=""),
    # A newer notification with the same (client, collapse_key) replaces this one (0008).
    sa.Column("collapse_key", sa.String(64), nullable=True),
    # Event first (0010): the same key finds an event's rows for retraction and scheduling.
    sa.UniqueConstraint(
        "publisher_id", "event_id", "client_id", name="uq_notifications_publisher_event_client"
    ),
    sa.Index("ix_notifications_client_id_id", "client_id", "id"),
    sa.Index(
        "ix_notifications_client_id_collapse_key",
        "client_id",
        "collapse_key",
        postgresql_where=sa.text("collapse_key IS NOT NULL"),
        sqlite_where=sa.text("collapse_key IS NOT NULL"),
    ),
    # Retention finds deleted and expiring rows without a scan (migration 0009); partial, so
    # a publish without an expiry pays nothing for them.
    sa.Index(
        "ix_notifications_deleted_at",
        "deleted_at",
        sqlite_where=sa.text("deleted_at IS NOT NULL"),
        postgresql_where=sa.text("deleted_at IS NOT NULL"),
    ),
    sa.Index(
        "ix_notifications_expires_at",
        "expires_at",
        sqlite_where=sa.text("expires_at IS NOT NULL"),
        postgresql_where=sa.text("expires_at IS NOT NULL"),
    ),
)

# Notifications published with a delay, until they are due: no ledger id yet (DESIGN.md
# invariant 2), so no stream, list or consumer sees them. At deliver_at (epoch seconds, as the
# deliveries' due_at) one node leases the row, publishes it through the writer (a fresh id in
# commit order) and deletes it. ttl counts from that delivery; expires_at is absolute.
scheduled_notifications = sa.Table(
    "scheduled_notifications",
    metadata,
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
    sa.Index("ix_scheduled_notifications_deliver_at", "deliver_at"),
    sa.Index("ix_scheduled_notifications_publisher_event", "publisher_id", "event_id"),
)

# Per-user state of announcements (client_id '*' rows), which have one row for everyone.
announcement_states = sa.Table(
    "announcement_states",
    metadata,
    sa.Column("client_id", sa.String(128), primary_key=True),
    sa.Column("notification_id", Id, primary_key=True),
    sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    # Retention removes an announcement's states with it (migration 0009).
    sa.Index("ix_announcement_states_notification_id", "notification_id"),
)

# Who follows which topic, as intervals of the ledger: a client sees a topic notification n
# when since_id < n.id <= until_id (until_id NULL: still subscribed). Ids commit in order, so
# since_id (the last committed id at subscribe time) splits "before" from "after" exactly.
topic_subscriptions = sa.Table(
    "topic_subscriptions",
    metadata,
    sa.Column("client_id", sa.String(128), primary_key=True),
    sa.Column("topic", sa.String(64), primary_key=True),
    sa.Column("since_id", sa.BigInteger(), primary_key=True),
    sa.Column("until_id", sa.BigInteger(), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_topic_subscriptions_topic", "topic", "until_id"),
)

preferences = sa.Table(
    "preferences",
    metadata,
    sa.Column("client_id", sa.String(128), primary_key=True),
    sa.Column("muted_categories", sa.Text(), nullable=False),
    # Per channel (migration 0005): push turned off, categories muted for push or e-mail only.
    sa.Column("push_off", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("push_muted", sa.Text(), nullable=False, server_default="[]"),
    sa.Column("email_muted", sa.Text(), nullable=False, server_default="[]"),
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

# A browser's Web Push subscription (PushSubscription.toJSON()), one row per endpoint.
push_subscriptions = sa.Table(
    "push_subscriptions",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("client_id", sa.String(128), nullable=False),
    sa.Column("endpoint", sa.String(2048), nullable=False, unique=True),
    sa.Column("p256dh", sa.String(128), nullable=False),
    sa.Column("auth", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_push_subscriptions_client_id", "client_id"),
)

# Where a client's e-mail digests go. source: "api" (PUT by the client or a publisher; an
# explicit DELETE is kept as a row without an address) or "token" (the JWT's email claim).
contacts = sa.Table(
    "contacts",
    metadata,
    sa.Column("client_id", sa.String(128), primary_key=True),
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("source", sa.String(8), nullable=False),
    sa.Column("email_off", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# What the channels (Web Push, e-mail) still owe: one row per push to one subscription, or per
# notification to e-mail to one client. A node leases a row before it sends; the row is deleted
# once sent or given up. Times are epoch seconds: compared the same way on both dialects.
deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("client_id", sa.String(128), nullable=False),
    sa.Column("notification_id", sa.BigInteger(), nullable=False),
    sa.Column("subscription_id", sa.BigInteger(), nullable=True),
    sa.Column("due_at", sa.Float(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.Float(), nullable=True),
    sa.Index("ix_deliveries_channel_due_at", "channel", "due_at"),
    sa.Index("ix_deliveries_channel_client_id", "channel", "client_id"),
)

# Secrets every node must share (the unsubscribe links' signing key): made once, kept here.
server_secrets = sa.Table(
    "server_secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)

# When each client was first seen (its first authenticated request or stream): announcements
# made before it are not inherited as unread (reads.read_at). Written once per client (0009).
client_first_seen = sa.Table(
    "client_first_seen",
    metadata,
    sa.Column("client_id", sa.String(128), primary_key=True),
    sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
)

# How far retention pruned history a stream could have replayed: the highest id pruned for
# age (client_id '*', everyone) or for a client's inbox cap. A resume from below it gets a
# reset, not a silent gap (store/retention.py, replay.py).
prune_marks = sa.Table(
    "prune_marks",
    metadata,
    sa.Column("client_id", sa.String(128), primary_key=True),
    sa.Column("pruned_through", sa.BigInteger(), nullable=False),
)
