"""A stream's mailbox: the frames the hub hands it, how its writer sleeps and wakes, its close.

The hub appends, the writer (mercurio.stream) takes out. Tens of thousands live at once, so a
mailbox is kept small: a list, a future while its writer sleeps, a place in the shared alarms.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Callable
from enum import StrEnum
from typing import Protocol

import structlog

log = structlog.get_logger("mercurio.stream")


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


class Interruptible(Protocol):
    """The writer of a mailbox, told of its close (mercurio.stream.StreamWriter)."""

    def closed(self, reason: CloseReason) -> None: ...


class Subscription:
    """One stream's mailbox: a bounded buffer of frames, a way to wake its writer, its close.

    Small on purpose (tens of thousands live at once). The hub appends, the writer takes out.
    """

    __slots__ = (
        "alarm",
        "buffer",
        "buffered_bytes",
        "categories",
        "client_id",
        "express",
        "limit",
        "max_bytes",
        "on_written",
        "pending_since",
        "reason",
        "sent",
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
        # A list, not a deque: an empty deque is 0.6 KiB, and most streams are idle.
        self.buffer: list[tuple[int, bytes]] = []
        self.buffered_bytes = 0
        self.pending_since = 0.0
        """When the hub queued the oldest frame still in the buffer (monotonic seconds)."""
        self.waiter: asyncio.Future[None] | None = None
        self.alarm = 0
        """The alarm slot the writer sleeps until (0: it is not asleep)."""
        self.reason: CloseReason | None = None
        self.writer: Interruptible | None = None
        self.express: Callable[[bytes], bool] | None = None
        """While the writer sleeps in its live loop: writes a frame at once, if it can."""
        self.sent = 0
        """The last notification id written, as of the writer's sleep (and express writes)."""
        self.on_written: Callable[[float], None] | None = None
        """Told when frames queued since then were written (the hub's latency tally)."""

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
        self.buffered_bytes += len(frame)
        if self.buffer:
            self.buffer.append((notification_id, frame))
            return True  # the writer was woken by the first one
        self.pending_since = at
        self.buffer.append((notification_id, frame))
        if self._asleep():
            # Frames of one turn of the loop (a commit, often many) leave together, without a
            # wake-up of the writer's task and a trip down the ASGI send chain.
            _shared(asyncio.get_running_loop()).expresses.add(self)
        else:
            self._wake()
        return True

    def _asleep(self) -> bool:
        """The writer sleeps in its live loop, so frames may go out without waking it."""
        waiter = self.waiter
        return self.express is not None and waiter is not None and not waiter.done()

    def _express(self) -> None:
        """Write what was queued during this turn of the loop straight to the idle stream's
        socket, as one write; wake the writer instead when it cannot go at once."""
        if not self.buffer or self.reason is not None:
            return
        express = self.express
        if express is None or not self._asleep():
            self._wake()
            return
        buffer, self.buffer = self.buffer, []
        chunk, sent = take(buffer, self.sent)
        try:
            written = not chunk or express(chunk)
        except BaseException:
            self.buffer = buffer  # still owed: the writer's own send tries, or ends the stream
            raise
        if written:
            self.buffered_bytes = 0
            self.sent = sent
            if chunk and self.on_written is not None:
                self.on_written(self.pending_since)
            return
        self.buffer = buffer  # flow control or a closing socket: the writer's own turn
        self._wake()

    def lost(self) -> None:
        """The connection is gone (the server's LossHook calls this)."""
        self.close(CloseReason.DISCONNECT)

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
        """Sleep until a frame arrives, the stream is closed, or about timeout seconds pass
        (at most an alarm step late)."""
        waiter = self.sleep(timeout)
        if waiter is not None:
            try:
                await waiter
            finally:
                self.woke()
                self.forget_alarm()

    def sleep(self, timeout: float) -> asyncio.Future[None] | None:
        """wait() without its coroutine, for the live loop (a frame per stream less): the
        future to await, then call woke(). None: nothing to wait for."""
        if self.buffer or self.reason is not None:
            return None
        loop = asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        _shared(loop).alarms.schedule(self, loop.time() + timeout)
        return waiter

    def woke(self) -> None:
        """The sleep is over (woken, timed out or cancelled). The alarm stays set: the next
        sleep, often in the same slot under a stream of frames, need not set it again."""
        self.waiter = None

    def forget_alarm(self) -> None:
        """The stream is over: leave the alarms."""
        if self.alarm and _SHARED:
            _SHARED[0].alarms.discard(self)


