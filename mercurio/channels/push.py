"""Web Push: every committed notification owes one push to each of its recipient's browsers.

PushEnqueuer (a durable consumer) writes the owed pushes, due MERCURIO_PUSH_DELAY seconds
after the notification was made. PushChannel sends one when it is due, if the recipient has
still not read it, deleted it, turned push off or muted its category (everywhere or for push;
escalation: a push only for what the open tabs did not already settle).
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Sequence

import httpx
import orjson
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from mercurio.channels.dispatcher import SENT, Outcome, Result
from mercurio.channels.endpoints import EndpointPolicy, EndpointRefused
from mercurio.channels.webpush import WebPushSender
from mercurio.consumers import Consumer
from mercurio.model import Notification, rfc3339
from mercurio.store import Store
from mercurio.store.outbox import Delivery, enqueue
from mercurio.store.subscriptions import Subscriptions, any_subscription, targets

log = structlog.get_logger("mercurio.push")

CHANNEL = "push"
PUSH_TTL = 24 * 3600
"""Seconds a push is worth sending (and the push service keeps it for an offline browser)."""
MAX_PLAINTEXT = 3993
"""RFC 8030 caps a push body at 4096 bytes; aes128gcm adds an 86-byte header and 17 bytes."""


class PushEnqueuer(Consumer):
    """Owes a push to every subscription of each notification's recipient (all, for an
    announcement), in the transaction that moves the consumer's cursor."""

    name = "web-push"

    def __init__(self, delay: float, committed: Callable[[], None]) -> None:
        self.delay = delay
        self._ring = committed

    async def handle(self, conn: AsyncConnection, notes: list[Notification]) -> None:
        clients = {note.client_id for note in notes if not note.is_announcement}
        everyone = any(note.is_announcement for note in notes)
        by_client: dict[str, list[int]] = {}
        for row in await targets(conn, clients, everyone):
            by_client.setdefault(row.client_id, []).append(row.id)
        rows = []
        for note in notes:
            due = note.created_at.timestamp() + self.delay
            owners = by_client if note.is_announcement else {note.client_id: ()}
            for client_id in owners:
                for subscription_id in by_client.get(client_id, ()):
                    rows.append(
                        {
                            "client_id": client_id,
                            "notification_id": note.id,
                            "subscription_id": subscription_id,
                            "due_at": due,
                        }
                    )
        await enqueue(conn, CHANNEL, rows)

    async def wants(self, reader: AsyncConnection) -> bool:
        return await any_subscription(reader)

    def committed(self, notes: list[Notification]) -> None:
        self._ring()


def payload(note: Notification, client_id: str) -> bytes:
    """What the service worker gets: the notification, or a stub when it would not fit."""
    body = {
        "notificationID": note.id,
        "clientID": client_id,
        "category": note.category,
        "data": orjson.Fragment(note.data_json),
        "createdAt": rfc3339(note.created_at),
    }
    encoded = orjson.dumps(body)
    if len(encoded) <= MAX_PLAINTEXT:
        return encoded
    del body["data"]
    return orjson.dumps({**body, "truncated": True})


class PushChannel:
    """Sends one owed push: checks it is still owed, then asks the push service."""

    name = CHANNEL
    whole_client = False

    def __init__(
        self,
        store: Store,
        subscriptions: Subscriptions,
        sender: WebPushSender,
        policy: EndpointPolicy,
    ) -> None:
        self.store = store
        self.subscriptions = subscriptions
        self.sender = sender
        self.policy = policy

    async def deliver(self, group: Sequence[Delivery]) -> Outcome:
        (delivery,) = group
        assert delivery.subscription_id is not None
        subscription = await self.subscriptions.get(delivery.subscription_id)
        if subscription is None or subscription.client_id != delivery.client_id:
            return Outcome(Result.DROPPED, "unsubscribed")
        note = await self.store.get(delivery.client_id, delivery.notification_id)
        if note is None or note.read_at is not None:
            return Outcome(Result.DROPPED, "settled")  # deleted or read in the meantime
        # Read when the push is due, not when it was owed: a change made during the delay counts.
        chosen = await self.store.preferences(delivery.client_id)
        if chosen.push_off:
            return Outcome(Result.DROPPED, "push_off")
        if note.category in chosen.muted or note.category in chosen.push_muted:
            return Outcome(Result.DROPPED, "muted")
        left = int(note.created_at.timestamp() + PUSH_TTL - time.time())
        if left <= 0:
            return Outcome(Result.FAILED, "expired")
        try:
            self.policy.check(subscription.endpoint)  # the allow-list may have changed since
        except EndpointRefused as exc:
            log.warning("push.refused_endpoint", subscription=subscription.id, reason=str(exc))
            return Outcome(Result.FAILED, "endpoint_refused")
        try:
            answer = await self.sender.send(
                subscription.info(),
                payload(note, delivery.client_id),
                ttl=left,
                topic=push_topic(note),
            )
        except httpx.HTTPError as exc:
            log.info("push.unreachable", subscription=subscription.id, error=type(exc).__name__)
            return Outcome(Result.RETRY, "unreachable")
        return await self._outcome(answer.status, answer.retry_after, subscription.id)

    async def _outcome(self, status: int, retry_after: float | None, subscription: int) -> Outcome:
        if 200 <= status < 300:
            return SENT
        if status in (404, 410):  # the browser unsubscribed, or the push service forgot it
            await self.subscriptions.remove(subscription)
            log.info("push.pruned", subscription=subscription, status=status)
            return Outcome(Result.PRUNED, "gone")
        if status == 429 or status >= 500:
            return Outcome(Result.RETRY, f"status_{status}", retry_after)
        log.warning("push.rejected", subscription=subscription, status=status)
        return Outcome(Result.FAILED, f"status_{status}")


def push_topic(note: Notification) -> str:
    """The push's Topic: a push service keeps only the newest undelivered push per topic.

    By notification id, a resend replaces the copy the service still holds; with a
    collapseKey, a newer notification with the key replaces the older one too. RFC 8030
    allows 32 base64url characters, so the key (64 of a wider alphabet) goes in hashed.
    """
    if note.collapse_key is None:
        return f"n{note.id}"
    digest = hashlib.sha256(note.collapse_key.encode()).digest()
    return "k" + base64.urlsafe_b64encode(digest).decode()[:31]
