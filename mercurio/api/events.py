"""Publishing: unicast, broadcast, announcements and topics."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Self

import orjson
import structlog
from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator
from starlette.types import Send

from mercurio.api.deps import NodeDep, Publisher
from mercurio.api.errors import STORE_UNAVAILABLE, ApiError, ErrorBody
from mercurio.errors import EventConflict, StoreUnavailable
from mercurio.limits import PublishBudget, retry_after
from mercurio.model import (
    ANNOUNCEMENT,
    CATEGORY_PATTERN,
    CLIENT_ID_PATTERN,
    COLLAPSE_KEY_PATTERN,
    DEFAULT_CATEGORY,
    EVENT_ID_PATTERN,
    TOPIC_PATTERN,
    NewNotification,
    Notification,
    rfc3339,
    topic_key,
)
from mercurio.node import Node
from mercurio.store import Pending

router = APIRouter(prefix="/api/events", tags=["publish"])

SourceID = Annotated[str, Field(min_length=1, max_length=200)]
NUL = "\x00"
MAX_TTL = 10 * 366 * 24 * 3600  # ten years: past that, retention purges it anyway


def check_json(value: JsonValue) -> None:
    """Refuse what JSON allows but the store cannot keep: NUL in text, non-finite numbers.

    PostgreSQL text and jsonb refuse U+0000, and NaN, Infinity or 1e400 would be stored as
    null: both must be a 422, not a 503 or silently different data.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError("numbers must be finite (no NaN, Infinity or 1e400)")
        elif isinstance(item, dict):
            for key, inner in item.items():
                _check_text(key)
                stack.append(inner)
        elif isinstance(item, list):
            stack.extend(item)


def _check_text(value: str) -> str:
    if NUL in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    return value


class _PublishIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str | None = Field(default=None, description="Event id; the service makes a UUID if absent")
    sourceID: SourceID
    data: JsonValue
    category: str = DEFAULT_CATEGORY
    ttl: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TTL,
        description="Seconds until it expires, counted from its delivery",
    )
    expiresAt: str | None = Field(
        default=None, description="When it expires (RFC 3339 with an offset, in the future)"
    )
    delay: int | None = Field(
        default=None, ge=1, le=MAX_TTL, description="Seconds from now until it is delivered"
    )
    deliverAt: str | None = Field(
        default=None, description="When it is delivered (RFC 3339 with an offset, in the future)"
    )
    collapseKey: str | None = Field(
        default=None,
        description="A later notification to the same client with this key replaces this one",
    )

    @field_validator("expiresAt", "deliverAt")
    @classmethod
    def _moment(cls, value: str | None) -> str | None:
        if value is not None:
            expiry_moment(value)
        return value

    @field_validator("collapseKey")
    @classmethod
    def _collapse_key(cls, value: str | None) -> str | None:
        if value is not None and not COLLAPSE_KEY_PATTERN.fullmatch(value):
            raise ValueError("must be 1-64 of A-Z, a-z, 0-9, '_', '.', ':' or '-'")
        return value

    @model_validator(mode="after")
    def _one_expiry(self) -> Self:
        if self.ttl is not None and self.expiresAt is not None:
            raise ValueError("give ttl or expiresAt, not both")
        if self.delay is not None and self.deliverAt is not None:
            raise ValueError("give delay or deliverAt, not both")
        if self.expiresAt is not None and self.is_scheduled:
            # A ttl counts from delivery; a fixed expiry must fall after it, or the
            # notification would be delivered already expired and never seen.
            deliver = self.deliver_at(datetime.now(UTC))
            if deliver is not None and expiry_moment(self.expiresAt) <= deliver:
                raise ValueError("expiresAt must be after the delivery (delay or deliverAt)")
        return self

    @property
    def is_scheduled(self) -> bool:
        return self.delay is not None or self.deliverAt is not None

    def deliver_at(self, now: datetime) -> datetime | None:
        """When this publish is delivered (None: at once)."""
        if self.delay is not None:
            return now + timedelta(seconds=self.delay)
        if self.deliverAt is not None:
            return expiry_moment(self.deliverAt)
        return None

    def expires_at(self, now: datetime) -> datetime | None:
        """When what this publish stores expires, counted from now (None: never)."""
        if self.ttl is not None:
            return now + timedelta(seconds=self.ttl)
        if self.expiresAt is not None:
            return expiry_moment(self.expiresAt)
        return None

    @field_validator("sourceID")
    @classmethod
    def _source_id(cls, value: str) -> str:
        return _check_text(value)

    @field_validator("data")
    @classmethod
    def _data(cls, value: JsonValue) -> JsonValue:
        check_json(value)
        return value

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


