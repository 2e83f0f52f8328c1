"""What nodes say to each other over the broker: compact orjson, one message per body.

{"n": node id, "k": kind, ...} with kind
  "n" notifications: "b": [[id, event id, source id, client id, category, data json,
                             created at in µs since the epoch], …] in id order
  "h" head: "i": the highest id the sender committed (sent after it reconnects)
  "r" read state: "c": client id, "f": the SSE frame to push to that client's streams
  "m" muted categories: "c": client id, "m": [categories]
"""

from __future__ import annotations

from collections.abc import Sequence
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


def encode_muted(node_id: str, client_id: str, muted: frozenset[str]) -> bytes:
    """The client's muted categories, for its streams on every node."""
    return orjson.dumps({"n": node_id, "k": "m", "c": client_id, "m": sorted(muted)})