ALARM_STEP = 0.1
"""Seconds between alarm slots: how late a heartbeat or token expiry may be."""


class _Alarms:
    """Wakes sleeping mailboxes when their timeout is up, with one loop timer for all of them.

    A call_later per sleep was a TimerHandle and its arguments per idle stream (0.5 KiB), armed
    and cancelled again at every frame. Here a sleeper is one entry in its slot's set.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.slots: dict[int, set[Subscription]] = {}
        self.order: list[int] = []  # heap of the slots in self.slots
        self.timer: asyncio.TimerHandle | None = None
        self.timer_slot = 0

    def schedule(self, sub: Subscription, deadline: float) -> None:
        """Wake sub at deadline (its one alarm: one set before is moved)."""
        slot = max(1, math.ceil(deadline / ALARM_STEP))
        if slot == sub.alarm:
            return
        if sub.alarm:
            self.discard(sub)
        sub.alarm = self.add(sub, slot)

    def add(self, sub: Subscription, slot: int) -> int:
        sleepers = self.slots.get(slot)
        if sleepers is None:
            sleepers = self.slots[slot] = set()
            heapq.heappush(self.order, slot)
        sleepers.add(sub)
        if self.timer is None or slot < self.timer_slot:
            self._arm(slot)
        return slot

    def discard(self, sub: Subscription) -> None:
        sleepers = self.slots.get(sub.alarm)
        if sleepers is not None:
            sleepers.discard(sub)  # an emptied slot is dropped when its time comes
        sub.alarm = 0

    def _arm(self, slot: int) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_slot = slot
        self.timer = self.loop.call_at(slot * ALARM_STEP, self._ring)

    def _ring(self) -> None:
        self.timer = None
        now = self.loop.time()
        # A timer may fire a hair early (uvloop rounds to milliseconds): that counts as due.
        while self.order and self.order[0] * ALARM_STEP <= now + 0.002:
            for sub in self.slots.pop(heapq.heappop(self.order)):
                sub.alarm = 0
                sub._wake()
        if self.order:
            self._arm(self.order[0])


class _Expresses:
    """The idle streams that got frames during this turn of the loop, written at its end by one
    loop callback for all of them: a callback per stream was a handle and a loop turn per
    delivery of a broadcast."""

    __slots__ = ("due", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.due: list[Subscription] = []

    def add(self, sub: Subscription) -> None:
        if not self.due:
            self.loop.call_soon(self._run)
        self.due.append(sub)

    def _run(self) -> None:
        due, self.due = self.due, []
        for sub in due:
            try:
                sub._express()
            except Exception:
                # One stream's failure must not leave the others' frames unwritten.
                log.exception("stream.express_failed", client_id=sub.client_id)
                sub._wake()


class _Shared:
    """What the mailboxes of one loop share: its alarms and its express queue."""

    __slots__ = ("alarms", "expresses", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.alarms = _Alarms(loop)
        self.expresses = _Expresses(loop)


_SHARED: list[_Shared] = []


def _shared(loop: asyncio.AbstractEventLoop) -> _Shared:
    """The running loop's shared parts (one loop at a time: a new loop, as in tests, gets new
    ones)."""
    if not _SHARED or _SHARED[0].loop is not loop:
        _SHARED[:] = [_Shared(loop)]
    return _SHARED[0]


def take(buffer: list[tuple[int, bytes]], last_sent: int) -> tuple[bytes, int]:
    """The frames as one write, skipping notifications at or below last_sent (the replay sent
    them); and the last notification id in it."""
    if len(buffer) == 1:  # the usual case: one frame since the writer last ran
        nid, frame = buffer[0]
        if nid < 0:  # a control frame (hub.CONTROL)
            return frame, last_sent
        return (frame, nid) if nid > last_sent else (b"", last_sent)
    frames = []
    for nid, frame in buffer:
        if nid < 0:
            frames.append(frame)
        elif nid > last_sent:
            frames.append(frame)
            last_sent = nid
    return b"".join(frames), last_sent
