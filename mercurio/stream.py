"""One open stream: its request, mailbox and writer, the replay, then the live loop.

Close flow (who cancels whom): anyone closes a stream's Subscription with a CloseReason: the
hub when its buffer overflows or at shutdown, the disconnect listener, the live loop when the
token expires. Closing wakes the writer and tells it why. Only the StreamWriter cancels, only
its own task, only a write stuck on a full socket when the reader stopped reading, and it takes
that cancel back itself. A stream is one task plus its disconnect listener, nothing more.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import structlog
from starlette.types import Message, Receive, Send

from mercurio import replay, sse
from mercurio.hub import CONTROL, Hub

if TYPE_CHECKING:
    from mercurio.auth import Principal
    from mercurio.config import Settings
    from mercurio.store import Store

log = structlog.get_logger("mercurio.stream")

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class CloseReason(StrEnum):
    """Why a stream ended, as its stream.close log line says."""

    DISCONNECT = "disconnect"
    SLOW_READER = "slow-reader"
    SHUTDOWN = "shutdown"
    TOKEN_EXPIRED = "token-expired"
    ENDED = "ended"  # nobody closed it: the peer reset the connection

    @property
    def drops_connection(self) -> bool:
        """The client is gone or not reading: nothing more is written, not even the end."""
        return self in (CloseReason.DISCONNECT, CloseReason.SLOW_READER)


@dataclass(slots=True)
class StreamRequest:
    """What a stream request asked for, once authenticated and validated."""

    client_id: str
    principal: Principal
    last_event_id: int | None
    categories: frozenset[str] | None


class Subscription:
    """One stream's mailbox: a bounded buffer of frames, a way to wake its writer, its close.

    Small on purpose (tens of thousands live at once). The hub appends, the writer takes out.
    """

    __slots__ = (
        "buffer",
        "buffered_bytes",
        "categories",
        "client_id",
        "limit",
        "max_bytes",
        "pending_since",
        "reason",
        "waiter",
        "writer",
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
        self.reason: CloseReason | None = None
        self.writer: StreamWriter | None = None

    @property
    def closed(self) -> bool:
        return self.reason is not None

    def wants(self, category: str) -> bool:
        return self.categories is None or category in self.categories

    def push(self, notification_id: int, frame: bytes, at: float) -> bool:
        """Queue a frame handed over at `at`; False when the buffer was full and the stream
        is now closed."""
        if self.reason is not None:
            return True
        if self.buffer and (
            len(self.buffer) >= self.limit or self.buffered_bytes + len(frame) > self.max_bytes
        ):
            # Live delivery may drop, replay may not (invariant 3): close, and the client
            # resumes from the store with Last-Event-ID. An empty buffer takes any one frame:
            # one big notification must not close every stream it goes to.
            log.warning(
                "stream.slow_reader",
                client_id=self.client_id,
                buffered=len(self.buffer),
                buffered_bytes=self.buffered_bytes,
            )
            self.close(CloseReason.SLOW_READER)
            return False
        if not self.buffer:
            self.pending_since = at
        self.buffer.append((notification_id, frame))
        self.buffered_bytes += len(frame)
        self._wake()
        return True

    def close(self, reason: CloseReason) -> None:
        """End the stream at the writer's next turn; the first reason given is the one kept."""
        if self.reason is None:
            self.reason = CloseReason(reason)
            self._wake()
            if self.writer is not None:
                self.writer.closed(self.reason)

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Sleep until a frame arrives, the stream is closed, or timeout seconds pass."""
        if self.buffer or self.reason is not None:
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


class StreamWriter:
    """Writes a stream's response, and owns both halves of its one cancel: a slow-reader close
    interrupts a write stuck on a full socket, and the write takes that cancel back."""

    __slots__ = ("send", "sending", "sub", "task")

    def __init__(self, send: Send, sub: Subscription) -> None:
        self.send = send
        self.sub = sub
        self.sending = False
        self.task = asyncio.current_task()
        sub.writer = self

    def closed(self, reason: CloseReason) -> None:
        """The mailbox was closed: interrupt a write that waits on a reader who stopped."""
        if self.sending and reason is CloseReason.SLOW_READER and self.task is not None:
            self.task.cancel()

    async def write(self, chunk: bytes) -> bool:
        """True when written; False when the stream is over."""
        reason = self.sub.reason
        if reason is not None and reason.drops_connection:
            return False
        self.sending = True
        try:
            await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
        except asyncio.CancelledError:
            # Closed as slow-reader during this write: the cancel is closed()'s own (a close
            # before the write returns above). Taken back, unless someone else's is pending too.
            if self.sub.reason is CloseReason.SLOW_READER and self.task is not None:
                if self.task.uncancel() == 0:
                    return False
            raise
        except OSError:
            return False
        finally:
            self.sending = False
        return self.sub.reason is not CloseReason.DISCONNECT

    async def end(self) -> None:
        """Finish the response with its last chunk, so the client sees a clean end."""
        reason = self.sub.reason
        if reason is not None and reason.drops_connection:
            return  # gone, or not reading: the connection is dropped instead
        try:
            await self.send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass


@dataclass(slots=True)
class _Position:
    """Where a stream is: the last id sent, and the head it started at (a fresh stream)."""

    last_sent: int
    head: int

    def reported(self) -> int:
        """The lastEventId a client resumes from: nothing before it is new to the client."""
        return max(self.last_sent, self.head)


async def serve(
    hub: Hub,
    store: Store,
    settings: Settings,
    request: StreamRequest,
    receive: Receive,
    send: Send,
    *,
    muted: frozenset[str],
) -> None:
    """Serve one stream from registration to its close (muted: the client's, read earlier).

    It registers before its first await: the caller's stream-count check still holds, and
    what commits from here on is pushed to the stream while the replay reads the store.
    """
    sub = Subscription(
        request.client_id,
        limit=settings.stream_buffer,
        max_bytes=settings.stream_buffer_bytes,
        categories=request.categories,
    )
    hub.register(sub, muted)
    opened = time.monotonic()
    log.info("stream.open", client_id=request.client_id, last_event_id=request.last_event_id)
    try:
        await _respond(hub, store, settings, request, sub, receive, send, muted)
    finally:
        hub.unregister(sub)
        log.info(
            "stream.close",
            client_id=request.client_id,
            reason=(sub.reason or CloseReason.ENDED).value,
            duration_ms=round((time.monotonic() - opened) * 1000, 1),
        )


async def _respond(
    hub: Hub,
    store: Store,
    settings: Settings,
    request: StreamRequest,
    sub: Subscription,
    receive: Receive,
    send: Send,
    muted: frozenset[str],
) -> None:
    head = request.last_event_id
    if head is None:
        # A fresh stream starts at the head, read after register(): what commits later is
        # pushed to it. Reported as 0, a resume would replay the whole history as new. Read
        # in a replay slot: a burst of opens queues there instead of timing out on the pool.
        async with hub.replay_slots:
            head = await store.head(request.client_id)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    writer = StreamWriter(send, sub)
    # The listener is the only other task: it turns the client's disconnect into a close.
    listener = asyncio.ensure_future(_watch_disconnect(receive, sub))
    try:
        retry = sse.jittered_retry(settings.sse_retry_ms)  # one delay for this stream
        if not await writer.write(sse.CONNECTED + retry):
            return
        last_sent = request.last_event_id or 0
        if request.last_event_id is not None:
            last_sent = await replay.send_missed(hub, store, settings, request, writer, muted)
            if last_sent < 0:
                return
        position = _Position(last_sent, head)
        await _live(hub, writer, position, settings.sse_heartbeat, request.principal.expires_at)
        if sub.reason is CloseReason.SHUTDOWN:
            await writer.write(retry)
        await writer.end()
    finally:
        listener.cancel()


async def _live(
    hub: Hub,
    writer: StreamWriter,
    position: _Position,
    heartbeat: float,
    expires_at: float | None,
) -> None:
    # Frames are skipped only at or below last_sent (what the replay sent), never below the
    # head: a fresh stream sends whatever was pushed to it after it registered.
    sub = writer.sub
    last_sent = position.last_sent
    next_beat = time.monotonic() + heartbeat
    while True:
        if sub.buffer:
            since = sub.pending_since
            chunk, sent = _drain(sub, last_sent)
            if chunk and not await writer.write(chunk):
                return
            if sent != last_sent:
                # Publish-to-deliver, once per write, for the oldest frame in it.
                hub.written(since)
                last_sent = sent
            next_beat = time.monotonic() + heartbeat
            continue
        if sub.closed:
            return
        now = time.monotonic()
        if expires_at is not None and time.time() >= expires_at:
            position.last_sent = last_sent
            expired = {"lastEventId": position.reported()}
            await writer.write(sse.named("token-expired", expired))
            sub.close(CloseReason.TOKEN_EXPIRED)
            return
        if now >= next_beat:
            if not await writer.write(sse.HEARTBEAT):
                return
            next_beat = now + heartbeat
            continue
        timeout = next_beat - now
        if expires_at is not None:
            timeout = min(timeout, max(0.0, expires_at - time.time()) + 0.001)
        await sub.wait(timeout)


def _drain(sub: Subscription, last_sent: int) -> tuple[bytes, int]:
    """Everything buffered as one write, skipping what the replay already sent."""
    frames = []
    buffer = sub.buffer
    while buffer:
        nid, frame = buffer.popleft()
        if nid == CONTROL:
            frames.append(frame)
        elif nid > last_sent:
            frames.append(frame)
            last_sent = nid
    sub.buffered_bytes = 0
    return b"".join(frames), last_sent


async def _watch_disconnect(receive: Receive, sub: Subscription) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            sub.close(CloseReason.DISCONNECT)
            return
