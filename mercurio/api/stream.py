"""The SSE stream's raw ASGI endpoint: parse, authenticate, refuse, then mercurio.stream serves.

The framework stays out of this path on purpose (DESIGN.md, "Where the speed and memory go"):
its request objects and middleware frames would live as long as the stream.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs

from starlette.types import Receive, Scope, Send

from mercurio.api.errors import send_error
from mercurio.auth import AuthError, Principal, bearer_token
from mercurio.limits import retry_after
from mercurio.model import CATEGORY_PATTERN, CLIENT_ID_PATTERN
from mercurio.node import Node
from mercurio.protocol import CONNECTION
from mercurio.stream import StreamRequest, serve

STREAM_PATH = re.compile(r"/api/clients/([^/]+)/notifications/stream/?")
TOKEN_PARAMS = ("token", "access_token", "jwt", "authorization")
COOKIE_NAME = "mercurio_token"


class StreamRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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
    topics = await _topics(node, client_id)
    cap = node.settings.max_streams_per_client
    if node.hub.streams_of(client_id) >= cap:
        # The newcomer is refused rather than the oldest closed: a closed EventSource
        # reconnects by itself, so with one tab too many, "close the oldest" would have the
        # tabs evict each other forever. Checked with no await before register(): no race.
        wait = retry_after(node.settings.sse_heartbeat)
        message = f"too many open streams: at most {cap} per client"
        await send_error(send, 429, message, [(b"retry-after", wait.encode())])
        return
    _forget_request(scope)
    connection = scope.get(CONNECTION)
    # serve() registers before its first await: the count just checked still holds.
    await serve(
        node.hub,
        node.store,
        node.settings,
        request,
        receive,
        send,
        muted=muted,
        topics=topics,
        connection=connection,
    )


async def _topics(node: Node, client_id: str) -> dict[str, int]:
    """The client's topics: the hub's when it has a stream here, else the store's.

    A subscribe stored while the store is read reaches the hub before this stream registers,
    and the hub tracks only registered clients: read again when one came in meanwhile.
    """
    for _ in range(3):
        known = node.hub.topics_of(client_id)
        if known is not None:
            return known
        seen = node.hub.topic_changes
        stored = await node.store.topics_of(client_id)
        if node.hub.topic_changes == seen:
            break
    return stored


SCOPE_DROPPED_FOR_A_STREAM = ("raw_path", "query_string", "state")
"""What of the scope no layer reads once a stream is accepted: the raw path, the query string
(a ticket), and the copy of the lifespan state, each a per-stream object for hours."""


def _forget_request(scope: Scope) -> None:
    """Keep of the request only what a layer may still read: of its headers the Origin (CORS),
    and the scope's method, path and route (uvicorn, the request log); the connection's
    parser goes too.

    The rest (the token above all, ~0.5 KiB) would otherwise live as long as the stream. The
    headers in place: the list may be one a layer outside kept (CORSMiddleware's copy).
    """
    headers = scope["headers"]
    headers[:] = [(name, value) for name, value in headers if name == b"origin"]
    for key in SCOPE_DROPPED_FOR_A_STREAM:
        scope.pop(key, None)
    connection = scope.get(CONNECTION)
    if connection is not None:
        connection.outlive_request()


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
    await node.first_seen.note(client_id)
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
