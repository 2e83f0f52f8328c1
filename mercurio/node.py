"""One Mercurio node: the store, the hub and the broker wired together."""

from __future__ import annotations

from typing import Any

import structlog

from mercurio import sse
from mercurio.auth import Authenticator
from mercurio.config import Settings
from mercurio.hub import Hub
from mercurio.model import NewNotification, Notification
from mercurio.store import Store

log = structlog.get_logger("mercurio.node")


class Node:
    """Everything a request handler needs: publish, notify, and the parts themselves."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.auth = Authenticator(settings)
        self.store = Store(settings.db_conn)
        self.hub = Hub()
        self.store.on_commit = self._committed
        self.started = False

    async def start(self) -> None:
        """Open the store (migrating it) and start the writer."""
        await self.store.start()
        self.started = True
        log.info("node.started", node_id=self.settings.node_id, store=self.store.dialect)

    async def stop(self) -> None:
        """Close every stream, finish queued publishes, close the store."""
        self.hub.close_all("shutdown")
        await self.store.close()
        self.started = False

    async def publish(self, items: list[NewNotification]) -> list[Notification]:
        """Store items durably, then push them; answers once the rows are committed."""
        return await self.store.publish(items)

    def _committed(self, fresh: list[Notification]) -> None:
        # Called by the store's single writer right after each commit, in id order.
        self.hub.deliver(fresh)

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
        self.hub.push_event(client_id, sse.named("read-state", payload))
        return payload

    async def set_muted(self, client_id: str, muted: list[str]) -> frozenset[str]:
        """Store the client's muted categories and apply them to its open streams."""
        chosen = await self.store.set_muted_categories(client_id, muted)
        self.hub.set_muted(client_id, chosen)
        return chosen