def expiry_moment(text: str) -> datetime:
    """An RFC 3339 moment with its offset, between now and MAX_TTL from now, in UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("must be an RFC 3339 date-time, e.g. 2030-01-01T00:00:00Z") from None
    if moment.tzinfo is None:
        raise ValueError("must carry its offset (Z or +hh:mm)")
    now = datetime.now(UTC)
    if moment <= now:
        raise ValueError("is in the past: the notification would never be seen")
    if moment > now + timedelta(seconds=MAX_TTL):
        raise ValueError("is more than ten years away")
    return moment.astimezone(UTC)


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


TOPIC_RULE = "must be a slug: 1-64 of a-z, 0-9, '-' or '_', starting with a letter or digit"


class TopicIn(_PublishIn):
    topic: str

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        if not TOPIC_PATTERN.fullmatch(value):
            raise ValueError(TOPIC_RULE)
        return value


class Published(BaseModel):
    notificationID: int | None = Field(
        description="The notification's id; null while a scheduled one waits"
    )
    eventID: str
    deliverAt: str | None = Field(
        default=None, description="When a scheduled notification is delivered (202 only)"
    )


def _encode_data(data: JsonValue) -> str:
    try:
        return orjson.dumps(data).decode()
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise ApiError(422, f"data: cannot be stored ({exc})") from None


def new_event_id() -> str:
    """A random (version 4) UUID as text: str(uuid.uuid4()) at a third of its CPU."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # the RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def items_for(body: _PublishIn, destinations: list[str], publisher: str) -> list[NewNotification]:
    event_id = body.id or new_event_id()
    data_json = _encode_data(body.data)
    # A scheduled publish's ttl counts from its delivery: the scheduler sets that expiry.
    expires_at = None if body.is_scheduled and body.ttl else body.expires_at(datetime.now(UTC))
    return [
        NewNotification(
            event_id,
            body.sourceID,
            destination,
            body.category,
            data_json,
            check_duplicate=body.id is not None,
            publisher_id=publisher,
            expires_at=expires_at,
            collapse_key=body.collapseKey,
        )
        for destination in destinations
    ]


def admit(
    budget: PublishBudget, max_bytes: int, publisher: str, items: list[NewNotification]
) -> None:
    """Charge the publisher for the rows and bytes a publish stores (413 or 429 when over)."""
    # The items of one publish share their data: its size times the rows is what is stored.
    stored = len(items[0].data_json.encode()) * len(items) if items else 0
    if stored > max_bytes:
        raise ApiError(
            413, f"this publish would store {stored} bytes of data, more than {max_bytes}"
        )
    wait = budget.take(publisher, len(items), stored)
    if wait > 0:
        raise ApiError(429, "publish rate limit exceeded", {"Retry-After": retry_after(wait)})


def conflict(exc: EventConflict) -> ApiError:
    """The 409 for an event id this publisher already used for other content."""
    return ApiError(
        409,
        f"event id {exc.event_id!r} was already published with different content; "
        "use a new id for a new notification",
    )


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole HTTP answer, sent the same by the raw fast path and by the framework route."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    @classmethod
    def json(cls, status: int, value: object, extra: dict[str, str] | None = None) -> Answer:
        body = orjson.dumps(value)
        headers = [(b"content-type", b"application/json")]
        headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
        headers.append((b"content-length", str(len(body)).encode()))
        return cls(status, headers, body)

    def response(self) -> Response:
        """The answer for a FastAPI route to return."""
        answer = Response(self.body, status_code=self.status)
        answer.raw_headers = list(self.headers)
        return answer

    async def send(self, send: Send) -> None:
        """The answer on a raw ASGI connection."""
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


