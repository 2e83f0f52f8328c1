"""The SSE stream: a raw ASGI endpoint, one task and one small Subscription per open stream.

The framework stays out of this path on purpose (DESIGN.md, "Where the speed and memory go"):
its request objects and middleware frames would live as long as the stream.
"""

from __future__ import annotations

import asyncio
import re
import time
from urllib.parse import parse_qs

import structlog
from starlette.types import Message, Receive, Scope, Send

from mercurio import sse
from mercurio.api.errors import send_error
from mercurio.auth import AuthError, Principal, bearer_token
from mercurio.hub import CONTROL, Hub, Subscription
from mercurio.limits import retry_after
from mercurio.model import CATEGORY_PATTERN, CLIENT_ID_PATTERN
from mercurio.node import Node

log = structlog.get_logger("mercurio.stream")

STREAM_PATH = re.compile(r"/api/clients/([^/]+)/notifications/stream/?")
TOKEN_PARAMS = ("token", "access_token", "jwt", "authorization")
COOKIE_NAME = "mercurio_token"

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class StreamRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class StreamRequest:
    """What a stream request asked for, once authenticated and validated."""

    __slots__ = ("categories", "client_id", "last_event_id", "principal")

    def __init__(
        self,
        client_id: str,
        principal: Principal,
        last_event_id: int | None,
        categories: frozenset[str] | None,
    ) -> None:
        self.client_id = client_id
        self.principal = principal
        self.last_event_id = last_event_id
        self.categories = categories


async def handle(node: Node, scope: Scope, receive: Receive, send: Send, client_id: str) -> None:
    """Serve GET …/notifications/stream, or answer its refusal as JSON."""
    try:
        request = await _accept(node, scope, client_id)
    except StreamRefused as exc:
        await send_error(send, exc.status, exc.message)
        return
    except AuthError as exc:
        await send_error(send, exc.status, exc.message)
        return
    muted = node.hub.muted_of(client_id)
    if muted is None:
        muted = await node.store.muted_categories(client_id)
    cap = node.settings.max_streams_per_client
    if node.hub.streams_of(client_id) >= cap:
        # The newcomer is refused rather than the oldest closed: a closed EventSource
        # reconnects by itself, so with one tab too many, "close the oldest" would have the
        # tabs evict each other forever. Checked with no await before register(): no race.
        wait = retry_after(node.settings.sse_heartbeat)
        message = f"too many open streams: at most {cap} per client"
        await send_error(send, 429, message, [(b"retry-after", wait.encode())])
        return
    sub = Subscription(
        client_id,
        limit=node.settings.stream_buffer,
        max_bytes=node.settings.stream_buffer_bytes,
        categories=request.categories,
    )
    node.hub.register(sub, muted)
    opened = time.monotonic()
    log.info("stream.open", client_id=client_id, last_event_id=request.last_event_id)
    try:
        await _serve(node, request, sub, receive, send, muted)
    finally:
        node.hub.unregister(sub)
        log.info(
            "stream.close",
            client_id=client_id,
            reason=sub.reason or "ended",
            duration_ms=round((time.monotonic() - opened) * 1000, 1),
        )


async def _accept(node: Node, scope: Scope, client_id: str) -> StreamRequest:
    if scope["method"] not in ("GET", "HEAD"):
        raise StreamRefused(405, "method not allowed")
    if not CLIENT_ID_PATTERN.fullmatch(client_id):
        raise StreamRefused(400, "clientID is not a valid client id")
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    # Repeated Authorization headers never get here (OneAuthorization); cookies may repeat.
    headers["cookie"] = "; ".join(
        v.decode("latin-1") for k, v in scope["headers"] if k == b"cookie"
    )
    principal = await _authenticate(node, client_id, query, headers)
    if principal.user_id != client_id:
        raise StreamRefused(403, "this token may not open another client's stream")
    last = headers.get("last-event-id") or _one(query, "lastEventId")
    return StreamRequest(client_id, principal, _last_event_id(last), _categories(query))


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


async def _authenticate(
    node: Node, client_id: str, query: dict[str, list[str]], headers: dict[str, str]
) -> Principal:
    if any(name in query for name in TOKEN_PARAMS):
        # URLs end up in access logs, proxies and browser history (RFC 9700).
        raise StreamRefused(
            401,
            "tokens are not accepted in the URL; use POST "
            f"/api/clients/{client_id}/stream-tickets and pass ?ticket=",
        )
    ticket = _one(query, "ticket")
    if ticket is not None:
        verified = node.auth.read_ticket(ticket, client_id)
        if not await node.store.consume_ticket(verified.ticket_id, verified.expires_at):
            raise StreamRefused(401, "stream ticket was already used")
        return verified.principal
    token = bearer_token(headers.get("authorization")) or _cookie(headers.get("cookie"))
    if token is None:
        raise StreamRefused(
            401, "missing credentials: Authorization header, mercurio_token cookie or ?ticket="
        )
    return node.auth.verify(token)


