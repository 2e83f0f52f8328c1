"""Python clients for Mercurio: publish (async and sync) and subscribe (async) over httpx.

Publish with a publisher's token; with a user's token, read and change that user's inbox
(list, get, read, unread, mark all read, delete, unread count, preferences).
`calls` describes every API call once (sans-IO), `transport` runs them over httpx.Client or
httpx.AsyncClient, `stream` reads a client's SSE stream, `model` holds what they return.
"""

from mercurio.client.model import (
    Event,
    InboxNotification,
    JSONValue,
    MercurioError,
    MercurioUnavailable,
    NotificationPage,
    PublishReceipt,
    ReadState,
    ReceivedNotification,
    Reset,
    Retraction,
    RetryPolicy,
    TokenExpired,
    TokenProvider,
)
from mercurio.client.stream import NotificationStream
from mercurio.client.transport import AsyncMercurio, Mercurio, trusting

__all__ = [
    "AsyncMercurio",
    "Event",
    "InboxNotification",
    "JSONValue",
    "Mercurio",
    "MercurioError",
    "MercurioUnavailable",
    "NotificationPage",
    "NotificationStream",
    "PublishReceipt",
    "ReadState",
    "ReceivedNotification",
    "Reset",
    "Retraction",
    "RetryPolicy",
    "TokenExpired",
    "TokenProvider",
    "trusting",
]
