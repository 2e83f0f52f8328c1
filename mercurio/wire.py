"""What nodes say to each other over the broker: compact orjson, one message per body.

{"n": node id, "k": kind, ...} with kind
  "n" notifications: "b": [[id, event id, source id, client id, category, data json,
                             created at in µs since the epoch], …] in id order
  "h" head: "i": the highest id the sender committed (sent after it reconnects)
  "r" read state: "c": client id, "f": the SSE frame to push to that client's streams
  "m" muted categories: "c": client id, "m": [categories]
  "t" topic subscription: "c": client id, "t": topic, "s": the id it starts after, or null
      when the client unsubscribed, then "u": the last id that is still the client's
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from mercurio.model import Notification

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(moment: datetime) -> int:
    delta = moment - EPOCH if moment.tzinfo else moment.replace(tzinfo=UTC) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def encode_notes(node_id: str, notes: Sequence[Notification]) -> bytes:
    """A doorbell carrying whole notifications, so receivers need not read the store."""
    rows = [
        (
            note.id,
            note.event_id,
            note.source_id,
            note.client_id,
            note.category,
            note.data_json,
            _micros(note.created_at),
        )
        for note in notes
    ]
    return orjson.dumps({"n": node_id, "k": "n", "b": rows})


def doorbells(node_id: str, notes: Sequence[Notification], limit: int | None) -> Iterator[bytes]:
    """notes (in id order) as doorbells of at most `limit` bytes each, None meaning any size.

    A notification too big for a doorbell of its own goes as a head naming its id instead:
    receivers read it from the store (the sequencer observes the head, then fetches).
    """
    if limit is None:
        yield encode_notes(node_id, notes)
        return
    start, count = 0, len(notes)
    while start < len(notes):
        count = min(count, len(notes) - start)
        body = encode_notes(node_id, notes[start : start + count])
        while len(body) > limit and count > 1:
            # Shrink in proportion to the excess (rows of one burst tend to be alike in size);
            # count only ever drops here, since limit < len(body).
            count = max(1, count * limit // len(body))
            body = encode_notes(node_id, notes[start : start + count])
        yield body if len(body) <= limit else encode_head(node_id, notes[start].id)
        start += count
        count *= 2  # the next rows may be smaller: try more of them before shrinking again


def decode_notes(rows: list[list[Any]]) -> list[Notification]:
    """The notifications of a doorbell's "b" rows."""
    return [
        Notification(
            int(row[0]),
            str(row[1]),
            str(row[2]),
            str(row[3]),
            str(row[4]),
            str(row[5]),
            EPOCH + timedelta(microseconds=int(row[6])),
        )
        for row in rows
    ]


def encode_head(node_id: str, last_id: int) -> bytes:
    """How far the sender committed; receivers read what they lack from the store."""
    return orjson.dumps({"n": node_id, "k": "h", "i": last_id})


def encode_read_state(node_id: str, client_id: str, frame: bytes) -> bytes:
    """A read-state SSE frame for the client's streams on every node."""
    return orjson.dumps({"n": node_id, "k": "r", "c": client_id, "f": frame.decode()})


def encode_topic(
    node_id: str, client_id: str, topic: str, since: int | None, until: int | None = None
) -> bytes:
    """A client's subscribe (since: where it starts) or unsubscribe (since None, until: where
    it ended), for every node."""
    message = {"n": node_id, "k": "t", "c": client_id, "t": topic, "s": since, "u": until}
    return orjson.dumps(message)


def encode_muted(node_id: str, client_id: str, muted: frozenset[str]) -> bytes:
    """The client's muted categories, for its streams on every node."""
    return orjson.dumps({"n": node_id, "k": "m", "c": client_id, "m": sorted(muted)})