def _cookie(header: str | None) -> str | None:
    """The mercurio_token cookie; unlike SimpleCookie, one bad cookie does not hide it."""
    for pair in (header or "").split(";"):
        name, sep, value = pair.partition("=")
        if sep and name.strip() == COOKIE_NAME:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value or None
    return None


def _last_event_id(raw: str | None) -> int | None:
    if raw is None or raw.strip() == "":
        return None
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise StreamRefused(400, "Last-Event-ID must be a notification id (a non-negative integer)")
    return int(raw)


def _categories(query: dict[str, list[str]]) -> frozenset[str] | None:
    raw = _one(query, "categories")
    if raw is None or raw == "":
        return None
    chosen = frozenset(part.strip() for part in raw.split(",") if part.strip())
    bad = [c for c in chosen if not CATEGORY_PATTERN.fullmatch(c)]
    if bad or len(chosen) > 50:
        raise StreamRefused(400, "categories must be a comma-separated list of category slugs")
    return chosen


async def _serve(
    node: Node,
    request: StreamRequest,
    sub: Subscription,
    receive: Receive,
    send: Send,
    muted: frozenset[str],
) -> None:
    settings = node.settings
    head = request.last_event_id
    if head is None:
        # A fresh stream starts at the head, read after register(): what commits later is
        # pushed to it. Reported as 0, a resume would replay the whole history as new.
        head = await node.store.head(request.client_id)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    writer = _Writer(send, sub)
    # The listener is the only other task: it turns the client's disconnect into a close.
    listener = asyncio.ensure_future(_watch_disconnect(receive, sub))
    try:
        if not await writer.write(sse.CONNECTED + sse.retry(settings.sse_retry_ms)):
            return
        last_sent = request.last_event_id or 0
        if request.last_event_id is not None:
            last_sent = await _replay(node, request, writer, muted)
            if last_sent < 0:
                return
        await _live(
            node.hub,
            writer,
            sub,
            _Position(last_sent, head),
            settings.sse_heartbeat,
            request.principal.expires_at,
        )
        if sub.reason == "shutdown":
            await writer.write(sse.retry(settings.sse_retry_ms))
        await writer.end()
    finally:
        listener.cancel()


async def _replay(
    node: Node, request: StreamRequest, writer: _Writer, muted: frozenset[str]
) -> int:
    """Send what the client missed; return the last id sent (-1 when the client went away)."""
    assert request.last_event_id is not None
    replay = await node.store.since(
        request.client_id,
        request.last_event_id,
        limit=node.settings.replay_max,
        categories=request.categories,
        muted=muted,
    )
    last_sent = request.last_event_id
    if replay.notifications:
        node.hub.replayed += len(replay.notifications)
        frames = [
            sse.NotificationFrame(n).for_client(request.client_id) for n in replay.notifications
        ]
        if not await writer.write(b"".join(frames)):
            return -1
        last_sent = replay.notifications[-1].id
    if replay.truncated:
        reset = sse.named("reset", {"reason": "replay-too-long", "lastEventId": last_sent})
        if not await writer.write(reset):
            return -1
    return last_sent


class _Position:
    """Where a stream is: the last id sent, and the head it started at (a fresh stream)."""

    __slots__ = ("head", "last_sent")

    def __init__(self, last_sent: int, head: int) -> None:
        self.last_sent = last_sent
        self.head = head

    def reported(self) -> int:
        """The lastEventId a client resumes from: nothing before it is new to the client."""
        return max(self.last_sent, self.head)


async def _live(
    hub: Hub,
    writer: _Writer,
    sub: Subscription,
    position: _Position,
    heartbeat: float,
    expires_at: float | None,
) -> None:
    # Frames are skipped only at or below last_sent (what the replay sent), never below the
    # head: a fresh stream sends whatever was pushed to it after it registered.
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
            sub.close("token-expired")
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


class _Writer:
    """Writes chunks; a slow-reader close interrupts a write stuck on a full socket."""

    __slots__ = ("send", "sub")

    def __init__(self, send: Send, sub: Subscription) -> None:
        self.send = send
        self.sub = sub
        sub.task = asyncio.current_task()

    async def end(self) -> None:
        """Finish the response with its last chunk, so the client sees a clean end."""
        if self.sub.reason in ("disconnect", "slow-reader"):
            return  # gone, or not reading: the connection is dropped instead
        try:
            await self.send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass

    async def write(self, chunk: bytes) -> bool:
        """True when written; False when the stream is over."""
        sub = self.sub
        if sub.closed and sub.reason in ("disconnect", "slow-reader"):
            return False
        sub.sending = True
        try:
            await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
        except asyncio.CancelledError:
            # Subscription.close cancels a write that waits on a reader who stopped reading.
            task = sub.task
            if sub.closed and sub.reason == "slow-reader" and task is not None:
                task.uncancel()
                return False
            raise
        except OSError:
            return False
        finally:
            sub.sending = False
        return not (sub.closed and sub.reason == "disconnect")


async def _watch_disconnect(receive: Receive, sub: Subscription) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            sub.close("disconnect")
            return
