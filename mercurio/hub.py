"""The in-process registry of open streams, and the fan-out to them."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import structlog

from mercurio import sse
from mercurio.model import Notification
from mercurio.stats import LatencyTally

log = structlog.get_logger("mercurio.hub")

CONTROL = -1
"""The id under which a non-notification frame (read-state, reset…) sits in a buffer."""


class Subscription:
    """One open stream: a bounded buffer of frames and a way to wake its writer.

    Kept small on purpose: tens of thousands of these live at once. The hub appends frames and
    wakes the writer; the writer is the only one that takes frames out.
    """

    __slots__ = (
        "buffer",
        "buffered_bytes",
        "categories",
        "client_id",
        "closed",
        "limit",
        "max_bytes",
        "pending_since",
        "reason",
        "sending",
        "task",
        "waiter",
    )

    def __init__(
        self,
        client_id: str,
        *,
        limit: int,
        max_bytes: int = 1 << 20,
        categories: frozenset[str] | None = None,
    ) -> None:
        self.client_id = client_id
        self.categories = categories
        self.limit = limit
        self.max_bytes = max_bytes
        self.buffer: deque[tuple[int, bytes]] = deque()
        self.buffered_bytes = 0
        self.pending_since = 0.0
        """When the hub queued the oldest frame still in the buffer (monotonic seconds)."""
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.reason = ""
        self.sending = False
        self.task: asyncio.Task[Any] | None = None

    def wants(self, category: str) -> bool:
        return self.categories is None or category in self.categories

    def push(self, notification_id: int, frame: bytes, at: float) -> bool:
        """Queue a frame handed over at `at`; False when the buffer was full and the stream
        is now closed."""
        if self.closed:
            return True
        if self.buffer and (
            len(self.buffer) >= self.limit or self.buffered_bytes + len(frame) > self.max_bytes
        ):
            # Live delivery may drop, replay may not (invariant 3): close, and the client
            # resumes from the store with Last-Event-ID. An empty buffer takes any one frame:
            # one big notification must not close every stream it goes to.
            self.close("slow-reader")
            return False
        if not self.buffer:
            self.pending_since = at
        self.buffer.append((notification_id, frame))
        self.buffered_bytes += len(frame)
        self._wake()
        return True

    def close(self, reason: str) -> None:
        """End the stream at the writer's next turn."""
        if not self.closed:
            self.closed = True
            self.reason = reason
            self._wake()
            if self.sending and reason == "slow-reader" and self.task is not None:
                # The writer waits on a full socket and would never see the close.
                self.task.cancel()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Sleep until a frame arrives, the stream is closed, or timeout seconds pass."""
        if self.buffer or self.closed:
            return
        loop = asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        timer = loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Hub:
    """Which streams are open on this node, by client, and fan-out of frames to them."""

    def __init__(self) -> None:
        self._by_client: dict[str, set[Subscription]] = {}
        self._muted: dict[str, frozenset[str]] = {}
        self.open_streams = 0
        self.deliveries = 0
        self.slow_disconnects = 0
        self.announce_deliveries = 0
        self.replayed = 0
        self.deliver_latency = LatencyTally()
        self.closing = ""
        """Why every stream was closed (shutdown); a stream registered afterwards ends at once."""

    # -- registry ---------------------------------------------------------------------------

    def register(self, sub: Subscription, muted: frozenset[str] = frozenset()) -> None:
        """Start delivering to sub (muted: the client's muted categories, from the store)."""
        subs = self._by_client.setdefault(sub.client_id, set())
        if not subs:
            self._muted[sub.client_id] = muted
        subs.add(sub)
        self.open_streams += 1
        if self.closing:
            # It was being authenticated when close_all ran: it gets the same goodbye.
            sub.close(self.closing)

    def unregister(self, sub: Subscription) -> None:
        """Stop delivering to sub; forget the client when it was its last stream."""
        subs = self._by_client.get(sub.client_id)
        if subs is None or sub not in subs:
            return
        subs.discard(sub)
        self.open_streams -= 1
        if not subs:
            del self._by_client[sub.client_id]
            self._muted.pop(sub.client_id, None)

    def streams_of(self, client_id: str) -> int:
        """How many streams the client has open on this node."""
        return len(self._by_client.get(client_id, ()))

    def connected_clients(self) -> list[str]:
        return list(self._by_client)

    def muted_of(self, client_id: str) -> frozenset[str] | None:
        """The client's muted categories when it already has a stream here (no store read)."""
        return self._muted.get(client_id) if client_id in self._by_client else None

    def set_muted(self, client_id: str, muted: frozenset[str]) -> None:
        """The client changed its preferences (here or on another node)."""
        if client_id in self._by_client:
            self._muted[client_id] = muted

    # -- fan-out ----------------------------------------------------------------------------

    def deliver(self, notes: Iterable[Notification]) -> None:
        """Push committed notifications, in id order, to every open stream that wants them."""
        now = time.monotonic()
        for note in notes:
            if note.is_announcement:
                if self._by_client:
                    self._announce(sse.NotificationFrame(note), now)
                continue
            subs = self._by_client.get(note.client_id)
            if subs and note.category not in self._muted.get(note.client_id, ()):
                frame = sse.NotificationFrame(note).for_client(note.client_id)
                self._push(subs, note.id, note.category, frame, now)

    def written(self, since: float) -> None:
        """A stream wrote frames queued since `since`: publish-to-deliver latency."""
        self.deliver_latency.observe(time.monotonic() - since)

    def _announce(self, frame: sse.NotificationFrame, now: float) -> None:
        before = self.deliveries
        for client_id, subs in self._by_client.items():
            if frame.category not in self._muted.get(client_id, ()):
                self._push(subs, frame.id, frame.category, frame.for_client(client_id), now)
        self.announce_deliveries += self.deliveries - before

    def _push(
        self, subs: set[Subscription], nid: int, category: str, frame: bytes, now: float
    ) -> None:
        for sub in subs:
            if not sub.wants(category):
                continue
            if sub.push(nid, frame, now):
                self.deliveries += 1
            else:
                self.slow_disconnects += 1
                log.warning(
                    "stream.slow_reader",
                    client_id=sub.client_id,
                    buffered=len(sub.buffer),
                    buffered_bytes=sub.buffered_bytes,
                )

    def push_event(self, client_id: str, frame: bytes) -> None:
        """Push a control frame (read-state and the like) to every stream of the client."""
        now = time.monotonic()
        for sub in list(self._by_client.get(client_id, ())):
            sub.push(CONTROL, frame, now)

    def close_all(self, reason: str) -> None:
        """Close every stream (shutdown): each writer ends at its next turn."""
        self.closing = reason
        for subs in self._by_client.values():
            for sub in subs:
                sub.close(reason)