@dataclass(frozen=True, slots=True)
class _Publishing:
    node: Node
    publisher: str


async def _publishing(node: NodeDep, principal: Publisher) -> _Publishing:
    """What a publish route needs: the node and the publisher."""
    return _Publishing(node, principal.user_id)


Publishing = Annotated[_Publishing, Depends(_publishing)]


def _bind_publish_ids(publisher: str, stored: list[Notification] | None = None) -> None:
    """Put the publisher (and the stored ids) on this request's http.request log line.

    Bound in structlog's context rather than logged on a line of their own: a publish stays
    one log line. uvicorn runs each request in a task of its own, whose copy of the context
    (and so these fields) ends with the request.
    """
    if not stored:
        structlog.contextvars.bind_contextvars(publisher_id=publisher)
        return
    fields: dict[str, object] = {"notification_id": stored[0].id, "event_id": stored[0].event_id}
    if len(stored) > 1:  # a broadcast: its first and last ids, not up to 10,000 of them
        fields.update(notifications=len(stored), last_notification_id=stored[-1].id)
    structlog.contextvars.bind_contextvars(publisher_id=publisher, **fields)


async def _publish(
    node: Node, publisher: str, kind: str, body: _PublishIn, destinations: list[str]
) -> list[Notification]:
    _bind_publish_ids(publisher)
    items = items_for(body, destinations, publisher)
    admit(node.publish_budget, node.settings.publish_max_bytes_per_request, publisher, items)
    started = time.perf_counter()
    try:
        stored = await node.publish(items)
    except EventConflict as exc:
        raise conflict(exc) from None
    node.publish_stats.record(kind, len(stored), time.perf_counter() - started)
    _bind_publish_ids(publisher, stored)
    return stored


async def _schedule(
    node: Node, publisher: str, body: _PublishIn, destinations: list[str]
) -> tuple[int, list[dict[str, object]]]:
    """A publish with delay or deliverAt: stored apart, answered 202 (200 if all delivered)."""
    _bind_publish_ids(publisher)
    items = items_for(body, destinations, publisher)
    admit(node.publish_budget, node.settings.publish_max_bytes_per_request, publisher, items)
    deliver = body.deliver_at(datetime.now(UTC))
    assert deliver is not None
    try:
        pending = await node.schedule(items, deliver.timestamp(), body.ttl)
    except EventConflict as exc:
        raise conflict(exc) from None
    structlog.contextvars.bind_contextvars(event_id=items[0].event_id, scheduled=len(pending))
    answers = [_pending_json(one) for one in pending]
    waiting = any(one.notification_id is None for one in pending)
    return (202 if waiting else 200), answers


def _pending_json(one: Pending) -> dict[str, object]:
    if one.deliver_at is None:
        return {"notificationID": one.notification_id, "eventID": one.event_id}
    moment = datetime.fromtimestamp(one.deliver_at, UTC)
    return {"notificationID": None, "eventID": one.event_id, "deliverAt": rfc3339(moment)}


async def publish_unicast(node: Node, publisher: str, request: UnicastIn) -> Answer:
    """The one unicast, its refusals included, for the fast path and the framework route."""
    try:
        if request.is_scheduled:
            status, answers = await _schedule(node, publisher, request, [request.destinationID])
            return Answer.json(status, answers[0])
        stored = await _publish(node, publisher, "unicast", request, [request.destinationID])
    except StoreUnavailable:
        return Answer.json(503, {"error": STORE_UNAVAILABLE}, {"Retry-After": "1"})
    except ApiError as exc:
        return Answer.json(exc.status, {"error": exc.message}, exc.headers)
    return Answer.json(200, {"notificationID": stored[0].id, "eventID": stored[0].event_id})


_WAITS = "Scheduled: delivered at deliverAt (notificationID is null until then)"
SCHEDULED: dict[int | str, dict[str, Any]] = {202: {"model": Published, "description": _WAITS}}
SCHEDULED_MANY: dict[int | str, dict[str, Any]] = {
    202: {"model": list[Published], "description": _WAITS}
}


