"""Publishing: unicast, broadcast and announcements."""

from __future__ import annotations

import uuid
from typing import Annotated

import orjson
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from mercurio.api.deps import NodeDep, Publisher, check_category
from mercurio.api.errors import ApiError
from mercurio.model import (
    ANNOUNCEMENT,
    CLIENT_ID_PATTERN,
    DEFAULT_CATEGORY,
    EVENT_ID_PATTERN,
    NewNotification,
    Notification,
)

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
        check_category(value)
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


def _items(body: _PublishIn, destinations: list[str]) -> list[NewNotification]:
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


@router.post("/unicast", response_model=Published)
async def unicast(body: UnicastIn, node: NodeDep, _: Publisher) -> Published:
    """Notify one client."""
    stored = await node.publish(_items(body, [body.destinationID]))
    return _answer(stored[0])


@router.post("/broadcast", response_model=list[Published])
async def broadcast(body: BroadcastIn, node: NodeDep, _: Publisher) -> list[Published]:
    """Notify many clients (one notification each, one transaction); ["*"] is everyone."""
    limit = node.settings.max_destinations
    if len(body.destinations) > limit:
        raise ApiError(422, f"destinations: at most {limit} per broadcast")
    stored = await node.publish(_items(body, body.destinations))
    return [_answer(note) for note in stored]


@router.post("/announce", response_model=Published)
async def announce(body: AnnounceIn, node: NodeDep, _: Publisher) -> Published:
    """Notify every user, present and future, with one stored notification."""
    stored = await node.publish(_items(body, [ANNOUNCEMENT]))
    return _answer(stored[0])
