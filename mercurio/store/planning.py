"""What a batch of publishes inserts: idempotency per publisher, conflicts, answers.

Pure functions shared by both dialects' publishing transactions (sqlite_writes.py,
postgres_writes.py); the group-commit writer (writer.py) calls them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from mercurio.errors import EventConflict
from mercurio.model import NewNotification, Notification

IN_CHUNK = 500
"""Client ids per `IN (…)` look-up."""

Key = tuple[str, str, str]
"""(client, publisher, event id): a publish is idempotent per publisher."""

Written = tuple[dict[Key, Notification], list[Notification], list[tuple[str, int]]]
"""A publishing transaction's result: the stored rows the batch repeats, the rows it inserted
(in planned order), and the (client, id) of older rows their collapse keys replaced."""

Planner = Callable[[dict[Key, Notification]], list[NewNotification]]
"""Given the stored rows a batch repeats, the rows still to insert (called in the transaction)."""


def key_of(item: NewNotification) -> Key:
    return (item.client_id, item.publisher_id, item.event_id)


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def by_event(items: Iterable[NewNotification]) -> dict[tuple[str, str], set[str]]:
    """The clients of each (event id, publisher): one look-up per event, not per row."""
    grouped: dict[tuple[str, str], set[str]] = {}
    for item in items:
        grouped.setdefault((item.event_id, item.publisher_id), set()).add(item.client_id)
    return grouped


def plan(
    requests: list[list[NewNotification]], known: dict[Key, Notification]
) -> tuple[dict[Key, NewNotification], dict[int, EventConflict]]:
    """The rows to insert, and the requests (by index) that reuse an event id for new content.

    A conflicting request inserts nothing, and the others do not see its rows.
    """
    pending: dict[Key, NewNotification] = {}
    conflicts: dict[int, EventConflict] = {}
    for index, items in enumerate(requests):
        mine: dict[Key, NewNotification] = {}
        for item in items:
            key = key_of(item)
            if not _agrees(item, known.get(key) or pending.get(key) or mine.get(key)):
                conflicts[index] = EventConflict(item.event_id)
                break
            if key not in known:
                mine.setdefault(key, item)
        else:
            for key, item in mine.items():
                pending.setdefault(key, item)
    return pending, conflicts


def _agrees(item: NewNotification, earlier: Notification | NewNotification | None) -> bool:
    if earlier is None:
        return True
    return item.same_content(earlier.source_id, earlier.category, earlier.data_json)
