"""One Mercurio node: the store, the hub and the broker wired together."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from mercurio import sse
from mercurio.auth import Authenticator
from mercurio.config import Settings
from mercurio.hub import Hub
from mercurio.model import NewNotification, Notification
from mercurio.store import Store

if TYPE_CHECKING:
    from mercurio.cluster import Cluster

log = structlog.get_logger("mercurio.node")


class Node:
    """Everything a request handler needs: publish, notify, and the parts themselves."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.auth = Authenticator(settings)
        self.store = Store(settings.db_conn)
        self.hub = Hub()
        self.store.on_commit = self._committed
        self.cluster: Cluster | None = None
        if settings.mq:
            from mercurio.cluster import Cluster

            self.cluster = Cluster(settings, self.store, self.hub)
        self.started = False

    async def start(self) -> None:
        """Open the store (migrating it) and start the writer."""
        await self.store.start()
        if self.cluster is not None:
            await self.cluster.start()
        self.started = True
        log.info("node.started", node_id=self.settings.node_id, store=self.store.dialect)

    async def stop(self) -> None:
        """Close every stream, finish queued publishes, close the store."""
        self.hub.close_all("shutdown")
        await self.store.close()
        if self.cluster is not None:
            await self.cluster.close()
        self.started = False

    @property
    def broker_connected(self) -> bool | None:
        """Whether the broker link is up; None when this node runs alone (MERCURIO_MQ=off)."""
        return None if self.cluster is None else self.cluster.connected

    @property
    def broker_reconnects(self) -> int | None:
        """How often the broker link was re-established; None when MQ is off."""
        return None if self.cluster is None else max(0, self.cluster.broker.connects - 1)

    async def publish(self, items: list[NewNotification]) -> list[Notification]:
        """Store items durably, then push them; answers once the rows are committed."""
        return await self.store.publish(items)

    def _committed(self, fresh: list[Notification]) -> None:
        # Called by the store's single writer right after each commit, in id order.
        if self.cluster is None:
            self.hub.deliver(fresh)
        else:
            self.cluster.committed(fresh)

    async def notify_read_state(
        self,
        client_id: str,
        *,
        notification_id: int | None,
        status: str,
        category: str | None = None,
    ) -> dict[str, Any]:
        """Tell the client's open streams (every tab, every device) its read state changed."""
        unread = await self.store.unread_count(client_id)
        payload = {
            "notificationID": notification_id,
            "status": status,
            "category": category,
            "unreadCount": unread,
        }
        frame = sse.named("read-state", payload)
        self.hub.push_event(client_id, frame)
        if self.cluster is not None:
            self.cluster.read_state(client_id, frame)
        return payload

    async def set_muted(self, client_id: str, muted: list[str]) -> frozenset[str]:
        """Store the client's muted categories and apply them to its open streams."""
        chosen = await self.store.set_muted_categories(client_id, muted)
        self.hub.set_muted(client_id, chosen)
        if self.cluster is not None:
            self.cluster.muted(client_id, chosen)
        return chosen