@router.post("/unicast", response_model=Published, responses=SCHEDULED)
async def unicast(body: UnicastIn, ctx: Publishing) -> Response:
    """Notify one client."""
    answer = await publish_unicast(ctx.node, ctx.publisher, body)
    return answer.response()


@router.post("/broadcast", response_model=list[Published], responses=SCHEDULED_MANY)
async def broadcast(body: BroadcastIn, ctx: Publishing) -> Response:
    """Notify many clients (one notification each, one transaction); ["*"] is everyone."""
    limit = ctx.node.settings.max_destinations
    if len(body.destinations) > limit:
        raise ApiError(422, f"destinations: at most {limit} per broadcast")
    if body.is_scheduled:
        status, scheduled = await _schedule(ctx.node, ctx.publisher, body, body.destinations)
        return Response(orjson.dumps(scheduled), status, media_type="application/json")
    stored = await _publish(ctx.node, ctx.publisher, "broadcast", body, body.destinations)
    # Up to 10,000 answers: encoded straight to JSON, not validated as models one by one.
    answer = [{"notificationID": note.id, "eventID": note.event_id} for note in stored]
    return Response(orjson.dumps(answer), media_type="application/json")


@router.post("/announce", response_model=Published, responses=SCHEDULED)
async def announce(body: AnnounceIn, ctx: Publishing) -> Response:
    """Notify every user, present and future, with one stored notification."""
    if body.is_scheduled:
        status, scheduled = await _schedule(ctx.node, ctx.publisher, body, [ANNOUNCEMENT])
        return Response(orjson.dumps(scheduled[0]), status, media_type="application/json")
    stored = await _publish(ctx.node, ctx.publisher, "announce", body, [ANNOUNCEMENT])
    answer = {"notificationID": stored[0].id, "eventID": stored[0].event_id}
    return Response(orjson.dumps(answer), media_type="application/json")


@router.post("/topic", response_model=Published, responses=SCHEDULED)
async def topic(body: TopicIn, ctx: Publishing) -> Response:
    """Notify the topic's subscribers of this moment with one stored notification."""
    key = topic_key(body.topic)
    if body.is_scheduled:
        status, scheduled = await _schedule(ctx.node, ctx.publisher, body, [key])
        return Response(orjson.dumps(scheduled[0]), status, media_type="application/json")
    stored = await _publish(ctx.node, ctx.publisher, "topic", body, [key])
    answer = {"notificationID": stored[0].id, "eventID": stored[0].event_id}
    return Response(orjson.dumps(answer), media_type="application/json")


PUBLISH_ROUTES = frozenset({"unicast", "broadcast", "announce", "topic"})
"""Paths under /api/events that are routes: DELETE on them is 405, never a retraction."""


class Retracted(BaseModel):
    status: str = Field(description="cancelled (nothing was delivered yet) or retracted")
    eventID: str
    cancelled: int = Field(description="Scheduled notifications cancelled")
    retracted: int = Field(description="Delivered notifications removed from inboxes now")


@router.delete(
    "/{eventID}",
    response_model=Retracted,
    responses={405: {"model": ErrorBody, "description": "A publish route's path, not an event"}},
)
async def retract(eventID: str, ctx: Publishing) -> Retracted:
    """Cancel a scheduled notification, or retract a delivered one from every inbox."""
    if eventID in PUBLISH_ROUTES:
        # DELETE /api/events/unicast is a wrong method on a publish route, not an event.
        raise ApiError(405, "method not allowed", {"Allow": "POST"})
    if not EVENT_ID_PATTERN.fullmatch(eventID):
        raise ApiError(422, "eventID: must be 1-200 printable ASCII characters without spaces")
    _bind_publish_ids(ctx.publisher)
    structlog.contextvars.bind_contextvars(event_id=eventID)
    done = await ctx.node.retract(ctx.publisher, eventID)
    if not done.found:
        raise ApiError(404, f"no event {eventID!r} of this publisher")
    status = "cancelled" if done.cancelled and not done.retracted else "retracted"
    return Retracted(
        status=status, eventID=eventID, cancelled=done.cancelled, retracted=len(done.retracted)
    )
