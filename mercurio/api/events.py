"""Publishing: unicast, broadcast and announcements."""

from __future__ import annotations

import time
import uuid
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from mercurio.api.deps import NodeDep, Publisher
from mercurio.api.errors import ApiError
from mercurio.limits import retry_after
from mercurio.metrics import PublishStats
from mercurio.model import (
    ANNOUNCEMENT,
    CATEGORY_PATTERN,
    CLIENT_ID_PATTERN,
    DEFAULT_CATEGORY,
    EVENT_ID_PATTERN,
    NewNotification,
    Notification,
)
from mercurio.node import Node

router = APIRouter(prefix="/api/events", tags=["publish"])

SourceID = Annotated[str, Field(min_length=1, max_length=200)]


class _PublishIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str | None = Field(default=None, description="Event id; the service makes a UUID if absent")
    sourceID: SourceID
    data: JsonValue
    category: str = DEFAULT_CATEGORY

    @field_validator("id")
    @classmethod
    def _event_id(cls, value: str | None) -> str | None:
        if value is not None and not EVENT_ID_PATTERN.fullmatch(value):
            raise ValueError("must be 1-200 printable ASCII characters without spaces")
        return value

    @field_validator("category")
    @classmethod
    def _category(cls, value: str) -> str:
        if not CATEGORY_PATTERN.fullmatch(value):
            raise ValueError("must be a slug: 1-32 of a-z, 0-9, '-' or '_'")
        return value


def _client(value: str) -> str:
    if value == ANNOUNCEMENT:
        return value
    if not CLIENT_ID_PATTERN.fullmatch(value):
        raise ValueError(f"{value[:40]!r} is not a valid client id")
    return value


class UnicastIn(_PublishIn):
    destinationID: str

    @field_validator("destinationID")
    @classmethod
    def _destination(cls, value: str) -> str:
        if value == ANNOUNCEMENT:
            raise ValueError("use /api/events/announce to reach everyone")
        return _client(value)


class BroadcastIn(_PublishIn):
    destinations: list[str]

    @field_validator("destinations")
    @classmethod
    def _destinations(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must name at least one destination")
        for item in value:
            _client(item)
        if ANNOUNCEMENT in value and len(value) > 1:
            raise ValueError("'*' (everyone) cannot be mixed with other destinations")
        return value


class AnnounceIn(_PublishIn):
    pass


class Published(BaseModel):
    notificationID: int
    eventID: str


def _encode_data(data: JsonValue) -> str:
    try:
        return orjson.dumps(data).decode()
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise ApiError(422, f"data: cannot be stored ({exc})") from None


def items_for(body: _PublishIn, destinations: list[str]) -> list[NewNotification]:
    event_id = body.id or str(uuid.uuid4())
    data_json = _encode_data(body.data)
    return [
        NewNotification(
            event_id,
            body.sourceID,
            destination,
            body.category,
            data_json,
            check_duplicate=body.id is not None,
        )
        for destination in destinations
    ]


def _answer(note: Notification) -> Published:
    return Published(notificationID=note.id, eventID=note.event_id)


async def _rate_limited(request: Request, principal: Publisher) -> PublishStats:
    """The publisher's metrics, once it is within its rate limit (429 with Retry-After)."""
    # A publish request costs one token whatever its size: a broadcast's size is bounded by
    # MERCURIO_MAX_DESTINATIONS, and it is one transaction however many rows it writes.
    wait = request.app.state.publish_limiter.take(principal.user_id)
    if wait > 0:
        raise ApiError(429, "publish rate limit exceeded", {"Retry-After": retry_after(wait)})
    stats: PublishStats = request.app.state.metrics.publishes
    return stats


Counted = Annotated[PublishStats, Depends(_rate_limited)]


async def _publish(
    node: Node, stats: PublishStats, kind: str, items: list[NewNotification]
) -> list[Notification]:
    started = time.perf_counter()
    stored = await node.publish(items)
    stats.record(kind, len(stored), time.perf_counter() - started)
    return stored


@router.post("/unicast", response_model=Published)
async def unicast(body: UnicastIn, node: NodeDep, stats: Counted) -> Published:
    """Notify one client."""
    stored = await _publish(node, stats, "unicast", items_for(body, [body.destinationID]))
    return _answer(stored[0])


@router.post("/broadcast", response_model=list[Published])
async def broadcast(body: BroadcastIn, node: NodeDep, stats: Counted) -> Response:
    """Notify many clients (one notification each, one transaction); ["*"] is everyone."""
    limit = node.settings.max_destinations
    if len(body.destinations) > limit:
        raise ApiError(422, f"destinations: at most {limit} per broadcast")
    stored = await _publish(node, stats, "broadcast", items_for(body, body.destinations))
    # Up to 10,000 answers: encoded straight to JSON, not validated as models one by one.
    answer = [{"notificationID": note.id, "eventID": note.event_id} for note in stored]
    return Response(orjson.dumps(answer), media_type="application/json")


@router.post("/announce", response_model=Published)
async def announce(body: AnnounceIn, node: NodeDep, stats: Counted) -> Published:
    """Notify every user, present and future, with one stored notification."""
    stored = await _publish(node, stats, "announce", items_for(body, [ANNOUNCEMENT]))
    return _answer(stored[0])
