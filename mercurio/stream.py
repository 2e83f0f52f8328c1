"""One open stream: its request, mailbox and writer, the replay, then the live loop.

Close flow (who cancels whom): anyone closes a stream's Subscription with a CloseReason: the
hub when its buffer overflows or at shutdown, the server when the connection is lost, the live
loop when the token expires. Closing wakes the writer and tells it why. Only the StreamWriter
cancels, only its own task, only a write stuck on a full socket when the reader stopped
reading, and it takes that cancel back itself. A stream is one task: the server reports a lost
connection to the Subscription itself (mercurio.protocol.Connection); only under a server
without that hook does a second task wait on receive() for the http.disconnect.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import structlog
from starlette.types import Message, Receive, Send

from mercurio import replay, sse
from mercurio.hub import Hub
from mercurio.mailbox import CloseReason, Subscription, take

__all__ = ["CloseReason", "StreamRequest", "StreamWriter", "Subscription", "serve"]

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


@dataclass(slots=True)
class StreamRequest:
    """What a stream request asked for, once authenticated and validated."""

    client_id: str
    principal: Principal
    last_event_id: int | None
    categories: frozenset[str] | None


Express = Callable[[bytes], bool]
"""Writes a chunk of the response at once if it can go at once (LossHook.write_now)."""


class LossHook(Protocol):
    """How the server reports the loss of a connection (mercurio.protocol.Connection)."""

    def notify(self, callback: Callable[[], None] | None) -> None:
        """Call callback once the connection is lost (at once if it is); None: stop."""
        ...

    def write_now(self, chunk: bytes) -> bool:
        """Write a body chunk at once if nothing is queued before it; False: send it yourself."""
        ...


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
    topics: Mapping[str, int] | None = None,
    connection: LossHook | None = None,
) -> None:
    """Serve one stream from registration to its close (muted, topics: the client's, read
    earlier).

    connection: the server's hook for a lost connection; without it, a listener task awaits
    receive() for the http.disconnect.

    It registers before its first await: the caller's stream-count check still holds, and
    what commits from here on is pushed to the stream while the replay reads the store.
    """
    sub = Subscription(
        request.client_id,
        limit=settings.stream_buffer,
        max_bytes=settings.stream_buffer_bytes,
        categories=request.categories,
    )
    hub.register(sub, muted, topics)
    opened = time.monotonic()
    log.info("stream.open", client_id=request.client_id, last_event_id=request.last_event_id)
    listener = None
    if connection is not None:
        connection.notify(sub.lost)
    else:
        listener = asyncio.ensure_future(_watch_disconnect(receive, sub))
    try:
        express = connection.write_now if connection is not None else None
        await _respond(hub, store, settings, request, sub, send, muted, express)
    finally:
        if listener is not None:
            listener.cancel()
        elif connection is not None:
            connection.notify(None)
        sub.forget_alarm()
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
    send: Send,
    muted: frozenset[str],
    express: Express | None,
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
    retry = sse.jittered_retry(settings.sse_retry_ms)  # one delay for this stream
    if not await writer.write(sse.CONNECTED + retry):
        return
    last_sent = request.last_event_id or 0
    if request.last_event_id is not None:
        last_sent = await replay.send_missed(hub, store, settings, request, writer, muted)
        if last_sent < 0:
            return
    position = _Position(last_sent, head)
    sub.express = express
    sub.on_written = hub.written
    try:
        await _live(hub, writer, position, settings.sse_heartbeat, request.principal.expires_at)
    finally:
        sub.express = None  # from here on, only this task writes
    if sub.reason is CloseReason.SHUTDOWN:
        await writer.write(retry)
    await writer.end()


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
        sub.sent = last_sent  # while it sleeps, the hub may write newer frames itself
        waiter = sub.sleep(timeout)
        if waiter is not None:
            try:
                await waiter
            finally:
                sub.woke()
                last_sent = sub.sent


def _drain(sub: Subscription, last_sent: int) -> tuple[bytes, int]:
    """Everything buffered as one write, skipping what the replay already sent."""
    buffer, sub.buffer = sub.buffer, []
    sub.buffered_bytes = 0
    return take(buffer, last_sent)


async def _watch_disconnect(receive: Receive, sub: Subscription) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            sub.close(CloseReason.DISCONNECT)
            return
