"""Python clients for Mercurio: publish (async and sync) and subscribe (async) over httpx.

`calls` describes every API call once (sans-IO), `transport` runs them over httpx.Client or
httpx.AsyncClient, `stream` reads a client's SSE stream, `model` holds what they return.
"""

from mercurio.client.model import (
    Event,
    JSONValue,
    MercurioError,
    MercurioUnavailable,
    PublishReceipt,
    ReadState,
    ReceivedNotification,
    Reset,
    RetryPolicy,
    TokenExpired,
    TokenProvider,
)
from mercurio.client.stream import NotificationStream
from mercurio.client.transport import AsyncMercurio, Mercurio

__all__ = [
    "AsyncMercurio",
    "Event",
    "JSONValue",
    "Mercurio",
    "MercurioError",
    "MercurioUnavailable",
    "NotificationStream",
    "PublishReceipt",
    "ReadState",
    "ReceivedNotification",
    "Reset",
    "RetryPolicy",
    "TokenExpired",
    "TokenProvider",
]
