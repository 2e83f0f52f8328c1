"""SSE frames as bytes, built once per notification and shared by every stream that gets it."""

from __future__ import annotations

import random
from typing import Any

import orjson

from mercurio.model import Notification, rfc3339

CONNECTED = b": connected\n\n"
HEARTBEAT = b": heartbeat\n\n"


def retry(milliseconds: int) -> bytes:
    """The reconnection-delay hint."""
    return b"retry: %d\n\n" % milliseconds


def jittered_retry(base_ms: int) -> bytes:
    """The reconnection-delay hint for one stream: a random delay from base to twice base.

    A deploy drops every stream at once; with one delay for all, every client would come back
    in the same instant and replay its backlog at once (a reconnect storm).
    """
    return retry(random.randint(base_ms, 2 * base_ms))


def named(event: str, payload: Any) -> bytes:
    """A named event (read-state, reset, token-expired): `onmessage` does not fire for it."""
    return b"event: %s\ndata: %s\n\n" % (event.encode(), orjson.dumps(payload))


class NotificationFrame:
    """The frame of one notification, split around the client id.

    An announcement goes to every user with the same bytes but for the `clientID` field, so the
    JSON is encoded once and each stream gets `head + client + tail`: a concatenation, not an
    encoding.
    """

    __slots__ = ("category", "head", "id", "tail")

    def __init__(self, note: Notification) -> None:
        self.id = note.id
        self.category = note.category
        marker = "\x00client\x00"
        head, _, tail = _json(note, marker).partition(orjson.dumps(marker))
        self.head = b"id: %d\ndata: %s" % (note.id, head)
        self.tail = tail + b"\n\n"

    def for_client(self, client_id: str) -> bytes:
        """The bytes for one receiving client."""
        return self.head + orjson.dumps(client_id) + self.tail


def notification(note: Notification, client_id: str) -> bytes:
    """The frame of a notification for one client: one encoding, no split (a unicast, or one
    row of a broadcast, goes to one client only)."""
    return b"id: %d\ndata: %s\n\n" % (note.id, _json(note, client_id))


def _json(note: Notification, client_id: str) -> bytes:
    fields = {
        "notificationID": note.id,
        "eventID": note.event_id,
        "sourceID": note.source_id,
        "clientID": client_id,
        "data": orjson.Fragment(note.data_json),
        "category": note.category,
        "createdAt": rfc3339(note.created_at),
    }
    if note.expires_at is not None:
        fields["expiresAt"] = rfc3339(note.expires_at)
    topic = note.topic
    if topic is not None:
        fields["topic"] = topic
    return orjson.dumps(fields)
