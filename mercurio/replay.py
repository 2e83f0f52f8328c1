"""A resuming stream's replay: what it missed since Last-Event-ID, a page at a time, a few
streams at once.

Memory: each replaying stream holds one page (Store.replay), and at most hub.replay_slots
streams replay at once, in the order they came (asyncio.Semaphore is first come, first
served). A reconnect storm, every stream of a node back at once after a deploy, is worked
through that many at a time; the others are open and wait their turn, their live frames
buffered as usual.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import TYPE_CHECKING

from mercurio import sse

if TYPE_CHECKING:
    from mercurio.config import Settings
    from mercurio.hub import Hub
    from mercurio.store import Replay, Store
    from mercurio.stream import StreamRequest, StreamWriter

WRITE_BYTES = 64 * 1024
"""A replay writes about this much at a time: a transport's high-water mark, so a write
waits for the reader before the next one is made."""


async def send_missed(
    hub: Hub,
    store: Store,
    settings: Settings,
    request: StreamRequest,
    writer: StreamWriter,
    muted: frozenset[str],
) -> int:
    """Send what the client missed; return the last id sent (-1 when the client went away)."""
    assert request.last_event_id is not None
    last_sent, truncated = request.last_event_id, False
    async with hub.replay_slots:
        if writer.sub.closed:
            return last_sent  # closed while it waited: the live loop ends it as it was told
        pages = store.replay(
            request.client_id,
            last_sent,
            limit=settings.replay_max,
            categories=request.categories,
            muted=muted,
        )
        async with aclosing(pages):
            async for page in pages:
                truncated = truncated or page.truncated
                hub.replayed += len(page.notifications)
                if not await _write_page(writer, request.client_id, page, settings.sse_heartbeat):
                    return -1
                last_sent = page.notifications[-1].id
    # Retention purged history after Last-Event-ID that this client could have been sent:
    # say so rather than resume over a silent gap.
    pruned = request.last_event_id < await store.pruned_through(request.client_id)
    if truncated or pruned:
        reason = "history-pruned" if pruned else "replay-too-long"
        reset = sse.named("reset", {"reason": reason, "lastEventId": last_sent})
        if not await writer.write(reset):
            return -1
    return last_sent


async def _write_page(writer: StreamWriter, client_id: str, page: Replay, stall: float) -> bool:
    """Write a page in writes of about WRITE_BYTES: the transport never holds much more."""
    frames: list[bytes] = []
    size = 0
    for i, note in enumerate(page.notifications, 1):
        frame = sse.notification(note, client_id)
        frames.append(frame)
        size += len(frame)
        if size >= WRITE_BYTES or i == len(page.notifications):
            if not await _write(writer, b"".join(frames), stall):
                return False
            frames, size = [], 0
    return True


async def _write(writer: StreamWriter, chunk: bytes, stall: float) -> bool:
    # A reader that takes nothing in a heartbeat's time holds a replay slot that others wait
    # for: it is closed as a slow reader, as a full live buffer would close it, and resumes.
    timer = asyncio.get_running_loop().call_later(stall, _stalled, writer)
    try:
        return await writer.write(chunk)
    finally:
        timer.cancel()


def _stalled(writer: StreamWriter) -> None:
    # Imported here: mercurio.stream imports this module.
    from mercurio.stream import CloseReason

    writer.sub.close(CloseReason.SLOW_READER)
