"""One Mercurio node, wired: settings → auth, hub, fan-out, store, retention, budgets, metrics.

The node builds its parts and starts and stops them in order; it makes no decision a part
could make itself. A publish goes api → node → store → fanout → hub → stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog

from mercurio import sse
from mercurio.auth import Authenticator
from mercurio.channels.build import build_channels
from mercurio.cluster import Cluster
from mercurio.config import Settings
from mercurio.consumers import Consumer, ConsumerRunner, each_commit
from mercurio.fanout import Fanout, LocalFanout
from mercurio.hub import Hub
from mercurio.limits import PublishBudget, RateLimiter
from mercurio.metrics import Metrics
from mercurio.model import ANNOUNCEMENT, TOPIC_PREFIX, NewNotification, Notification
from mercurio.retention import RetentionLoop
from mercurio.scheduler import Scheduler
from mercurio.stats import PublishStats
from mercurio.store import Pending, PreferenceChanges, Preferences, Retraction, Store
from mercurio.store.first_seen import FirstSeen
from mercurio.stream import CloseReason

log = structlog.get_logger("mercurio.node")


class Node:
    """Everything a request handler needs: the parts, and the three writes that fan out."""

    def __init__(
        self,
        settings: Settings,
        *,
        fanout: Fanout | None = None,
        consumers: Sequence[Consumer] = (),
    ) -> None:
        self.settings = settings
        self.auth = Authenticator(settings)
        self.hub = Hub(settings.stream_replay_concurrency)
        self.fanout = fanout or build_fanout(settings, self.hub)
        self.store = Store(settings.db_conn)
        self.first_seen = FirstSeen(self.store)
        self.retention = RetentionLoop(self.store, settings)
        # Web Push and e-mail: durable consumers enqueue, dispatchers send.
        self.channels = build_channels(settings, self.store)
        self.consumers = ConsumerRunner([*consumers, *self.channels.consumers])
        self.store.on_commit = each_commit(self.fanout.committed, self.consumers.committed)
        self.store.on_replaced = self._replaced
        self.scheduler = Scheduler(self.store, settings.node_id, self.publish, self.retract)
        self._telling: set[asyncio.Task[None]] = set()
        self.publish_budget = publish_budget(settings)
        self.publish_stats = PublishStats()
        self.metrics = Metrics(
            self.hub, self.store, self.fanout, self.publish_stats, self.channels.dispatchers
        )
        self.started = False

    async def start(self) -> None:
        """Open the store (migrating it), then the fan-out that reads from it."""
        await self.store.start()
        await self.fanout.start(self.store)
        await self.consumers.start(self.store, self.store.write_engine())
        await self.channels.start()
        await self.scheduler.start()
        self.retention.start()
        self.started = True
        log.info("node.started", node_id=self.settings.node_id, store=self.store.dialect)

    async def stop(self) -> None:
        """Close every stream, finish queued publishes, close the store, then the fan-out."""
        self.hub.close_all(CloseReason.SHUTDOWN)
        await self.scheduler.close()
        for task in list(self._telling):
            task.cancel()
        await asyncio.gather(*self._telling, return_exceptions=True)
        await self.retention.close()
        await self.channels.close()
        await self.consumers.close()
        await self.store.close()
        await self.fanout.close()
        self.started = False

    async def publish(self, items: list[NewNotification]) -> list[Notification]:
        """Store items durably; answers once the rows are committed (and handed to fan-out)."""
        stored = await self.store.publish(items)
        own = {n.client_id: n.created_at for n in stored if not _shared(n.client_id)}
        try:
            await self.first_seen.note_sent(own)
        except Exception as exc:  # committed all the same: at worst an announcement stays unread
            log.warning("first_seen.failed", error=type(exc).__name__)
        return stored

    async def schedule(
        self, items: list[NewNotification], deliver_at: float, ttl: int | None
    ) -> list[Pending]:
        """Store items to publish at deliver_at (epoch seconds); the scheduler moves them."""
        pending = await self.store.schedule(items, deliver_at, ttl)
        self.scheduler.scheduled()
        return pending

    async def retract(self, publisher: str, event_id: str) -> Retraction:
        """Cancel or retract a publisher's event; the recipients' open streams hear of it."""
        done = await self.store.retract(publisher, event_id)
        await self._tell_deleted(done.retracted)
        return done

    def _replaced(self, replaced: list[tuple[str, int]]) -> None:
        # Called by the writer right after its commit, synchronously: the unread counts the
        # read-state events carry are read in a task of their own.
        task = asyncio.create_task(self._tell_deleted(replaced))
        self._telling.add(task)
        task.add_done_callback(self._telling.discard)

    async def _tell_deleted(self, deleted: list[tuple[str, int]]) -> None:
        for client_id, notification_id in deleted:
            try:
                await self.notify_read_state(
                    client_id, notification_id=notification_id, status="deleted"
                )
            except Exception as exc:  # the rows are deleted; a stream resyncs on reconnect
                log.warning("read_state.failed", error=type(exc).__name__)

    async def notify_read_state(
        self,
        client_id: str,
        *,
        notification_id: int | None,
        status: str,
        category: str | None = None,
    ) -> dict[str, Any]:
        """Tell the client's open streams (every tab, every device) its read state changed.

        For an announcement or a topic notification (one row shared by many) every open stream
        hears it, without an unread count: each user's is their own; a stream that never had
        that id ignores it.
        """
        shared = _shared(client_id)
        payload = {
            "notificationID": notification_id,
            "status": status,
            "category": category,
            "unreadCount": None if shared else await self.store.unread_count(client_id),
        }
        self.fanout.read_state(
            ANNOUNCEMENT if shared else client_id, sse.named("read-state", payload)
        )
        return payload

    async def subscribe(self, client_id: str, topic: str) -> int:
        """Store the client's subscription, then tell the streams' hubs (here and elsewhere)."""
        self.hub.hold_topic(client_id, topic)
        try:
            since = await self.store.subscribe(client_id, topic)
        except BaseException:
            self.hub.release_topic(client_id, topic)
            raise
        self.fanout.topic(client_id, topic, since)
        return since

    async def unsubscribe(self, client_id: str, topic: str) -> bool:
        """End the client's subscription in the store, then on every node's hub."""
        self.hub.hold_topic(client_id, topic)
        try:
            until = await self.store.unsubscribe(client_id, topic)
        except BaseException:
            self.hub.release_topic(client_id, topic)
            raise
        if until is None:
            self.hub.release_topic(client_id, topic)
        else:
            self.fanout.topic(client_id, topic, None, until)
        return until is not None

    async def update_preferences(self, client_id: str, change: PreferenceChanges) -> Preferences:
        """Store the client's preferences and apply its muted categories to its open streams
        when they changed."""
        chosen = await self.store.update_preferences(client_id, change)
        if change.muted is not None:
            self.fanout.muted(client_id, chosen.muted)
        return chosen


def _shared(client_id: str) -> bool:
    """One row for many: an announcement or a topic notification."""
    return client_id == ANNOUNCEMENT or client_id.startswith(TOPIC_PREFIX)


def build_fanout(settings: Settings, hub: Hub) -> Fanout:
    """LocalFanout for one node alone; with MERCURIO_MQ=on, the cluster over the broker."""
    return Cluster(settings, hub) if settings.mq else LocalFanout(hub)


def publish_budget(settings: Settings) -> PublishBudget:
    """Each publisher's budget of requests, rows and bytes, from the settings."""
    return PublishBudget(
        RateLimiter(settings.publish_rate, settings.publish_burst),
        RateLimiter(settings.publish_row_rate, settings.publish_row_burst),
        RateLimiter(settings.publish_byte_rate, settings.publish_byte_burst),
    )
